import type { BigIntStats } from 'node:fs';
import { lstat, stat } from 'node:fs/promises';
import type { ChunkerParams } from '../chunker/index.js';
import { CairnError, shortHex } from '../errors.js';
import type { BlobStore } from '../repo/blob-store.js';
import { Semaphore } from '../util/semaphore.js';
import type { BackupCounts, BackupEvent, PathNode } from './archiver.js';
import { ContentSaver, type ContentSink } from './content.js';
import type { Excludes } from './excludes.js';
import {
  type DirListing,
  entryFromStat,
  kindOf,
  listDir,
  type OwnerNames,
  readTarget,
  SourceError,
  sourceCall,
  unchangedSince,
  type WalkEntry,
} from './fsmeta.js';
import { decodeTree, type EntryType, encodeTree, type TreeEntry } from './tree.js';
import { readXattrs } from './xattrs.js';

export interface WalkContext {
  /** Where new data and trees go. */
  sink: ContentSink;
  /** Where the parent's trees come from. */
  store: Pick<BlobStore, 'get'>;
  owners: OwnerNames;
  excludes?: Excludes;
  chunker: { params: ChunkerParams; table: Uint32Array };
  force: boolean;
  oneFileSystem: boolean;
  signal?: AbortSignal;
  report(event: BackupEvent): void;
}

/**
 * Entries being saved (xattrs, symlink target, content) at once. The walk itself is
 * sequential, depth first, and runs ahead of the entries it hands out until this limit (or
 * the content saver's) makes it wait, which bounds memory. Small files are read in batches
 * of up to 64 (see small-files.ts), so this must admit several batches: on the peers bench
 * tree from a cold cache, 64 took 34-35 s and 256 took 27-30 s (2 runs each, load ~3).
 */
const ENTRY_TASKS = 256;
/** Parent subtrees being loaded ahead of the walk, per directory level. */
const SUBTREES_AHEAD = 8;

/** The parent snapshot's tree for the directory being walked. */
interface PrevTree {
  id: Buffer;
  raw: Buffer;
  byName: Map<string, TreeEntry>;
}

/** An entry being saved; never rejects (a failure ends the walk instead). */
type Pending = Promise<TreeEntry | undefined>;

const nameKey = (name: Buffer) => name.toString('latin1');

/**
 * Walks the source paths alongside the parent snapshot's trees and stores one tree per
 * directory. A file unchanged since the parent keeps the parent's content without being
 * read; a directory whose tree encodes to the parent's bytes keeps the parent's tree ID.
 */
export class TreeWalker {
  readonly counts: BackupCounts = {
    filesNew: 0,
    filesChanged: 0,
    filesUnmodified: 0,
    dirsNew: 0,
    dirsChanged: 0,
    dirsUnmodified: 0,
    totalFilesProcessed: 0,
    totalBytesProcessed: 0,
    bytesRead: 0,
    errors: 0,
  };
  private bytesDone = 0;
  private failure: unknown;
  private readonly inflight = new Set<Pending>();
  private readonly entrySlots = new Semaphore(ENTRY_TASKS);
  private readonly content: ContentSaver;

  constructor(private readonly ctx: WalkContext) {
    this.content = new ContentSaver({
      sink: ctx.sink,
      chunker: ctx.chunker,
      onRead: (bytes) => {
        this.throwIfStopped();
        this.counts.bytesRead += bytes;
        this.bytesDone += bytes;
      },
    });
  }

  progress(): BackupEvent {
    const { totalFilesProcessed: filesDone } = this.counts;
    const current = this.content.current;
    return { type: 'progress', filesDone, bytesDone: this.bytesDone, current };
  }

  /** Ends the walk early; `run` then rejects with an Interrupted error. */
  stop(): void {
    this.failure ??= new CairnError('backup interrupted', 'Interrupted');
  }

  /** Walks `root` and returns its tree ID once everything below it is stored. */
  async run(root: PathNode, prevRoot: Buffer | undefined): Promise<Buffer> {
    let id: Buffer | undefined;
    try {
      id = await this.walkRoot(root, prevRoot);
    } catch (err) {
      this.failure ??= err;
    }
    // Nothing may still be running when the caller flushes the store or releases the lock.
    while (this.inflight.size > 0) await Promise.all(this.inflight);
    if (this.failure !== undefined || !id) throw this.failure;
    return id;
  }

  private async walkRoot(root: PathNode, prevRoot: Buffer | undefined): Promise<Buffer> {
    const prev = await this.loadPrev(prevRoot, root.path);
    const children: Pending[] = [];
    if (root.given) {
      const st = await this.source(root.path, () => lstat(root.path, { bigint: true }));
      if (st) await this.walkDir(root.path, prev, st.dev, children);
    } else {
      for (const node of root.children) await this.visitNode(node, prev, children);
    }
    const entries = await settle(children);
    this.throwIfStopped();
    return this.saveTree(entries, prev);
  }

