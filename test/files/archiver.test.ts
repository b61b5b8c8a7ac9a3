import { execFileSync, spawnSync } from 'node:child_process';
import {
  chown,
  link,
  lstat,
  mkdir,
  open,
  readdir,
  symlink,
  truncate,
  utimes,
  writeFile,
} from 'node:fs/promises';
import { createServer } from 'node:net';
import { basename, join } from 'node:path';
import fc from 'fast-check';
import { setAttribute } from 'fs-xattr';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  type BackupEvent,
  type BackupOptions,
  type BackupSummary,
  backup,
} from '../../src/files/archiver.js';
import { decodeTree, type TreeEntry } from '../../src/files/tree.js';
import type { Repository } from '../../src/repo/repository.js';
import { makeRepo, type TempDir, type TestRepo, tempDir } from '../helpers.js';

const isRoot = process.getuid?.() === 0;
const hasMknod = spawnSync('mknod', ['--version']).status === 0;
/** Small chunks, so that small test files span several chunks and holes. */
const SMALL_CHUNKS = { min: 64, avg: 256, max: 1024 };

let t: TestRepo;
let d: TempDir;
let src: string;
beforeEach(async () => {
  t = await makeRepo({ chunker: SMALL_CHUNKS });
  d = await tempDir();
  src = join(d.path, 'src');
  await mkdir(src);
});
afterEach(async () => {
  await t.cleanup();
  await d.cleanup();
});

async function run(
  repo: Repository,
  paths: string[],
  opts: BackupOptions = {},
): Promise<{ summary: BackupSummary; events: BackupEvent[] }> {
  const events: BackupEvent[] = [];
  const gen = backup(repo, paths, opts);
  for (;;) {
    const next = await gen.next();
    if (next.done) return { summary: next.value, events };
    events.push(next.value);
  }
}

async function tree(repo: Repository, id: Buffer | string): Promise<Map<string, TreeEntry>> {
  const store = await repo.blobs();
  const raw = await store.get(typeof id === 'string' ? Buffer.from(id, 'hex') : id);
  return new Map(decodeTree(raw).entries.map((e) => [e.name.toString('latin1'), e]));
}

/** The entries of the directory at absolute `path` inside the snapshot with root `root`. */
async function dirAt(
  repo: Repository,
  root: string,
  path: string,
): Promise<Map<string, TreeEntry>> {
  let entries = await tree(repo, root);
  for (const name of path.split('/').filter(Boolean)) {
    const e = entries.get(Buffer.from(name).toString('latin1'));
    if (!e?.subtree) throw new Error(`${name} is not a directory in the snapshot`);
    entries = await tree(repo, e.subtree);
  }
  return entries;
}

/** Names under a repository directory (created lazily, so possibly absent). */
async function repoFiles(t: TestRepo, dir: string): Promise<string[]> {
  return readdir(join(t.repoDir, dir), { recursive: true }).catch(() => []);
}

async function content(repo: Repository, e: TreeEntry): Promise<Buffer> {
  const store = await repo.blobs();
  const parts = await Promise.all(
    (e.content ?? []).map((p) => (p.id ? store.get(p.id) : Buffer.alloc(p.length))),
  );
  return Buffer.concat(parts);
}

