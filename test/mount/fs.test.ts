import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { mkdir, symlink, writeFile } from 'node:fs/promises';
import { constants as osConstants } from 'node:os';
import { join } from 'node:path';
import { setAttribute } from 'fs-xattr';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { imageBackup } from '../../src/image/index.js';
import { ChunkCache, repositoryChunks } from '../../src/mount/content.js';
import { SnapshotFs } from '../../src/mount/fs.js';
import { SnapshotList } from '../../src/mount/layout.js';
import type { ByteRange } from '../../src/repo/backend/backend.js';
import { LocalBackend } from '../../src/repo/backend/local.js';
import { Repository } from '../../src/repo/repository.js';
import { snapshotDir } from '../files/build-snapshot.js';
import { makeRepo, PassThroughBackend, type TempDir, type TestRepo, tempDir } from '../helpers.js';
import { SMALL_CHUNKER } from '../image/util.js';

const E = osConstants.errno;

let t: TestRepo;
let d: TempDir;
let src: string;
let content: Buffer;
/** The repository as a mount sees it: another instance, with its own index view slot. */
let mounted: Repository;

/** A SnapshotFs over `mounted`, with its chunk cache. */
async function snapshotFs(refreshMs: number) {
  const store = await mounted.blobs();
  const notices: string[] = [];
  const list = new SnapshotList(mounted, { refreshMs, onNotice: (m) => notices.push(m) });
  const cache = new ChunkCache((id) => store.get(id), 16 << 20);
  return { fs: new SnapshotFs(store, list, cache), cache, notices };
}

/** A backend that counts its reads of pack data. */
class CountingBackend extends PassThroughBackend {
  packReads = 0;

  override read(name: string, range?: ByteRange) {
    if (name.startsWith('data/')) this.packReads++;
    return super.read(name, range);
  }
}

async function readAll(fs: SnapshotFs, path: string): Promise<Buffer> {
  const { size } = await fs.getattr(path);
  const fh = await fs.open(path, constants.O_RDONLY);
  const buf = Buffer.alloc(size);
  expect(await fs.read(fh, buf, size, 0)).toBe(size);
  fs.release(fh);
  return buf;
}

beforeAll(async () => {
  t = await makeRepo({ encryption: false, chunker: SMALL_CHUNKER });
  d = await tempDir();
  src = join(d.path, 'src');
  await mkdir(join(src, 'dir'), { recursive: true });
  content = Buffer.concat([randomBytes(100_000), Buffer.alloc(200_000), randomBytes(50_000)]);
  await writeFile(join(src, 'dir/file'), content);
  await setAttribute(join(src, 'dir/file'), 'user.note', Buffer.from('hello'));
  await symlink('dir/file', join(src, 'link'));
  await snapshotDir(t.repo, src, { chunkSize: 32 << 10, hostname: 'h', tags: ['x'] });
  mounted = await t.reopen();
});

afterAll(async () => {
  await t.cleanup();
  await d.cleanup();
});