  /** A given path, or a directory on the way to one (real metadata, only the way down). */
  private async visitNode(node: PathNode, prev: PrevTree | undefined, into: Pending[]) {
    const before = prev?.byName.get(nameKey(node.name));
    const { path, name } = node;
    if (node.given) {
      const st = await this.source(path, () => lstat(path, { bigint: true }));
      const kind = st && kindOf(st);
      if (st && kind) await this.visit({ name, path, stat: st, kind }, before, st.dev, into);
      return;
    }
    // Followed, so that /var/run/x (with /var/run a symlink) still has a directory to be in.
    const st = await this.source(path, () => stat(path, { bigint: true }));
    const entry = st && (await this.dirEntry(path, name, st, before));
    if (!entry) return;
    const prevDir = before?.type === 'dir' ? before : undefined;
    const sub = await this.loadPrev(prevDir?.subtree, path);
    const children: Pending[] = [];
    for (const child of node.children) await this.visitNode(child, sub, children);
    into.push(this.track(this.finishDir(entry, children, sub, prevDir)));
  }

  /** Walks one entry; what it hands out to be saved is pushed to `into` in order. */
  private async visit(
    item: WalkEntry,
    prev: TreeEntry | undefined,
    dev: bigint,
    into: Pending[],
    subtree?: Promise<PrevTree | undefined>,
  ) {
    this.throwIfStopped();
    const { kind, stat: st } = item;
    if (kind === 'socket') {
      this.ctx.report({ type: 'skipped', path: item.path, reason: 'socket' });
      return;
    }
    if (kind === 'dir') return this.visitDir(item, prev, dev, into, subtree);
    // A file bind-mounted from another filesystem.
    if (this.ctx.oneFileSystem && st.dev !== dev) return;
    if (!this.ctx.force && unchangedSince(prev, kind, st)) {
      into.push(Promise.resolve(this.reuse(item, prev)));
      return;
    }
    await this.entrySlots.acquire();
    into.push(this.track(this.saveEntry(item, prev).finally(() => this.entrySlots.release())));
  }

  private async visitDir(
    item: WalkEntry,
    prev: TreeEntry | undefined,
    dev: bigint,
    into: Pending[],
    subtree?: Promise<PrevTree | undefined>,
  ) {
    const prevDir = prev?.type === 'dir' ? prev : undefined;
    const sub = subtree ?? this.loadPrev(prevDir?.subtree, item.path);
    const entry = await this.dirEntry(item.path, item.name, item.stat, prev);
    if (!entry) return;
    const children: Pending[] = [];
    // With --one-file-system a mount point is kept as an empty directory, as restic does.
    if (!this.ctx.oneFileSystem || item.stat.dev === dev) {
      if (!(await this.walkDir(item.path, sub, dev, children))) return;
    }
    into.push(this.track(this.finishDir(entry, children, await sub, prevDir)));
  }

  /** Lists `dir` and visits its entries; false when it cannot be read (then it is skipped). */
  private async walkDir(
    dir: Buffer,
    prevTree: PrevTree | undefined | Promise<PrevTree | undefined>,
    dev: bigint,
    into: Pending[],
  ): Promise<boolean> {
    let listing: DirListing;
    try {
      listing = await listDir(dir, this.ctx.excludes);
    } catch (err) {
      this.sourceFailed(err);
      return false;
    }
    for (const failed of listing.failed) this.sourceFailed(failed);
    const prev = await prevTree;
    const subtrees = this.subtreeLoader(listing.entries, prev);
    for (const e of listing.entries) {
      const before = prev?.byName.get(nameKey(e.name));
      await this.visit(e, before, dev, into, e.kind === 'dir' ? subtrees(e) : undefined);
    }
    return true;
  }

  /**
   * The parent's subtrees for the directories among `entries`, loaded a few ahead of the
   * walk: each is a repository read, and one at a time they left the walk idle for a fifth
   * of a no-change backup. Call it for each directory, in order.
   */
  private subtreeLoader(entries: WalkEntry[], prev: PrevTree | undefined) {
    const dirs = entries.filter((e) => e.kind === 'dir');
    const loading = new Map<WalkEntry, Promise<PrevTree | undefined>>();
    let next = 0;
    return (dir: WalkEntry): Promise<PrevTree | undefined> => {
      while (next < dirs.length && loading.size < SUBTREES_AHEAD) {
        const d = dirs[next++]!;
        const before = prev?.byName.get(nameKey(d.name));
        loading.set(d, this.loadPrev(before?.type === 'dir' ? before.subtree : undefined, d.path));
      }
      const sub = loading.get(dir);
      loading.delete(dir);
      return sub ?? Promise.resolve(undefined);
    };
  }

  private async dirEntry(
    path: Buffer,
    name: Buffer,
    st: BigIntStats,
    prev: TreeEntry | undefined,
  ): Promise<TreeEntry | undefined> {
    const entry = entryFromStat(name, 'dir', st, this.ctx.owners);
    if (!this.ctx.force && unchangedSince(prev, 'dir', st)) {
      entry.xattrs = prev.xattrs;
      return entry;
    }
    const xattrs = await this.source(path, () => readXattrs(path, 'dir'));
    if (!xattrs) return undefined;
    entry.xattrs = xattrs;
    return entry;
  }

