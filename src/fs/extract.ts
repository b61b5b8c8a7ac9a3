import { type FileHandle, link, mkdir, open, stat, symlink } from 'node:fs/promises';
import { resolve } from 'node:path';
import { CairnError } from '../errors.js';
import { HardlinkTracker } from '../files/browse.js';
import {
  applyFileMetadata,
  applyPathMetadata,
  createFlags,
  creationMode,
  defaultMetadataOptions,
  type MetadataOptions,
  makeNode,
  mkdirNoFollow,
  replacing,
} from '../files/metadata.js';
import {
  childPath,
  PathSelector,
  relativeText,
  rootPath,
  type SelectOptions,
} from '../files/paths.js';
import type { RestoreEvent, RestoreSummary } from '../files/restorer.js';
import type { TreeEntry } from '../files/tree.js';
import { Semaphore } from '../util/semaphore.js';
import { treeEntry } from './entry.js';
import type { Filesystem, WalkEntry } from './filesystem.js';
import { readContent } from './source.js';

export interface ExtractOptions extends SelectOptions {
  /** Read every extracted file back and compare it with the image. */
  verify?: boolean;
  metadata?: MetadataOptions;
  /** Stops the walk; the summary reports what was done. */
  signal?: AbortSignal;
}

interface Dir {
  path: Buffer;
  dest: Buffer;
  entry?: TreeEntry;
  depth: number;
  parent?: Dir;
  /** Everything below is extracted (an include matched here or above). */
  included: boolean;
  /** Resolves to whether the directory exists; made when first needed. */
  made?: Promise<boolean>;
  setgid: boolean;
}

/**
 * Entries restored at once: most of a small file's time is waiting on the filesystem
 * (open, write, chown, chmod, utimes), so 16 at a time hide that latency (as file restore).
 */
const CONCURRENCY = 16;

/**
 * Extracts the files inside an image (`restore --files`) into `target`: directories,
 * files (sparse where the filesystem has holes), symlinks, hard links, FIFOs and device
 * nodes, with mode, times and (when root) owner, selected by include/exclude patterns over
 * their paths in the image. Like a file restore, it yields progress and per-entry errors,
 * goes on after them, never follows what is in the way, and returns a summary.
 */
export async function* extractFiles(
  files: Filesystem,
  target: string,
  opts: ExtractOptions = {},
): AsyncGenerator<RestoreEvent, RestoreSummary> {
  const x = new Extractor(resolve(target), opts);
  await mkdir(x.target, { recursive: true });
  const top: Dir = {
    path: rootPath(),
    dest: Buffer.from(x.target),
    depth: 0,
    included: !opts.include?.length,
    made: Promise.resolve(true),
    setgid: ((await stat(x.target)).mode & 0o2000) !== 0,
  };
  x.dirs.set(key(top.path), top);
  const walk = files.walk('/', {
    onError: (p, err) => x.fail(p, err),
    descend: (p) => x.dirs.has(key(p)),
  });
  try {
    for await (const e of walk) {
      if (opts.signal?.aborted) break;
      await x.entry(e);
      yield* x.drain();
      yield x.progress();
    }
  } finally {
    // Also when the walk fails: no file is left being written behind the caller's back.
    await Promise.all(x.running);
  }
  await x.finish();
  yield* x.drain();
  return x.summary();
}

class Extractor {
  readonly dirs = new Map<string, Dir>();
  private readonly created: Dir[] = [];
  private readonly selector: PathSelector;
  private readonly filtered: boolean;
  private readonly meta: MetadataOptions;
  private readonly hardlinks = new HardlinkTracker();
  /** Later names of hard-linked files, linked once everything else is restored. */
  private readonly links: { path: Buffer; dest: Buffer; original: Buffer; size: number }[] = [];
  private readonly slots = new Semaphore(CONCURRENCY);
  readonly running = new Set<Promise<unknown>>();
  private readonly events: RestoreEvent[] = [];
  private readonly counts = { files: 0, dirs: 0, bytes: 0, verified: 0, errors: 0 };
  private readonly started = Date.now();

  constructor(
    readonly target: string,
    private readonly opts: ExtractOptions,
  ) {
    this.selector = new PathSelector(opts);
    this.filtered = Boolean(opts.include?.length || opts.exclude?.length);
    this.meta = opts.metadata ?? defaultMetadataOptions();
  }

  async entry(e: WalkEntry): Promise<void> {
    const { parent, name } = split(e.path);
    const dir = this.dirs.get(key(parent));
    if (!dir) return;
    const isDir = e.stat.type === 'dir';
    const rel = this.filtered ? relativeText(e.path) : '';
    if (this.filtered && this.selector.excluded(rel, isDir)) return;
    const included = dir.included || this.selector.included(rel, isDir);
    const entry = treeEntry(name, e.stat, e.target);
    const dest = childPath(dir.dest, name);
    if (isDir) {
      if (!included && !this.selector.mayContainIncluded(rel)) return;
      const child: Dir = {
        path: e.path,
        dest,
        entry,
        depth: dir.depth + 1,
        parent: dir,
        included,
        setgid: false,
      };
      this.dirs.set(key(e.path), child);
      if (included) await this.makeDir(child);
      return;
    }
    if (!included || !(await this.makeDir(dir))) return;
    if (entry.type === 'file' && e.stat.unreadable) {
      this.fail(e.path, new CairnError(`cannot be read: it is ${e.stat.unreadable}`));
      return;
    }
    const original = this.hardlinks.linkTarget(entry, dest);
    if (original) {
      this.links.push({ path: e.path, dest, original, size: entry.size });
      return;
    }
    await this.slots.acquire();
    const task = this.guard(e.path, () => this.restore(e, entry, dest, dir)).then((ok) => {
      if (ok) this.counts.files++;
      this.slots.release();
      this.running.delete(task);
    });
    this.running.add(task);
  }