describe('backup: entries and metadata', () => {
  it('stores files, directories, symlinks, hardlinks and FIFOs with their metadata', async () => {
    await writeFile(join(src, 'file'), 'hello');
    await mkdir(join(src, 'dir'), { mode: 0o750 });
    await writeFile(join(src, 'dir', 'inner'), 'x'.repeat(3000));
    await symlink('dir/inner', join(src, 'link'));
    await link(join(src, 'file'), join(src, 'hard'));
    execFileSync('mkfifo', [join(src, 'fifo')]);
    await utimes(join(src, 'file'), 1_000_000_000.5, 1_234_567_890.25);
    const { summary } = await run(t.repo, [src]);

    const entries = await dirAt(t.repo, summary.root, src);
    expect([...entries.keys()]).toEqual(['dir', 'fifo', 'file', 'hard', 'link']);
    const st = await lstat(join(src, 'file'), { bigint: true });
    const file = entries.get('file')!;
    expect(file).toMatchObject({
      type: 'file',
      size: 5,
      mode: Number(st.mode & 0o7777n),
      uid: Number(st.uid),
      gid: Number(st.gid),
      mtimeNs: st.mtimeNs,
      ctimeNs: st.ctimeNs,
      inode: Number(st.ino),
      device: Number(st.dev),
      nlink: 2,
    });
    expect(file.mtimeNs).toBe(1_234_567_890_250_000_000n);
    expect((await content(t.repo, file)).toString()).toBe('hello');
    const hard = entries.get('hard')!;
    expect([hard.inode, hard.nlink, hard.content]).toEqual([file.inode, 2, file.content]);
    expect(entries.get('link')).toMatchObject({
      type: 'symlink',
      target: Buffer.from('dir/inner'),
    });
    expect(entries.get('fifo')).toMatchObject({ type: 'fifo', size: 0 });
    expect(entries.get('dir')).toMatchObject({ type: 'dir', mode: 0o750 });
    const inner = (await dirAt(t.repo, summary.root, join(src, 'dir'))).get('inner')!;
    expect((await content(t.repo, inner)).toString()).toBe('x'.repeat(3000));
    expect(inner.content!.length).toBeGreaterThan(1);
    // The hardlinked file was read once.
    expect(summary.bytesRead).toBe(3005);
    expect(summary).toMatchObject({ filesNew: 5, totalFilesProcessed: 5, errors: 0 });
  });

  it('records user names from /etc/passwd', async () => {
    await writeFile(join(src, 'f'), '');
    const { summary } = await run(t.repo, [src]);
    const f = (await dirAt(t.repo, summary.root, src)).get('f')!;
    const me = process.getuid?.() === 0 ? 'root' : undefined;
    if (me) expect([f.user, f.group]).toEqual(['root', 'root']);
    else expect(typeof f.user).toBe('string');
  });

  it.skipIf(!isRoot || !hasMknod)(
    'stores owners, device nodes and ACLs (needs root and mknod)',
    async () => {
      await writeFile(join(src, 'owned'), 'o');
      await chown(join(src, 'owned'), 4321, 8765);
      execFileSync('mknod', [join(src, 'null'), 'c', '1', '3']);
      execFileSync('mknod', [join(src, 'loop'), 'b', '7', '200']);
      const acl = posixAcl([
        [0x01, 6, -1],
        [0x02, 4, 1000],
        [0x04, 4, -1],
        [0x10, 6, -1],
        [0x20, 4, -1],
      ]);
      await setAttribute(join(src, 'owned'), 'system.posix_acl_access', acl);
      await setAttribute(join(src, 'owned'), 'user.note', 'kept');
      const { summary } = await run(t.repo, [src]);
      const entries = await dirAt(t.repo, summary.root, src);
      expect(entries.get('owned')).toMatchObject({ uid: 4321, gid: 8765, user: '', group: '' });
      expect(entries.get('owned')!.xattrs.map((x) => x.name.toString())).toEqual([
        'system.posix_acl_access',
        'user.note',
      ]);
      expect(entries.get('owned')!.xattrs[0]!.value).toEqual(acl);
      const rdev = (p: string) => lstat(join(src, p)).then((s) => s.rdev);
      expect(entries.get('null')).toMatchObject({ type: 'chardev', rdev: await rdev('null') });
      expect(entries.get('loop')).toMatchObject({ type: 'blockdev', rdev: await rdev('loop') });
    },
  );

  it('skips sockets with a note, not an error', async () => {
    const server = createServer();
    await new Promise<void>((r) => server.listen(join(src, 'sock'), r));
    await writeFile(join(src, 'f'), 'f');
    try {
      const { summary, events } = await run(t.repo, [src]);
      expect(events).toContainEqual({
        type: 'skipped',
        path: Buffer.from(join(src, 'sock')),
        reason: 'socket',
      });
      expect(summary.errors).toBe(0);
      expect([...(await dirAt(t.repo, summary.root, src)).keys()]).toEqual(['f']);
    } finally {
      server.close();
    }
  });

  it('keeps names that are not UTF-8, contain newlines or start with a dash', async () => {
    const odd = [Buffer.from([0x66, 0xff, 0xfe]), Buffer.from('new\nline'), Buffer.from('-rf')];
    for (const [i, name] of odd.entries()) {
      await writeFile(Buffer.concat([Buffer.from(`${src}/`), name]), `content ${i}`);
    }
    const { summary } = await run(t.repo, [src]);
    const entries = await dirAt(t.repo, summary.root, src);
    for (const [i, name] of odd.entries()) {
      const e = entries.get(name.toString('latin1'));
      expect(e?.name).toEqual(name);
      expect((await content(t.repo, e!)).toString()).toBe(`content ${i}`);
    }
  });

  it('records runs of zeros as holes', async () => {
    const f = join(src, 'sparse');
    const fh = await open(f, 'w');
    await fh.write(Buffer.alloc(500, 1), 0, 500, 0);
    await fh.write(Buffer.alloc(500, 2), 0, 500, 100_000);
    await fh.close();
    await truncate(f, 200_000);
    const { summary } = await run(t.repo, [src]);
    const e = (await dirAt(t.repo, summary.root, src)).get('sparse')!;
    const holes = e.content!.filter((p) => p.id === null);
    expect(holes.length).toBeGreaterThanOrEqual(2);
    expect(holes.reduce((n, p) => n + p.length, 0)).toBeGreaterThan(190_000);
    // Adjacent holes are merged into one part.
    e.content!.forEach((p, i) => {
      if (i > 0) expect(p.id === null && e.content![i - 1]!.id === null).toBe(false);
    });
    const bytes = await content(t.repo, e);
    expect(bytes.length).toBe(200_000);
    expect(bytes.subarray(100_000, 100_500)).toEqual(Buffer.alloc(500, 2));
    expect(summary.totalBytesProcessed).toBe(200_000);
  });
});