  private async finishDir(
    entry: TreeEntry,
    children: Pending[],
    sub: PrevTree | undefined,
    prev: TreeEntry | undefined,
  ): Promise<TreeEntry | undefined> {
    const entries = await settle(children);
    if (this.failure !== undefined) return undefined;
    entry.subtree = await this.saveTree(entries, sub);
    this.count('dirs', entry, prev);
    return entry;
  }

  private async saveTree(entries: TreeEntry[], prev: PrevTree | undefined): Promise<Buffer> {
    const raw = encodeTree({ entries });
    if (prev?.raw.equals(raw)) return prev.id;
    return (await this.ctx.sink.put('tree', raw)).id;
  }

  /** An entry unchanged since the parent: its stored parts carried over, nothing read. */
  private reuse(item: WalkEntry, prev: TreeEntry): TreeEntry {
    const entry = entryFromStat(item.name, prev.type, item.stat, this.ctx.owners);
    entry.xattrs = prev.xattrs;
    if (prev.content) entry.content = prev.content;
    if (prev.target) entry.target = prev.target;
    this.bytesDone += entry.size;
    this.count('files', entry, prev, true);
    return entry;
  }

  private async saveEntry(item: WalkEntry, prev: TreeEntry | undefined): Pending {
    const type = item.kind as EntryType;
    const entry = entryFromStat(item.name, type, item.stat, this.ctx.owners);
    try {
      if (type === 'file') {
        // The content saver reads a file's xattrs with its bytes, on a worker for small files.
        const content = await this.content.save(item);
        if (content.changed) {
          const message = 'file changed while it was read; stored as read';
          this.ctx.report({ type: 'warning', path: item.path, message });
        }
        entry.xattrs = content.xattrs;
        entry.content = content.parts;
        entry.size = content.size;
      } else {
        entry.xattrs = await sourceCall(item.path, () => readXattrs(item.path, type));
        if (type === 'symlink') entry.target = await readTarget(item.path);
      }
    } catch (err) {
      this.sourceFailed(err);
      return undefined;
    }
    this.count('files', entry, prev);
    return entry;
  }

  private count(kind: 'files' | 'dirs', entry: TreeEntry, prev?: TreeEntry, same = false) {
    const c = this.counts;
    const state = !prev ? 0 : same || sameEntry(prev, entry) ? 2 : 1;
    if (kind === 'dirs') {
      if (state === 0) c.dirsNew++;
      else if (state === 1) c.dirsChanged++;
      else c.dirsUnmodified++;
      return;
    }
    if (state === 0) c.filesNew++;
    else if (state === 1) c.filesChanged++;
    else c.filesUnmodified++;
    c.totalFilesProcessed++;
    c.totalBytesProcessed += entry.size;
  }

  private async loadPrev(id: Buffer | undefined, path: Buffer): Promise<PrevTree | undefined> {
    if (!id) return undefined;
    try {
      const raw = await this.ctx.store.get(id);
      const { entries } = decodeTree(raw, `tree ${shortHex(id)}`);
      return { id, raw, byName: new Map(entries.map((e) => [nameKey(e.name), e])) };
    } catch (err) {
      // A damaged parent costs only speed: everything below is read afresh.
      const message = `parent tree ${shortHex(id)} cannot be used (${(err as Error).message})`;
      this.ctx.report({ type: 'warning', path, message });
      return undefined;
    }
  }

  /** Runs a call on the source; a failure is reported and gives undefined. */
  private async source<T>(path: Buffer, fn: () => T | Promise<T>): Promise<T | undefined> {
    try {
      return await sourceCall(path, fn);
    } catch (err) {
      this.sourceFailed(err);
      return undefined;
    }
  }

  /** Reports unreadable source data; anything else is not ours to swallow. */
  private sourceFailed(err: unknown): void {
    if (!(err instanceof SourceError)) throw err;
    this.counts.errors++;
    this.ctx.report({ type: 'error', path: err.path, reason: err.reason });
  }

  /** Background work: a failure there ends the walk, and `run` reports it. */
  private track(work: Pending): Pending {
    const p = work.catch((err) => {
      this.failure ??= err;
      return undefined;
    });
    this.inflight.add(p);
    void p.then(() => this.inflight.delete(p));
    return p;
  }

  private throwIfStopped(): void {
    if (this.ctx.signal?.aborted) this.stop();
    if (this.failure !== undefined) throw this.failure;
  }
}

async function settle(pending: Pending[]): Promise<TreeEntry[]> {
  return (await Promise.all(pending)).filter((e): e is TreeEntry => e !== undefined);
}

function sameEntry(a: TreeEntry, b: TreeEntry): boolean {
  return encodeTree({ entries: [a] }).equals(encodeTree({ entries: [b] }));
}
