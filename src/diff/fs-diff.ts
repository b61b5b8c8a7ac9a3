import { CairnError } from '../errors.js';
import type { TreeEntry } from '../files/tree.js';
import { type Filesystem, imageExtents, treeEntry, type WalkEntry } from '../fs/index.js';
import type { ByteRanges } from '../image/ranges.js';
import type { Change, DiffError } from './changes.js';
import { entryModifier } from './entries.js';
import { sameFileContent, stretchesToCompare } from './file-content.js';

export interface FsDiffOptions {
  /** Paths left out, with all below them, on both sides (e.g. a partition one cannot read). */
  skip?: readonly Buffer[];
}

type Event = Change | DiffError;

/**
 * Every difference between the files of `a` and `b`, two filesystems inside two images
 * whose bytes differ only in `changed` (image offsets), in `diffTrees`' order and form:
 * depth first in name order, each directory before its contents, with the same markers.
 * Both trees are walked (metadata only); an entry is added or removed by path; entries on
 * both sides compare as `entryModifier` compares a file snapshot's, and a regular file of
 * the same size is read only where its bytes may differ (see `sameFileContent`), so a diff
 * of two versions of an image reads their metadata and the changed chunks of its files.
 * What cannot be read is reported as an error and not compared; nothing below it is
 * reported as added or removed on its account.
 */
export async function* diffFilesystems(
  a: Filesystem,
  b: Filesystem,
  changed: ByteRanges,
  opts: FsDiffOptions = {},
): AsyncGenerator<Event> {
  const skip = new PathSet(opts.skip);
  const errors: DiffError[] = [];
  const failed = [new PathSet(), new PathSet()] as const;
  const walk = (fs: Filesystem, side: 0 | 1) =>
    fs.walk('/', {
      onError: (path, err) => {
        errors.push({ type: 'error', path, reason: err.message });
        failed[side].add(path);
      },
      descend: (path) => !skip.covers(path),
    });
  const pair = new PairDiff(a, b, changed);
  for await (const [ea, eb] of mergeWalks(walk(a, 0), walk(b, 1))) {
    yield* errors.splice(0);
    const path = (ea ?? eb)!.path;
    if (skip.covers(path)) continue;
    // The walks have passed `path`, so an error there or above it has been recorded.
    if (!ea && failed[0].covers(path)) continue;
    if (!eb && failed[1].covers(path)) continue;
    const event = await pair.compare(path, ea, eb);
    if (event) yield event;
  }
  yield* errors.splice(0);
}

class PairDiff {
  constructor(
    private readonly a: Filesystem,
    private readonly b: Filesystem,
    private readonly changed: ByteRanges,
  ) {}

  async compare(path: Buffer, ea?: WalkEntry, eb?: WalkEntry): Promise<Event | undefined> {
    if (!eb) return { type: 'change', modifier: '-', path, before: entryOf(ea!) };
    if (!ea) return { type: 'change', modifier: '+', path, after: entryOf(eb) };
    const before = entryOf(ea);
    const after = entryOf(eb);
    let modifier = entryModifier(before, after);
    // Entries carry no part lists: a file's content is compared here, not by entryModifier.
    if (before.type === 'file' && after.type === 'file' && modifier !== 'M') {
      const same = await this.sameContent(ea, eb);
      if (typeof same !== 'boolean') return same;
      if (!same) modifier = 'M';
    }
    return modifier ? { type: 'change', modifier, path, before, after } : undefined;
  }

  private async sameContent(ea: WalkEntry, eb: WalkEntry): Promise<boolean | DiffError> {
    try {
      if (ea.stat.unreadable || eb.stat.unreadable) return await sameStored(ea, eb, this.changed);
      const [fa, fb] = await Promise.all([this.a.open(ea.node), this.b.open(eb.node)]);
      return await sameFileContent(fa, fb, this.changed);
    } catch (err) {
      if (!(err instanceof CairnError) || err.code !== 'Damaged') throw err;
      return { type: 'error', path: eb.path, reason: err.message };
    }
  }
}

/**
 * A file stored in a form we cannot decode (compressed, encrypted) on either side: the same
 * only when stored the same way at the same place, in bytes both images share.
 */
async function sameStored(ea: WalkEntry, eb: WalkEntry, changed: ByteRanges): Promise<boolean> {
  if (ea.stat.unreadable !== eb.stat.unreadable) return false;
  const [xa, xb] = await Promise.all([imageExtents(ea.node), imageExtents(eb.node)]);
  return stretchesToCompare(xa, xb, ea.stat.size, changed).next().done === true;
}

function entryOf(e: WalkEntry): TreeEntry {
  return treeEntry(e.path.subarray(e.path.lastIndexOf(0x2f) + 1), e.stat, e.target);
}

type Pair = [WalkEntry, WalkEntry] | [WalkEntry, undefined] | [undefined, WalkEntry];

/** Two walks side by side, in their shared order: each path once, with its entry from each. */
async function* mergeWalks(
  a: AsyncGenerator<WalkEntry>,
  b: AsyncGenerator<WalkEntry>,
): AsyncGenerator<Pair> {
  try {
    let [x, y] = await Promise.all([a.next(), b.next()]);
    while (!x.done || !y.done) {
      const order = x.done ? 1 : y.done ? -1 : comparePaths(x.value.path, y.value.path);
      if (order < 0) {
        yield [x.value as WalkEntry, undefined];
        x = await a.next();
      } else if (order > 0) {
        yield [undefined, y.value as WalkEntry];
        y = await b.next();
      } else {
        yield [x.value as WalkEntry, y.value as WalkEntry];
        [x, y] = await Promise.all([a.next(), b.next()]);
      }
    }
  } finally {
    await Promise.all([a.return(undefined), b.return(undefined)]);
  }
}

/**
 * The walk's order: component by component, names by their bytes (so `/a/x` comes before
 * `/a-b`: a directory's contents follow it). Names hold no `/`, so comparing the paths as
 * bytes with `/` below every other byte gives exactly that.
 */
export function comparePaths(p: Buffer, q: Buffer): number {
  const n = Math.min(p.length, q.length);
  for (let i = 0; i < n; i++) {
    const x = p[i]!;
    const y = q[i]!;
    if (x === y) continue;
    if (x === 0x2f) return -1;
    if (y === 0x2f) return 1;
    return x - y;
  }
  return p.length - q.length;
}

/** Absolute paths; `covers(p)` when p or a directory above it is one of them. */
class PathSet {
  private readonly keys = new Set<string>();

  constructor(paths: readonly Buffer[] = []) {
    for (const p of paths) this.add(p);
  }

  add(path: Buffer): void {
    this.keys.add(path.toString('latin1'));
  }

  covers(path: Buffer): boolean {
    if (this.keys.size === 0) return false;
    const key = path.toString('latin1');
    for (let i = key.indexOf('/', 1); i !== -1; i = key.indexOf('/', i + 1)) {
      if (this.keys.has(key.slice(0, i))) return true;
    }
    return this.keys.has(key);
  }
}