/** A binary system.posix_acl_* value: version 2, then (tag u16, perm u16, id u32) entries. */
function posixAcl(entries: [number, number, number][]): Buffer {
  const out = Buffer.alloc(4 + 8 * entries.length);
  out.writeUInt32LE(2, 0);
  entries.forEach(([tag, perm, id], i) => {
    out.writeUInt16LE(tag, 4 + 8 * i);
    out.writeUInt16LE(perm, 6 + 8 * i);
    out.writeUInt32LE(id >>> 0, 8 + 8 * i);
  });
  return out;
}

describe('backup: paths', () => {
  it('stores absolute paths with the real metadata of each ancestor', async () => {
    await writeFile(join(src, 'f'), 'f');
    const { summary } = await run(t.repo, [src]);
    const parent = (await dirAt(t.repo, summary.root, d.path)).get('src')!;
    const above = (await dirAt(t.repo, summary.root, join(d.path, '..'))).get(basename(d.path))!;
    const st = await lstat(d.path, { bigint: true });
    expect(above).toMatchObject({
      type: 'dir',
      mode: Number(st.mode & 0o7777n),
      mtimeNs: st.mtimeNs,
    });
    // Only the way down: the ancestor holds the source directory and nothing else.
    expect([...(await dirAt(t.repo, summary.root, d.path)).keys()]).toEqual(['src']);
    expect(parent.type).toBe('dir');
    const snaps = await t.repo.listSnapshots();
    expect(snaps.map((s) => s.paths)).toEqual([[src]]);
  });

  it('merges several paths into one root tree and sorts them', async () => {
    await mkdir(join(src, 'a', 'x'), { recursive: true });
    await mkdir(join(src, 'b'));
    await writeFile(join(src, 'a', 'x', 'f'), '1');
    await writeFile(join(src, 'b', 'g'), '2');
    await writeFile(join(src, 'c'), '3');
    const paths = [join(src, 'b'), join(src, 'a', 'x'), join(src, 'c'), join(src, 'a', 'x', 'f')];
    const { summary } = await run(t.repo, paths);
    expect([...(await dirAt(t.repo, summary.root, src)).keys()]).toEqual(['a', 'b', 'c']);
    expect([...(await dirAt(t.repo, summary.root, join(src, 'a', 'x'))).keys()]).toEqual(['f']);
    const [snap] = await t.repo.listSnapshots();
    expect(snap!.paths).toEqual([...paths].sort());
    expect(summary.totalFilesProcessed).toBe(3);
  });

  it('fails before writing anything when a path does not exist', async () => {
    const gen = backup(t.repo, [src, join(d.path, 'missing')]);
    await expect(gen.next()).rejects.toMatchObject({ code: 'NotFound' });
    expect(await t.repo.listSnapshots()).toEqual([]);
    expect(await repoFiles(t, 'locks')).toEqual([]);
  });

  it('applies excludes and exclude files to absolute paths', async () => {
    await mkdir(join(src, 'cache'));
    await mkdir(join(src, 'keep'));
    await writeFile(join(src, 'cache', 'big'), 'x');
    await writeFile(join(src, 'keep', 'a.tmp'), 'x');
    await writeFile(join(src, 'keep', 'a.txt'), 'x');
    await writeFile(join(src, 'keep', 'b.bak'), 'x');
    const exFile = join(d.path, 'excludes');
    await writeFile(exFile, '# backups\n*.bak\n');
    const { summary } = await run(t.repo, [src], {
      exclude: [`${src}/cache/`, '*.tmp'],
      excludeFiles: [exFile],
    });
    expect([...(await dirAt(t.repo, summary.root, src)).keys()]).toEqual(['keep']);
    expect([...(await dirAt(t.repo, summary.root, join(src, 'keep'))).keys()]).toEqual(['a.txt']);
  });

  it.skipIf(!isRoot)(
    'does not descend into other filesystems with oneFileSystem (needs root)',
    async () => {
      const mnt = join(src, 'mnt');
      await mkdir(mnt);
      await writeFile(join(src, 'f'), 'f');
      if (spawnSync('mount', ['-t', 'tmpfs', 'none', mnt]).status !== 0) return;
      try {
        await writeFile(join(mnt, 'inside'), 'i');
        const one = await run(t.repo, [src], { oneFileSystem: true });
        const all = await run(t.repo, [src]);
        expect((await dirAt(t.repo, one.summary.root, src)).get('mnt')?.type).toBe('dir');
        expect([...(await dirAt(t.repo, one.summary.root, mnt)).keys()]).toEqual([]);
        expect([...(await dirAt(t.repo, all.summary.root, mnt)).keys()]).toEqual(['inside']);
      } finally {
        spawnSync('umount', [mnt]);
      }
    },
  );
});

