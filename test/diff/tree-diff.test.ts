import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  type Change,
  changePath,
  DiffTally,
  diffTrees,
  type FileDiffSummary,
  type Modifier,
} from '../../src/diff/index.js';
import { type MDir, MemoryTrees, type MNode, walk } from './model.js';

const OPS = ['add', 'remove', 'content', 'chmod', 'chtime', 'retarget', 'type'] as const;
type Op = { at: number; op: (typeof OPS)[number]; n: number };

/** Names of 1–3 bytes from a small alphabet: collisions, non-UTF-8 bytes, `\n`, `.` and `\`. */
const nameArb = fc
  .array(fc.constantFrom(0x61, 0x62, 0x2e, 0xe9, 0xff, 0x0a, 0x5c), { minLength: 1, maxLength: 3 })
  .map((bytes) => Buffer.from(bytes).toString('latin1'))
  .filter((n) => n !== '.' && n !== '..');

const meta = { mode: fc.integer({ min: 0, max: 0o7777 }), mtime: fc.integer({ min: 0, max: 1e9 }) };
const treeArb = fc.letrec<{ node: MNode; dir: MDir }>((tie) => ({
  node: fc.oneof(
    { depthSize: 'small', maxDepth: 3 },
    fc.record({
      kind: fc.constant('file' as const),
      ...meta,
      chunks: fc.array(fc.integer({ min: 0, max: 30 }), { maxLength: 4 }),
    }),
    fc.record({
      kind: fc.constant('symlink' as const),
      ...meta,
      target: fc.string({ maxLength: 4 }),
    }),
    fc.record({ kind: fc.constant('fifo' as const), ...meta }),
    tie('dir'),
  ),
  dir: fc.record({
    kind: fc.constant('dir' as const),
    ...meta,
    children: fc.dictionary(nameArb, tie('node'), { maxKeys: 5 }),
  }),
})).dir;
const opsArb = fc.array(fc.record({ at: fc.nat(), op: fc.constantFrom(...OPS), n: fc.nat() }), {
  maxLength: 8,
});

interface Slot {
  path: string;
  node: MNode;
  parent: MDir | undefined;
  name: string;
}

function slots(root: MDir): Slot[] {
  const out: Slot[] = [{ path: '', node: root, parent: undefined, name: '' }];
  const visit = (dir: MDir, base: string) => {
    for (const [name, node] of Object.entries(dir.children)) {
      out.push({ path: `${base}/${name}`, node, parent: dir, name });
      if (node.kind === 'dir') visit(node, `${base}/${name}`);
    }
  };
  visit(root, '');
  return out;
}

const within = (p: string, dir: string) => p.startsWith(`${dir}/`);

/**
 * Applies the ops that are possible and independent (no path touched twice, nothing inside
 * a path that was added, removed or replaced) to `root`, and returns the markers they must
 * produce, by path.
 */
function applyOps(root: MDir, ops: Op[]): Map<string, Modifier> {
  const expected = new Map<string, Modifier>();
  const touched = new Map<string, boolean>();
  let fresh = 0;
  const all = (base: string, node: MNode, m: Modifier) => {
    expected.set(base, m);
    if (node.kind === 'dir') for (const [p] of walk(node, base)) expected.set(p, m);
  };
  for (const { at, op, n } of ops) {
    const list = slots(root);
    const s = list[at % list.length]!;
    const structural = op === 'add' || op === 'remove' || op === 'type';
    const blocked =
      touched.has(s.path) ||
      [...touched].some(([q, st]) => st && within(s.path, q)) ||
      (structural && [...touched.keys()].some((q) => within(q, s.path)));
    if (blocked || (op !== 'add' && !s.parent)) continue;
    const node = s.node;
    if (op === 'add') {
      if (node.kind !== 'dir') continue;
      // 0xfe never occurs in generated names, so this path did not exist before.
      const name = `\xfe${fresh++}`;
      const added: MNode =
        n % 2 === 0
          ? { kind: 'file', mode: 0o644, mtime: 1, chunks: [100 + fresh] }
          : {
              kind: 'dir',
              mode: 0o755,
              mtime: 1,
              children: { c: { kind: 'fifo', mode: 0o600, mtime: 2 }, e: emptyDir() },
            };
      node.children[name] = added;
      all(`${s.path}/${name}`, added, '+');
      touched.set(`${s.path}/${name}`, true);
      continue;
    }
    const done = mutate(s, op, n, all, expected);
    if (done) touched.set(s.path, structural);
  }
  return expected;
}

function emptyDir(): MDir {
  return { kind: 'dir', mode: 0o700, mtime: 3, children: {} };
}

/** One op on an existing entry; false when it does not apply to the entry's type. */
function mutate(
  s: Slot,
  op: Op['op'],
  n: number,
  all: (base: string, node: MNode, m: Modifier) => void,
  expected: Map<string, Modifier>,
): boolean {
  const { node, parent, name, path } = s;
  if (op === 'remove') {
    delete parent!.children[name];
    all(path, node, '-');
  } else if (op === 'chmod' || op === 'chtime') {
    if (op === 'chmod') node.mode ^= 0o100;
    else node.mtime += 1;
    expected.set(path, 'U');
  } else if (op === 'content' && node.kind === 'file') {
    node.chunks.push(1000 + n);
    expected.set(path, 'M');
  } else if (op === 'retarget' && node.kind === 'symlink') {
    node.target += 'x';
    expected.set(path, 'M');
  } else if (op === 'type') {
    const { mode, mtime } = node;
    const next: MNode =
      node.kind === 'file'
        ? { kind: 'dir', mode, mtime, children: { c: { kind: 'file', mode, mtime, chunks: [7] } } }
        : node.kind === 'dir'
          ? { kind: 'fifo', mode, mtime }
          : { kind: 'file', mode, mtime, chunks: [n % 31] };
    if (node.kind === 'dir') all(path, node, '-');
    parent!.children[name] = next;
    all(path, next, '+');
    expected.set(path, 'T');
  } else return false;
  return true;
}

