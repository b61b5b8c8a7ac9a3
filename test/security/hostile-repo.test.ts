import { lstat, mkdir, readdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { encodeTree, type TreeEntry } from '../../src/files/tree.js';
import { hex } from '../../src/repo/blob.js';
import { encodeSegment, segmentName } from '../../src/repo/index-segment.js';
import type { Repository } from '../../src/repo/repository.js';
import { cairn } from '../cli/run.js';
import { makeRepo, type TestRepo, tempDir } from '../helpers.js';

/**
 * A repository written by an attacker (here: by the test, with the format's own encoder
 * and valid seals) must never make restore write outside its target, follow planted
 * symlinks, or trust impossible structures.
 */
let t: TestRepo | undefined;
afterEach(async () => {
  await t?.cleanup();
  t = undefined;
});

function entry(name: Buffer | string, type: TreeEntry['type'], more: Partial<TreeEntry> = {}) {
  return {
    name: typeof name === 'string' ? Buffer.from(name) : name,
    type,
    mode: type === 'dir' ? 0o755 : 0o644,
    uid: 0,
    gid: 0,
    user: 'root',
    group: 'root',
    mtimeNs: 0n,
    ctimeNs: 0n,
    device: 1,
    inode: 1,
    nlink: 1,
    size: 0,
    xattrs: [],
    ...(type === 'file' ? { content: [] } : {}),
    ...more,
  } as TreeEntry;
}

/** Stores a raw tree (bypassing validation) and a snapshot whose root is it. */
async function snapshotOf(repo: Repository, rawTree: Buffer): Promise<string> {
  const store = await repo.blobs();
  const { id } = await store.put('tree', rawTree);
  await store.flush();
  return repo.saveSnapshot({
    time: new Date().toISOString(),
    hostname: 'evil',
    username: 'evil',
    kind: 'files',
    paths: ['/x'],
    tags: [],
    root: hex(id),
    size: 0,
  });
}

/** A tree with one entry, its name patched in after encoding so no encoder check applies. */
function treeWithName(name: Buffer): Buffer {
  const placeholder = Buffer.alloc(name.length, 0x61);
  const raw = encodeTree({ entries: [entry(placeholder, 'file')] });
  const at = raw.indexOf(placeholder);
  name.copy(raw, at);
  return raw;
}

/**
 * Blob IDs are checked on every read, so the only way to close a cycle of trees is an index
 * entry that files another blob's bytes under `alias`: written here as an extra segment.
 */
async function forgeIndexEntry(repo: Repository, alias: Buffer, real: Buffer): Promise<void> {
  const loc = await (await repo.blobs()).locate(real);
  const seg = encodeSegment({ supersedes: [], entries: [{ ...loc!, id: alias }] }, repo.sealer);
  await repo.backend.write(segmentName(seg.id), seg.bytes);
}

/** A CLI run against the test repository; killed (code -1) if it hangs. */
function cairnOn(args: string[]) {
  const env = { CAIRN_REPO: t!.repoDir, CAIRN_CACHE_DIR: t!.cacheDir };
  return cairn(args, { env, timeoutMs: 10_000 });
}

async function restoreCli(snapId: string, target: string) {
  return cairnOn(['restore', snapId, '--target', target]);
}

describe('hostile repositories', () => {
  for (const [label, name] of [
    ['a name with a slash', Buffer.from('../../escaped')],
    ['a name that is ..', Buffer.from('..')],
    ['a name with NUL', Buffer.from('a\0b')],
  ] as const) {
    it(`refuses ${label}, writing nothing outside the target`, async () => {
      t = await makeRepo({ encryption: false });
      const snap = await snapshotOf(t.repo, treeWithName(name));
      const d = await tempDir();
      const target = join(d.path, 'deep', 'target');
      const r = await restoreCli(snap, target);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/^cairn: .*damaged.*bad or unsorted entry name/m);
      expect(await readdir(d.path)).toEqual(['deep']);
      await d.cleanup();
    });
  }

  it('refuses a file whose chunk lengths do not add up to its size', async () => {
    t = await makeRepo({ encryption: false });
    const raw = encodeTree({
      entries: [entry('f', 'file', { size: 10, content: [{ id: null, length: 10 }] })],
    });
    // Patch the declared size (varint 10) to 11 after the fact.
    const tampered = Buffer.from(raw);
    const sizeAt = tampered.lastIndexOf(Buffer.from([10, 0, 1, 1, 10]));
    tampered[sizeAt] = 11;
    const snap = await snapshotOf(t.repo, tampered);
    const d = await tempDir();
    const r = await restoreCli(snap, join(d.path, 't'));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/damaged/);
    await d.cleanup();
  });

  it('refuses a chunk whose length differs from what the tree records for it', async () => {
    t = await makeRepo({ encryption: false });
    const store = await t.repo.blobs();
    const { id } = await store.put('data', Buffer.alloc(4096, 7));
    // Consistent as a tree (one part of 8192 bytes, size 8192), but the chunk holds 4096.
    const raw = encodeTree({
      entries: [entry('f', 'file', { size: 8192, content: [{ id, length: 8192 }] })],
    });
    const snap = await snapshotOf(t.repo, raw);
    const d = await tempDir();
    const why = /reference to chunk [0-9a-f]{8} is damaged: the chunk has 4096 bytes, not 8192$/m;
    const restored = await restoreCli(snap, join(d.path, 't'));
    expect(restored.code).toBe(1);
    expect(restored.stderr).toMatch(/^cairn: \/f: /m);
    expect(restored.stderr).toMatch(why);
    const cat = await cairnOn(['cat', snap, '/f']);
    expect(cat.code).toBe(1);
    expect(cat.stderr).toMatch(why);
    expect(cat.stderr.trimEnd().split('\n')).toHaveLength(1);
    await d.cleanup();
  });

  it('refuses a file declaring an absurd size without hanging or filling the disk', async () => {
    t = await makeRepo({ encryption: false });
    const huge = 2 ** 50;
    const raw = encodeTree({
      entries: [entry('f', 'file', { size: huge, content: [{ id: null, length: huge }] })],
    });
    const snap = await snapshotOf(t.repo, raw);
    const d = await tempDir();
    const r = await restoreCli(snap, join(d.path, 't'));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^cairn: .*(too large|EFBIG|EINVAL)/im);
    await d.cleanup();
  });

  it('does not follow a symlink planted in the target', async () => {
    t = await makeRepo({ encryption: false });
    const store = await t.repo.blobs();
    const leaf = await store.put('tree', encodeTree({ entries: [entry('passwd', 'file')] }));
    const root = encodeTree({ entries: [entry('x', 'dir', { subtree: leaf.id })] });
    const snap = await snapshotOf(t.repo, root);
    const d = await tempDir();
    const outside = join(d.path, 'outside');
    await mkdir(outside);
    await writeFile(join(outside, 'passwd'), 'precious');
    const target = join(d.path, 'target');
    await mkdir(target);
    await symlink(outside, join(target, 'x'));
    await restoreCli(snap, target);
    const { readFile } = await import('node:fs/promises');
    expect(await readFile(join(outside, 'passwd'), 'utf8')).toBe('precious');
    expect((await lstat(join(target, 'x'))).isSymbolicLink()).toBe(false);
    await d.cleanup();
  });

  it('refuses a snapshot whose root is not a stored tree', async () => {
    t = await makeRepo({ encryption: false });
    const snap = await t.repo.saveSnapshot({
      time: new Date().toISOString(),
      hostname: 'evil',
      username: 'evil',
      kind: 'files',
      paths: ['/x'],
      tags: [],
      root: 'ee'.repeat(32),
      size: 0,
    });
    const d = await tempDir();
    const r = await restoreCli(snap, join(d.path, 't'));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^cairn: .*not in the index/m);
    await d.cleanup();
  });
});