describe('backup: incremental', () => {
  async function fixture() {
    await mkdir(join(src, 'same'));
    await mkdir(join(src, 'other'));
    await writeFile(join(src, 'same', 'a'), 'a'.repeat(2000));
    await writeFile(join(src, 'other', 'b'), 'b'.repeat(1000));
    await writeFile(join(src, 'c'), 'c'.repeat(500));
  }

  it('reuses unchanged files without reading them and keeps unchanged tree IDs', async () => {
    await fixture();
    const first = await run(t.repo, [src]);
    expect(first.summary).toMatchObject({ filesNew: 3, bytesRead: 3500 });
    await writeFile(join(src, 'other', 'b'), 'B'.repeat(1500));
    const second = await run(t.repo, [src]);
    expect(second.summary).toMatchObject({
      parent: first.summary.snapshotId,
      filesNew: 0,
      filesChanged: 1,
      filesUnmodified: 2,
      bytesRead: 1500,
      totalBytesProcessed: 4000,
    });
    const before = await dirAt(t.repo, first.summary.root, src);
    const after = await dirAt(t.repo, second.summary.root, src);
    expect(after.get('same')!.subtree).toEqual(before.get('same')!.subtree);
    expect(after.get('other')!.subtree).not.toEqual(before.get('other')!.subtree);
    const b = (await dirAt(t.repo, second.summary.root, join(src, 'other'))).get('b')!;
    expect((await content(t.repo, b)).toString()).toBe('B'.repeat(1500));
    const [, snap] = (await t.repo.listSnapshots()).sort((x, y) => x.time.localeCompare(y.time));
    expect(snap).toMatchObject({ parent: first.summary.snapshotId, size: 4000, kind: 'files' });

    const third = await run(t.repo, [src]);
    expect(third.summary).toMatchObject({ filesUnmodified: 3, bytesRead: 0, dataBlobs: 0 });
    expect(third.summary.dirsUnmodified).toBeGreaterThanOrEqual(3);
    const sameRoot = await dirAt(t.repo, third.summary.root, src);
    expect(sameRoot.get('other')!.subtree).toEqual(after.get('other')!.subtree);
  });

  it('re-reads everything with force, and detects an in-place change', async () => {
    await fixture();
    await run(t.repo, [src]);
    const forced = await run(t.repo, [src], { force: true });
    expect(forced.summary).toMatchObject({ bytesRead: 3500, filesUnmodified: 3, dataBlobs: 0 });
    // Same size, new bytes: mtime and ctime move, so the file is read again.
    await writeFile(join(src, 'c'), 'C'.repeat(500));
    const changed = await run(t.repo, [src]);
    expect(changed.summary).toMatchObject({ filesChanged: 1, bytesRead: 500 });
  });

  it('picks the parent by host and paths, or as given', async () => {
    await fixture();
    const a = await run(t.repo, [src], { host: 'alpha' });
    const b = await run(t.repo, [src], { host: 'beta' });
    expect(b.summary.parent).toBeUndefined();
    expect(b.summary.bytesRead).toBe(3500);
    const c = await run(t.repo, [src], { host: 'beta', parent: a.summary.snapshotId!.slice(0, 8) });
    expect(c.summary).toMatchObject({ parent: a.summary.snapshotId, bytesRead: 0 });
    const other = await run(t.repo, [join(src, 'same')], { host: 'alpha' });
    expect(other.summary.parent).toBeUndefined();
  });

  it('stores nothing on a dry run', async () => {
    await fixture();
    const packsBefore = await repoFiles(t, 'data');
    const dry = await run(t.repo, [src], { dryRun: true });
    expect(dry.summary).toMatchObject({ dryRun: true, filesNew: 3 });
    expect(dry.summary.snapshotId).toBeUndefined();
    expect(dry.summary.dataBlobs).toBeGreaterThan(0);
    expect(dry.summary.treeBlobs).toBeGreaterThan(0);
    expect(await t.repo.listSnapshots()).toEqual([]);
    expect(await repoFiles(t, 'data')).toEqual(packsBefore);
    expect(await repoFiles(t, 'index')).toEqual([]);
    // A real backup afterwards stores exactly what the dry run counted.
    const real = await run(t.repo, [src]);
    expect(real.summary.dataBlobs).toBe(dry.summary.dataBlobs);
    expect(real.summary.treeBlobs).toBe(dry.summary.treeBlobs);
  });

  it('stops cleanly when aborted: no snapshot, stored data indexed, next backup works', async () => {
    for (let i = 0; i < 50; i++) await writeFile(join(src, `f${i}`), `${i}`.repeat(3000));
    const ac = new AbortController();
    const gen = backup(t.repo, [src], { signal: ac.signal, progressIntervalMs: 1 });
    ac.abort();
    await expect(
      (async () => {
        for (;;) if ((await gen.next()).done) return;
      })(),
    ).rejects.toMatchObject({ code: 'Interrupted' });
    expect(await t.repo.listSnapshots()).toEqual([]);
    expect(await repoFiles(t, 'locks')).toEqual([]);
    const again = await run(t.repo, [src]);
    expect(again.summary.filesNew).toBe(50);
    const e = (await dirAt(t.repo, again.summary.root, src)).get('f7')!;
    expect((await content(t.repo, e)).toString()).toBe('7'.repeat(3000));
  });

  it('stops and releases the lock when the consumer stops listening', async () => {
    await fixture();
    const server = createServer();
    await new Promise<void>((r) => server.listen(join(src, 'sock'), r));
    try {
      const gen = backup(t.repo, [src]);
      expect((await gen.next()).value).toMatchObject({ type: 'skipped' });
      expect(await repoFiles(t, 'locks')).toHaveLength(1);
      await gen.return(undefined as never);
      expect(await repoFiles(t, 'locks')).toEqual([]);
      expect(await t.repo.listSnapshots()).toEqual([]);
    } finally {
      server.close();
    }
  });
});

