import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Change, diffTrees, storeTreeLoader, type TreeLoader } from '../../src/diff/index.js';
import { encodeTree, type TreeEntry } from '../../src/files/tree.js';
import type { BlobStore } from '../../src/repo/blob-store.js';
import { makeRepo, type TestRepo } from '../helpers.js';

/**
 * Two snapshots of 100 000 files (10 × 10 directories of 1 000 files, all sharing one data
 * chunk) made straight from trees, differing in one file of one leaf directory.
 */
const TOP = 10;
const MID = 10;
const FILES = 1000;

let t: TestRepo;
let store: BlobStore;
beforeAll(async () => {
  t = await makeRepo({ encryption: false });
  store = await t.repo.blobs();
});
afterAll(() => t.cleanup());

function entry(name: string, extra: Partial<TreeEntry>): TreeEntry {
  return {
    name: Buffer.from(name),
    type: 'file',
    mode: 0o644,
    uid: 0,
    gid: 0,
    user: 'root',
    group: 'root',
    mtimeNs: 1_700_000_000_000_000_000n,
    ctimeNs: 1_700_000_000_000_000_000n,
    device: 1,
    inode: 0,
    nlink: 1,
    size: 0,
    xattrs: [],
    ...extra,
  };
}

const dir = (name: string, subtree: Buffer) => entry(name, { type: 'dir', mode: 0o755, subtree });

async function put(entries: TreeEntry[]): Promise<Buffer> {
  return (await store.put('tree', encodeTree({ entries }))).id;
}

/** The snapshot's root; `changed` holds each tree on the way to the one changed file. */
async function build(data: Buffer, other: Buffer, changed: Buffer[]): Promise<Buffer> {
  const file = (name: string, id: Buffer) =>
    entry(name, { size: 1000, content: [{ id, length: 1000 }] });
  const tops: TreeEntry[] = [];
  for (let i = 0; i < TOP; i++) {
    const mids: TreeEntry[] = [];
    for (let j = 0; j < MID; j++) {
      const files: TreeEntry[] = [];
      for (let k = 0; k < FILES; k++) {
        const name = `file-${i}-${j}-${String(k).padStart(4, '0')}`;
        files.push(file(name, i === 3 && j === 7 && k === 500 ? other : data));
      }
      const leaf = await put(files);
      if (i === 3 && j === 7) changed.push(leaf);
      mids.push(dir(`mid${j}`, leaf));
    }
    const top = await put(mids);
    if (i === 3) changed.push(top);
    tops.push(dir(`top${i}`, top));
  }
  const root = await put(tops);
  changed.push(root);
  return root;
}

describe('diff of two 100 000-file snapshots', () => {
  it('loads only the trees on the path to the one changed directory', async () => {
    const one = (await store.put('data', Buffer.alloc(1000, 1))).id;
    const two = (await store.put('data', Buffer.alloc(1000, 2))).id;
    const pathA: Buffer[] = [];
    const pathB: Buffer[] = [];
    const a = await build(one, one, pathA);
    const b = await build(one, two, pathB);
    await store.flush();

    const loaded: string[] = [];
    const base = storeTreeLoader(store);
    const counting: TreeLoader = (id) => {
      loaded.push(id.toString('hex'));
      return base(id);
    };
    const changes: Change[] = [];
    for await (const c of diffTrees(counting, a, b)) changes.push(c);

    expect(changes.map((c) => `${c.modifier} ${c.path}`)).toEqual(['M /top3/mid7/file-3-7-0500']);
    const expected = [...pathA, ...pathB].map((id) => id.toString('hex'));
    expect(loaded.sort()).toEqual(expected.sort());
    expect(loaded).toHaveLength(6);

    // Against an empty snapshot every entry is added: the snapshots do hold 100 000 files.
    const empty = await put([]);
    let files = 0;
    for await (const c of diffTrees(base, empty, b)) if (c.after?.type === 'file') files++;
    expect(files).toBe(TOP * MID * FILES);
  });
});
