import fc from 'fast-check';
import { type FNode, type FTree, T0 } from './fs-trees.js';

/*
 * Pairs of small source trees for property tests: a tree over a few names and contents,
 * and a next version of it with entries kept, removed, replaced, tweaked or added.
 */

const NAMES = ['a', 'a-b', 'b', 'c.txt'];
/** Strings, not random bytes: a counterexample stays readable. */
const CONTENTS = ['', 'x', 'a'.repeat(3000), 'b'.repeat(3000), 'several blocks\n'.repeat(700)];

const TIMES = [T0, T0 + 10];

/** Small trees over a few names and contents. */
function treeArb(depth: number): fc.Arbitrary<FTree> {
  return fc.dictionary(fc.constantFrom(...NAMES), nodeArb(depth), { maxKeys: NAMES.length });
}

function nodeArb(depth: number): fc.Arbitrary<FNode> {
  const leaf: fc.Arbitrary<FNode> = fc.oneof(
    fc.record({
      kind: fc.constant('file' as const),
      data: fc.constantFrom(...CONTENTS),
      mode: fc.constantFrom(0o644, 0o600),
      mtime: fc.constantFrom(...TIMES),
    }),
    fc.record({
      kind: fc.constant('symlink' as const),
      target: fc.constantFrom('a', 'b/c'),
      mtime: fc.constantFrom(...TIMES),
    }),
  );
  if (depth === 0) return leaf;
  const dirArb = fc.record({
    kind: fc.constant('dir' as const),
    children: treeArb(depth - 1),
    mode: fc.constantFrom(0o755, 0o700),
    mtime: fc.constantFrom(...TIMES),
  });
  return fc.oneof({ weight: 2, arbitrary: leaf }, { weight: 1, arbitrary: dirArb });
}

/** A tree and a next version of it: entries kept, removed, replaced, tweaked or added. */
export const versionsArb = treeArb(2).chain((a) => mutated(a, 2).map((b) => [a, b] as const));

function mutated(tree: FTree, depth: number): fc.Arbitrary<FTree> {
  const fates = Object.entries(tree).map(([name, node]) =>
    fc
      .oneof(
        { weight: 3, arbitrary: fc.constant<FNode | undefined>(node) },
        { weight: 1, arbitrary: fc.constant(undefined) },
        { weight: 1, arbitrary: nodeArb(depth) },
        { weight: 3, arbitrary: tweaked(node, depth) },
      )
      .map((n) => [name, n] as const),
  );
  const added = fc.dictionary(fc.constantFrom(...NAMES), nodeArb(depth), { maxKeys: 2 });
  return fc.tuple(fc.tuple(...fates), added).map(([kept, add]) => {
    const out: FTree = {};
    for (const [name, node] of Object.entries(add)) if (!(name in tree)) out[name] = node;
    for (const [name, node] of kept) if (node) out[name] = node;
    return out;
  });
}

/** One small change: other bytes of the same size, another mode, time or target. */
function tweaked(node: FNode, depth: number): fc.Arbitrary<FNode> {
  const later = (node.mtime ?? T0) + 2;
  switch (node.kind) {
    case 'file': {
      const text = String(node.data);
      const mid = text.length >> 1;
      const data = text && `${text.slice(0, mid)}#${text.slice(mid + 1)}`;
      return fc.constantFrom<FNode>(
        { ...node, data },
        { ...node, mode: node.mode === 0o644 ? 0o600 : 0o644 },
        { ...node, mtime: later },
      );
    }
    case 'symlink':
      return fc.constantFrom<FNode>(
        { ...node, target: `${node.target}x` },
        { ...node, mtime: later },
      );
    case 'dir':
      return fc.oneof(
        mutated(node.children, Math.max(depth - 1, 0)).map((children) => ({ ...node, children })),
        fc.constant({ ...node, mode: node.mode === 0o755 ? 0o700 : 0o755 }),
      );
  }
}