describe('backup: property', () => {
  /** A name: 1–8 bytes, any but NUL and '/', never '.' or '..'. */
  const nameArb = fc
    .uint8Array({ minLength: 1, maxLength: 8 })
    .map((a) => Buffer.from(a.map((x) => (x === 0 || x === 0x2f ? 0x41 : x))))
    .filter((n) => n.toString('latin1') !== '.' && n.toString('latin1') !== '..');
  type Node = { name: Buffer; data?: Uint8Array; children?: Node[] };
  const treeArb = fc.letrec<{ dir: Node[] }>((tie) => ({
    dir: fc.uniqueArray(
      fc.oneof(
        {
          weight: 3,
          arbitrary: fc.record({ name: nameArb, data: fc.uint8Array({ maxLength: 3000 }) }),
        },
        { weight: 1, arbitrary: fc.record({ name: nameArb, children: tie('dir') }) },
      ),
      { maxLength: 5, selector: (n) => n.name.toString('latin1') },
    ),
  })).dir;

  async function create(dir: Buffer, nodes: Node[]) {
    for (const n of nodes) {
      const path = Buffer.concat([dir, Buffer.from('/'), n.name]);
      if (n.children) {
        await mkdir(path);
        await create(path, n.children);
      } else await writeFile(path, n.data!);
    }
  }

  async function check(repo: Repository, id: Buffer, nodes: Node[]) {
    const entries = await tree(repo, id);
    expect([...entries.keys()].sort()).toEqual(nodes.map((n) => n.name.toString('latin1')).sort());
    for (const n of nodes) {
      const e = entries.get(n.name.toString('latin1'))!;
      if (n.children) await check(repo, e.subtree!, n.children);
      else {
        expect(e.size).toBe(n.data!.length);
        expect(await content(repo, e)).toEqual(Buffer.from(n.data!));
      }
    }
  }

  it('any small tree backs up and reads back with the same names and bytes', async () => {
    let run_ = 0;
    await fc.assert(
      fc.asyncProperty(treeArb, async (nodes) => {
        const dir = join(d.path, `p${run_++}`);
        await mkdir(dir);
        await create(Buffer.from(dir), nodes);
        const { summary } = await run(t.repo, [dir]);
        const parent = await dirAt(t.repo, summary.root, d.path);
        await check(t.repo, parent.get(basename(dir))!.subtree!, nodes);
      }),
      { numRuns: 25 },
    );
  });
});
