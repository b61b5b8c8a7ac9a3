import { lstatSync } from 'node:fs';
import { Chunker, type ChunkerParams, isAllZero } from '../chunker/index.js';
import type { IdHasher } from '../crypto/index.js';
import { CairnError } from '../errors.js';
import { readBufferPool, readChunks } from '../files/content.js';
import type { Excludes } from '../files/excludes.js';
import {
  entryFromStat,
  kindOf,
  listDir,
  type OwnerNames,
  readTarget,
  SourceError,
  sourceCall,
  unchangedSince,
  type WalkEntry,
} from '../files/fsmeta.js';
import { childPath, displayText, rootPath, splitUserPath } from '../files/paths.js';
import {
  type ContentPart,
  compareNames,
  type EntryType,
  mergeHoles,
  type TreeEntry,
} from '../files/tree.js';
import { readXattrs } from '../files/xattrs.js';
import { ChunkerFeed } from '../repo/shared-buffers.js';
import type { Change, DiffError } from './changes.js';
import { entryModifier, type Modifier, mergeByName, sameMetadata } from './entries.js';
import { below, oneSide, type TreeLoader } from './tree-diff.js';

export interface LiveDiffOptions {
  owners: OwnerNames;
  /** Paths left out on both sides, as `backup --exclude` leaves them out. */
  excludes?: Excludes;
  /**
   * Re-read files that look changed and compare chunk lists, so a file touched but not
   * changed is `U`, not `M`. Needs the repository's chunker and ID function: chunk
   * boundaries and IDs must come out as backup's did.
   */
  content?: { params: ChunkerParams; table: Uint32Array; hashId: IdHasher };
}

type Event = Change | DiffError;

/** A given path: what the snapshot has there (`root` for `/`) and what is on disk. */
interface Target {
  path: Buffer;
  before: TreeEntry | 'root' | undefined;
  live: WalkEntry | undefined;
}

/**
 * What changed on disk, below the absolute `paths`, since the snapshot whose root tree is
 * `root`. Entries are matched by the rule incremental backup uses (same type, size, mtime,
 * ctime and inode: unchanged, nothing more is read); anything else is looked at closer:
 *   - a file whose size, mtime or inode moved is `M` (its content may differ: backup would
 *     re-read it); with only ctime moved it is `U` when mode, owner or xattrs differ, else
 *     `M`, since only reading can rule a content change out;
 *   - with `content`, such files are read and chunked, and `M` means their chunk list
 *     differs; otherwise they are `U` when metadata differs, or not reported.
 * Entries that cannot be read are reported as errors and not compared.
 */
export async function* diffLive(
  load: TreeLoader,
  root: Buffer,
  paths: readonly string[],
  opts: LiveDiffOptions,
): AsyncGenerator<Event> {
  const diff = new LiveDiff(load, opts);
  const targets: Target[] = [];
  for (const components of topmost(paths)) targets.push(await diff.target(root, components));
  for (const t of targets) yield* diff.compareTarget(root, t);
}

/** The paths' components, sorted, without duplicates or paths inside another given one. */
function topmost(paths: readonly string[]): Buffer[][] {
  const all = paths.map((p) => splitUserPath(p).map((c) => Buffer.from(c))).sort(compareComps);
  return all.filter((p, i) => !all.slice(0, i).some((q) => q.every((c, k) => p[k]?.equals(c))));
}

function compareComps(a: Buffer[], b: Buffer[]): number {
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    const c = compareNames(a[i]!, b[i]!);
    if (c !== 0) return c;
  }
  return a.length - b.length;
}

class LiveDiff {
  constructor(
    private readonly load: TreeLoader,
    private readonly opts: LiveDiffOptions,
  ) {}

  async target(root: Buffer, components: Buffer[]): Promise<Target> {
    const path = components.reduce(childPath, rootPath());
    const before = components.length === 0 ? 'root' : await this.lookup(root, components);
    const live = statPath(path);
    if (!before && !live) {
      throw new CairnError(`${displayText(path)} is neither in the snapshot nor on disk`);
    }
    return { path, before, live };
  }

  async *compareTarget(root: Buffer, t: Target): AsyncGenerator<Event> {
    if (t.before !== 'root') {
      yield* this.compare(t.path, t.before, t.live);
      return;
    }
    yield* this.compareContents(t.path, root);
  }

  /** The snapshot's entry at `components`, found by exact name bytes. */
  private async lookup(root: Buffer, components: Buffer[]): Promise<TreeEntry | undefined> {
    let tree = root;
    let entry: TreeEntry | undefined;
    for (const name of components) {
      if (entry && entry.type !== 'dir') return undefined;
      entry = (await this.load(tree)).entries.find((e) => e.name.equals(name));
      if (!entry) return undefined;
      if (entry.type === 'dir') tree = entry.subtree!;
    }
    return entry;
  }