  private async restore(e: WalkEntry, entry: TreeEntry, dest: Buffer, dir: Dir): Promise<void> {
    if (entry.type === 'file') {
      await this.restoreFile(e, entry, dest, dir);
      this.counts.bytes += entry.size;
      return;
    }
    if (entry.type === 'symlink') await replacing(dest, () => symlink(entry.target!, dest));
    else await makeNode(dest, entry, this.target);
    await applyPathMetadata(dest, entry, this.meta);
  }

  /** Waits for what is in flight, makes the hard links, then finishes the directories. */
  async finish(): Promise<void> {
    await Promise.all(this.running);
    for (const l of this.links) {
      if (await this.guard(l.path, () => replacing(l.dest, () => link(l.original, l.dest)))) {
        this.counts.files++;
        this.counts.bytes += l.size;
      }
    }
    await this.finishDirs();
  }

  private async restoreFile(e: WalkEntry, entry: TreeEntry, dest: Buffer, dir: Dir) {
    const flags = createFlags(this.opts.verify === true);
    const fh = await replacing(dest, () => open(dest, flags, creationMode(entry)));
    try {
      let end = 0;
      for await (const p of readContent(e.node.volume.source, e.node.extents(), true)) {
        await writeAll(fh, p.data, p.offset);
        end = p.offset + p.data.length;
      }
      // Holes were skipped: the size makes them (and a hole at the end) read as zeros.
      if (entry.size > end) await fh.truncate(entry.size);
      if (this.opts.verify) {
        await verify(fh, e);
        this.counts.verified++;
      }
      applyFileMetadata(fh.fd, entry, this.meta, dir.setgid);
    } finally {
      await fh.close();
    }
  }

  /** Creates a directory (and its parents) once; failures are reported once. */
  private makeDir(dir: Dir): Promise<boolean> {
    dir.made ??= (async () => {
      const parent = dir.parent!;
      if (!(await this.makeDir(parent))) return false;
      return this.guard(dir.path, async () => {
        dir.setgid = await mkdirNoFollow(dir.dest, parent.setgid);
        this.created.push(dir);
      });
    })();
    return dir.made;
  }

  /** Directory metadata last and deepest first, so filling them does not undo it. */
  private async finishDirs(): Promise<void> {
    const dirs = [...this.created].sort((a, b) => b.depth - a.depth);
    for (const d of dirs)
      await this.guard(d.path, () => applyPathMetadata(d.dest, d.entry!, this.meta));
    this.counts.dirs = dirs.length;
  }

  private async guard(path: Buffer, fn: () => Promise<unknown>): Promise<boolean> {
    try {
      await fn();
      return true;
    } catch (err) {
      this.fail(path, err);
      return false;
    }
  }

  fail(path: Buffer, err: unknown): void {
    if (err instanceof CairnError && err.code === 'Interrupted') throw err;
    this.counts.errors++;
    this.events.push({ type: 'error', path, message: describe(err) });
  }

  *drain(): Generator<RestoreEvent> {
    while (this.events.length > 0) yield this.events.shift()!;
  }

  progress(): RestoreEvent {
    const c = this.counts;
    return { type: 'progress', filesDone: c.files, dirsDone: c.dirs, bytesDone: c.bytes };
  }

  summary(): RestoreSummary {
    const c = this.counts;
    return {
      filesRestored: c.files,
      dirsRestored: c.dirs,
      bytesRestored: c.bytes,
      ...(this.opts.verify ? { filesVerified: c.verified } : {}),
      errors: c.errors,
      durationMs: Date.now() - this.started,
    };
  }
}

async function writeAll(fh: FileHandle, data: Buffer, at: number): Promise<void> {
  for (let done = 0; done < data.length; ) {
    done += (await fh.write(data, done, data.length - done, at + done)).bytesWritten;
  }
}

/** Reads the extracted file back and compares it with a second read of the image. */
async function verify(fh: FileHandle, e: WalkEntry): Promise<void> {
  for await (const p of readContent(e.node.volume.source, e.node.extents())) {
    const back = Buffer.alloc(p.data.length);
    const { bytesRead } = await fh.read(back, 0, back.length, p.offset);
    if (bytesRead !== back.length || !back.equals(p.data)) {
      throw new CairnError(`verification failed: restored bytes differ at offset ${p.offset}`);
    }
  }
}

/** Path → parent path and last name (paths from a walk are absolute and normalised). */
function split(path: Buffer): { parent: Buffer; name: Buffer } {
  const slash = path.lastIndexOf(0x2f);
  return {
    parent: slash === 0 ? rootPath() : path.subarray(0, slash),
    name: path.subarray(slash + 1),
  };
}

const key = (path: Buffer) => path.toString('latin1');

function describe(err: unknown): string {
  if (err instanceof CairnError) return err.message;
  const e = err as NodeJS.ErrnoException;
  // Node's message repeats the path (mangled when it is not UTF-8); the caller names it.
  if (e?.code && typeof e.message === 'string') return e.message.split(',')[0]!;
  return e?.message ?? String(err);
}