describe('hostile repositories: cycles of trees', () => {
  for (const back of ['itself', 'its parent'] as const) {
    it(`refuses a subtree that an index entry maps back to ${back}`, async () => {
      t = await makeRepo({ encryption: false });
      const alias = Buffer.alloc(32, 0xab);
      const loop = encodeTree({ entries: [entry('loop', 'dir', { subtree: alias })] });
      let root = loop;
      if (back === 'its parent') {
        const store = await t.repo.blobs();
        const child = await store.put('tree', loop);
        root = encodeTree({ entries: [entry('a', 'dir', { subtree: child.id })] });
      }
      const snap = await snapshotOf(t.repo, root);
      await forgeIndexEntry(t.repo, alias, t.repo.hashId(root));
      const d = await tempDir();
      const damaged = /^cairn: .*damaged: content does not match its ID$/m;

      const restored = await restoreCli(snap, join(d.path, 't'));
      expect(restored.code).toBe(1);
      expect(restored.stderr).toMatch(damaged);
      expect(await readdir(d.path)).toEqual(['t']);

      const listed = await cairnOn(['ls', snap, '-l']);
      expect(listed.code).toBe(1);
      expect(listed.stderr).toMatch(damaged);
      expect(listed.stderr.trim().split('\n')).toHaveLength(1);

      const checked = await cairnOn(['check']);
      expect(checked.code).toBe(1);
      expect(checked.stdout).toMatch(/blob abababab is in the index but not in the pack/);
      await d.cleanup();
    });
  }
});