async function collect(gen: AsyncIterable<Change>): Promise<Change[]> {
  const out: Change[] = [];
  for await (const c of gen) out.push(c);
  return out;
}

const latin1 = (b: Buffer) => b.toString('latin1');

function byComponents(a: string, b: string): number {
  const x = a.split('/');
  const y = b.split('/');
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    const c = Buffer.compare(Buffer.from(x[i]!, 'latin1'), Buffer.from(y[i]!, 'latin1'));
    if (c !== 0) return c;
  }
  return x.length - y.length;
}

describe('diffTrees', () => {
  it('reports exactly the paths that were changed, with their markers', async () => {
    const seen = new Set<Modifier>();
    await fc.assert(
      fc.asyncProperty(treeArb, opsArb, async (a, ops) => {
        const b = structuredClone(a);
        const expected = applyOps(b, ops);
        const mem = new MemoryTrees();
        const idsA = new Map<string, string>();
        const idsB = new Map<string, string>();
        const rootA = mem.store(a, idsA);
        const rootB = mem.store(b, idsB);
        const changes = await collect(diffTrees(mem.load, rootA, rootB));
        const got = changes.map((c) => [latin1(c.path), c.modifier] as const);
        expect(new Map(got)).toEqual(expected);
        expect(got).toHaveLength(expected.size);
        const paths = got.map(([p]) => p);
        expect(paths).toEqual([...paths].sort(byComponents));
        for (const [, m] of got) seen.add(m);
        // A directory with the same tree ID on both sides is never loaded: only changed
        // pairs (both sides) and directories reported as added or removed are.
        let loads = 0;
        for (const [path, id] of idsA) if (idsB.has(path) && idsB.get(path) !== id) loads += 2;
        for (const c of changes) {
          if (c.modifier === 'U' || c.modifier === 'M') continue;
          if (c.before?.type === 'dir') loads++;
          if (c.after?.type === 'dir') loads++;
        }
        expect(mem.loaded).toHaveLength(loads);
      }),
      { numRuns: 300 },
    );
    expect([...seen].sort()).toEqual(['+', '-', 'M', 'T', 'U']);
  });

  it('marks directories with a trailing slash, on the new side of a type change', async () => {
    const mem = new MemoryTrees();
    const file: MNode = { kind: 'file', mode: 0o644, mtime: 1, chunks: [1] };
    const a = mem.store({ ...emptyDir(), children: { x: file, y: emptyDir() } });
    const b = mem.store({ ...emptyDir(), children: { x: emptyDir(), y: file } });
    const shown = (await collect(diffTrees(mem.load, a, b))).map(
      (c) => `${c.modifier} ${changePath(c)}`,
    );
    expect(shown).toEqual(['T /x/', 'T /y']);
  });
});

describe('diff summary', () => {
  it('counts entries, bytes of added files and of chunks unique to each side', async () => {
    const f = (chunks: number[]): MNode => ({ kind: 'file', mode: 0o644, mtime: 5, chunks });
    const link = (target: string): MNode => ({ kind: 'symlink', mode: 0o777, mtime: 5, target });
    const dir = (children: Record<string, MNode>): MDir => ({ ...emptyDir(), children });
    const fifo: MNode = { kind: 'fifo', mode: 0o600, mtime: 5 };
    const mem = new MemoryTrees();
    const a = mem.store(
      dir({ f: f([1, 2]), g: f([3]), d: dir({ h: f([4, 0]) }), s: link('x'), t: f([8]) }),
    );
    const b = mem.store(
      dir({
        f: f([1, 5]),
        d: dir({ h: f([4, 0]), k: f([6]) }),
        n: f([7, 7]),
        s: link('y'),
        t: dir({ u: fifo }),
      }),
    );
    const tally = new DiffTally();
    for (const c of await collect(diffTrees(mem.load, a, b))) tally.add(c);
    // Chunk n is 100 + n bytes.
    expect(tally.summary()).toEqual<FileDiffSummary>({
      type: 'summary',
      filesAdded: 2, // d/k, n
      filesRemoved: 1, // g
      filesChanged: 1, // f
      dirsAdded: 0,
      dirsRemoved: 0,
      othersAdded: 1, // t/u
      othersRemoved: 0,
      othersChanged: 1, // s
      metadataChanged: 0,
      typesChanged: 1, // t
      addedBytes: 105 + 106 + 2 * 107, // f's new chunk, d/k, n (its size: the chunk twice)
      removedBytes: 102 + 103 + 108, // f's old chunk, g, t
      chunksAdded: 3, // 5, 6, 7
      chunksRemoved: 3, // 2, 3, 8
      errors: 0,
    });
  });
});