  private async *compare(
    path: Buffer,
    before: TreeEntry | undefined,
    live: WalkEntry | undefined,
  ): AsyncGenerator<Event> {
    if (!live) {
      if (before) yield* oneSide(this.load, '-', path, before);
      return;
    }
    if (!before) {
      yield* this.added(live);
      return;
    }
    const type = live.kind as EntryType;
    if (before.type !== type) {
      const after = entryFromStat(live.name, type, live.stat, this.opts.owners);
      yield { type: 'change', modifier: 'T', path, before, after };
      if (before.type === 'dir') yield* below(this.load, '-', path, before.subtree!);
      if (type === 'dir') yield* this.addedBelow(path);
      return;
    }
    const subtree = before.subtree;
    if (unchangedSince(before, type, live.stat)) {
      if (subtree) yield* this.compareContents(path, subtree);
      return;
    }
    const after = await this.liveEntry(live);
    if (after.type === 'error') {
      yield after;
      return;
    }
    const modifier = type === 'file' ? fileModifier(before, after) : entryModifier(before, after);
    if (modifier) yield { type: 'change', modifier, path, before, after };
    if (subtree) yield* this.compareContents(path, subtree);
  }

  /** What the snapshot's tree `tree` and the directory `path` on disk hold, merged by name. */
  private async *compareContents(path: Buffer, tree: Buffer): AsyncGenerator<Event> {
    const listing = await this.list(path);
    if (listing.type === 'error') {
      yield listing;
      return;
    }
    yield* listing.failed;
    const { excludes } = this.opts;
    const before = (await this.load(tree)).entries.filter(
      (e) => !excludes?.excludes(childPath(path, e.name), e.type === 'dir'),
    );
    for (const [b, l] of mergeByName(before, listing.entries)) {
      yield* this.compare(childPath(path, (b ?? l)!.name), b, l);
    }
  }

  private async *added(live: WalkEntry): AsyncGenerator<Event> {
    const type = live.kind as EntryType;
    const after = entryFromStat(live.name, type, live.stat, this.opts.owners);
    yield { type: 'change', modifier: '+', path: live.path, after };
    if (type === 'dir') yield* this.addedBelow(live.path);
  }

  private async *addedBelow(path: Buffer): AsyncGenerator<Event> {
    const listing = await this.list(path);
    if (listing.type === 'error') {
      yield listing;
      return;
    }
    yield* listing.failed;
    for (const e of listing.entries) yield* this.added(e);
  }

  /** A directory's entries on disk, sockets left out (backup never stores them). */
  private async list(path: Buffer) {
    try {
      const { entries, failed } = await listDir(path, this.opts.excludes);
      return {
        type: 'listing' as const,
        entries: entries.filter((e) => e.kind !== 'socket'),
        failed: failed.map(sourceError),
      };
    } catch (err) {
      return sourceError(err);
    }
  }

  /** The entry backup would record for `live`; file content only with `content`. */
  private async liveEntry(live: WalkEntry): Promise<TreeEntry | DiffError> {
    const type = live.kind as EntryType;
    const entry = entryFromStat(live.name, type, live.stat, this.opts.owners);
    try {
      entry.xattrs = await sourceCall(live.path, () => readXattrs(live.path, type));
      if (type === 'symlink') entry.target = await readTarget(live.path);
      if (type === 'file' && this.opts.content) {
        const { parts, size } = await readParts(live, this.opts.content);
        entry.content = parts;
        entry.size = size;
      }
    } catch (err) {
      return sourceError(err);
    }
    return entry;
  }
}

/** See `diffLive`: without a part list, a file's content can only be guessed at. */
function fileModifier(before: TreeEntry, after: TreeEntry): Modifier | undefined {
  if (after.content) return entryModifier(before, after);
  const moved =
    before.size !== after.size || before.mtimeNs !== after.mtimeNs || before.inode !== after.inode;
  return moved || sameMetadata(before, after) ? 'M' : 'U';
}

/** lstat of a given path; undefined when there is nothing (or only a socket) there. */
function statPath(path: Buffer): WalkEntry | undefined {
  try {
    const stat = lstatSync(path, { bigint: true });
    const kind = kindOf(stat);
    if (!kind || kind === 'socket') return undefined;
    const name = path.subarray(path.lastIndexOf(0x2f) + 1);
    return { name, path, stat, kind };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw new CairnError(`cannot read ${displayText(path)}: ${code ?? err}`);
  }
}

/** Chunks are hashed as soon as they are cut, so read buffers are reused at once. */
const readBuffers = readBufferPool(2);

/** The file's parts as backup would record them: the same cuts, IDs and holes. */
async function readParts(
  live: WalkEntry,
  c: NonNullable<LiveDiffOptions['content']>,
): Promise<{ parts: ContentPart[]; size: number }> {
  const parts: ContentPart[] = [];
  const feed = new ChunkerFeed(readBuffers, new Chunker(c.params, c.table));
  const { size } = await readChunks(live.path, live.stat, feed, async (chunk) => {
    parts.push({ id: isAllZero(chunk) ? null : c.hashId(chunk), length: chunk.length });
  });
  return { parts: mergeHoles(parts), size };
}

function sourceError(err: unknown): DiffError {
  if (!(err instanceof SourceError)) throw err;
  return { type: 'error', path: err.path, reason: err.reason };
}
