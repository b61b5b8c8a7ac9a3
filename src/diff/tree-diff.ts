import { loadTree } from '../files/browse.js';
import { childPath, rootPath } from '../files/paths.js';
import type { Tree, TreeEntry } from '../files/tree.js';
import type { BlobStore } from '../repo/blob-store.js';
import type { Change } from './changes.js';
import { entryModifier, mergeByName } from './entries.js';

/**
 * Where the diff gets trees from. Injectable so that a caller (or a test) can count,
 * cache or prefetch loads: the diff's cost is the number of trees it loads.
 */
export type TreeLoader = (id: Buffer) => Promise<Tree>;

export function storeTreeLoader(store: BlobStore): TreeLoader {
  return (id) => loadTree(store, id);
}

/**
 * Every difference between the trees `a` and `b`, depth first in name order, each
 * directory before its contents. A subtree with the same ID on both sides is the same
 * (trees are content-addressed), so it is skipped without being loaded: a diff costs in
 * proportion to the directories on the paths to what changed, not to the snapshot's size.
 */
export async function* diffTrees(
  load: TreeLoader,
  a: Buffer,
  b: Buffer,
  base: Buffer = rootPath(),
): AsyncGenerator<Change> {
  if (a.equals(b)) return;
  const [ta, tb] = await Promise.all([load(a), load(b)]);
  for (const [ea, eb] of mergeByName(ta.entries, tb.entries)) {
    if (!eb) yield* oneSide(load, '-', childPath(base, ea.name), ea);
    else if (!ea) yield* oneSide(load, '+', childPath(base, eb.name), eb);
    else yield* diffPair(load, childPath(base, ea.name), ea, eb);
  }
}

/**
 * An entry on both sides. Unlike restic, a type change to or from a directory also lists
 * what the directory held (as removed or added): those paths did change.
 */
async function* diffPair(
  load: TreeLoader,
  path: Buffer,
  a: TreeEntry,
  b: TreeEntry,
): AsyncGenerator<Change> {
  const modifier = entryModifier(a, b);
  if (modifier) yield { type: 'change', modifier, path, before: a, after: b };
  if (modifier === 'T') {
    if (a.type === 'dir') yield* below(load, '-', path, a.subtree!);
    if (b.type === 'dir') yield* below(load, '+', path, b.subtree!);
  } else if (a.type === 'dir') {
    yield* diffTrees(load, a.subtree!, b.subtree!, path);
  }
}

/** An entry only one side has, and (for a directory) everything below it. */
export async function* oneSide(
  load: TreeLoader,
  modifier: '+' | '-',
  path: Buffer,
  entry: TreeEntry,
): AsyncGenerator<Change> {
  const side = modifier === '+' ? { after: entry } : { before: entry };
  yield { type: 'change', modifier, path, ...side };
  if (entry.type === 'dir') yield* below(load, modifier, path, entry.subtree!);
}

/** Everything below the directory `base` (tree `id`), all marked `modifier`. */
export async function* below(
  load: TreeLoader,
  modifier: '+' | '-',
  base: Buffer,
  id: Buffer,
): AsyncGenerator<Change> {
  for (const e of (await load(id)).entries) {
    yield* oneSide(load, modifier, childPath(base, e.name), e);
  }
}