describe('SnapshotFs', () => {
  it('answers stat, listing, readlink, read and xattrs from the snapshot', async () => {
    const { fs, cache } = await snapshotFs(60_000);
    const [name] = (await fs.readdir('/snapshots')).filter(
      (n) => !['.', '..', 'latest'].includes(n),
    );
    const base = `/snapshots/${name}${src}`;
    expect(await fs.readdir(base)).toEqual(['.', '..', 'dir', 'link']);
    expect(await fs.readlink(`${base}/link`)).toBe('dir/file');
    expect(await fs.readlink('/snapshots/latest')).toBe(name);
    const attr = await fs.getattr(`${base}/dir/file`);
    expect(attr).toMatchObject({ mode: constants.S_IFREG | 0o644, size: content.length });
    // The 200 000 zeros are holes: fewer blocks than bytes.
    expect(attr.blocks * 512).toBeLessThan(content.length);
    expect((await readAll(fs, `${base}/dir/file`)).equals(content)).toBe(true);
    const chunks = cache.fetches;
    expect(chunks).toBeLessThan(Math.ceil(content.length / (32 << 10)));
    expect(await fs.listxattr(`${base}/dir/file`)).toEqual(['user.note']);
    expect((await fs.getxattr(`${base}/dir/file`, 'user.note'))?.toString()).toBe('hello');
    expect(await fs.getxattr(`${base}/dir/file`, 'user.none')).toBeUndefined();
    expect(await fs.getattr('/tags/x/latest')).toMatchObject({ mode: constants.S_IFLNK | 0o777 });
  });

  it('answers errors as errno values', async () => {
    const { fs } = await snapshotFs(60_000);
    const errno = (p: Promise<unknown>) =>
      p.then(
        () => 0,
        (e: { errno: number }) => e.errno,
      );
    const id = (await fs.readdir('/ids')).find((n) => !n.startsWith('.'));
    const dir = `/ids/${id}${src}/dir`;
    const file = `${dir}/file`;
    expect(await errno(fs.getattr('/nothing'))).toBe(E.ENOENT);
    expect(await errno(fs.getattr(`${dir}/nothing`))).toBe(E.ENOENT);
    expect(await errno(fs.getattr('/snapshots/latest/x'))).toBe(E.ENOTDIR);
    expect(await errno(fs.getattr(`${file}/below`))).toBe(E.ENOTDIR);
    expect(await errno(fs.readdir(file))).toBe(E.ENOTDIR);
    expect(await errno(fs.open(file, constants.O_WRONLY))).toBe(E.EROFS);
    expect(await errno(fs.open(file, constants.O_RDWR))).toBe(E.EROFS);
    expect(await errno(fs.open(dir, constants.O_RDONLY))).toBe(E.EISDIR);
    expect(await errno(fs.readlink(file))).toBe(E.EINVAL);
    expect(await errno(fs.read(9999, Buffer.alloc(1), 1, 0))).toBe(E.EBADF);
  });

  it('shows a snapshot saved by another process after the refresh interval, blobs found', async () => {
    const { fs } = await snapshotFs(0);
    const slow = await snapshotFs(60_000);
    const count = async (s: SnapshotFs) => (await s.readdir('/ids')).length;
    const before = await count(fs);
    expect(await count(slow.fs)).toBe(before);
    const other = join(d.path, 'other');
    await mkdir(other);
    const fresh = randomBytes(300_000);
    await writeFile(join(other, 'new'), fresh);
    const snap = await snapshotDir(t.repo, other, { chunkSize: 32 << 10 });
    expect(await count(fs)).toBe(before + 1);
    expect(await count(slow.fs)).toBe(before);
    const shown = await readAll(fs, `/ids/${snap.id.slice(0, 8)}${other}/new`);
    expect(shown.equals(fresh)).toBe(true);
  });

  it('shows an image snapshot as <name>.img, its zero runs read without fetching', async () => {
    const data = Buffer.concat([randomBytes(70_000), Buffer.alloc(1 << 20), randomBytes(9)]);
    await writeFile(join(d.path, 'disk'), data);
    const { snapshotId } = await imageBackup(t.repo, join(d.path, 'disk'), { name: 'vm/disk' });
    const { fs, cache } = await snapshotFs(0);
    const dir = `/ids/${snapshotId.slice(0, 8)}`;
    expect(await fs.readdir(dir)).toEqual(['.', '..', 'vm\\x2fdisk.img']);
    const img = `${dir}/vm\\x2fdisk.img`;
    expect(await fs.getattr(img)).toMatchObject({
      mode: constants.S_IFREG | 0o400,
      size: data.length,
    });
    const fh = await fs.open(img, constants.O_RDONLY);
    const buf = Buffer.alloc(100_000);
    const fetched = cache.fetches;
    expect(await fs.read(fh, buf, buf.length, 500_000)).toBe(buf.length);
    expect(buf.equals(Buffer.alloc(buf.length))).toBe(true);
    expect(cache.fetches).toBe(fetched);
    expect((await readAll(fs, img)).equals(data)).toBe(true);
  });

  it('reads a large file from start to end in far fewer backend reads than it has chunks', async () => {
    const dir = join(d.path, 'large');
    await mkdir(dir);
    const data = randomBytes(6 << 20);
    await writeFile(join(dir, 'file'), data);
    const chunk = 32 << 10;
    const snap = await snapshotDir(t.repo, dir, { chunkSize: chunk });
    const backend = new CountingBackend(new LocalBackend(t.repoDir));
    const repo = await Repository.open(backend, { cacheDir: t.cacheDir });
    try {
      const store = await repo.blobs();
      const list = new SnapshotList(repo, { refreshMs: 60_000, onNotice: () => undefined });
      const fs = new SnapshotFs(store, list, repositoryChunks(backend, store, 64 << 20));
      const fh = await fs.open(`/ids/${snap.id.slice(0, 8)}${dir}/file`, constants.O_RDONLY);
      const got = Buffer.alloc(data.length);
      const before = backend.packReads;
      // As the kernel asks: 128 KiB at a time.
      for (let at = 0; at < data.length; at += 128 << 10) {
        expect(await fs.read(fh, got.subarray(at), 128 << 10, at)).toBe(128 << 10);
      }
      fs.release(fh);
      expect(got.equals(data)).toBe(true);
      // 192 chunks: read ahead a window at a time, a few reads per window.
      expect(backend.packReads - before).toBeLessThan(data.length / chunk / 8);
    } finally {
      await repo.close();
    }
  });
});
