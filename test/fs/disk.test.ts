import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { openImageFiles } from '../../src/fs/index.js';
import { LocalBackend } from '../../src/repo/backend/local.js';
import { Repository } from '../../src/repo/repository.js';
import type { StoredSnapshot } from '../../src/repo/snapshot.js';
import { cairn } from '../cli/run.js';
import { type TempDir, tempDir } from '../helpers.js';
import {
  assembleDisk,
  blankImage,
  hasCommand,
  isRoot,
  mkfs,
  readAll,
  sh,
  withMounted,
} from './util.js';

/*
 * A GPT disk whose partition 1 is ext4 (filled by mkfs.ext4 -d, with 32 MiB of random data),
 * partition 2 FAT16 (filled by mtools) and partition 3 NTFS (mkntfs, filled through
 * ntfs-3g), backed up and read through the CLI and the library.
 */
const SKIP =
  !isRoot ||
  !hasCommand('mkfs.ext4') ||
  !hasCommand('mkfs.vfat') ||
  !hasCommand('mkntfs') ||
  !hasCommand('ntfs-3g') ||
  !hasCommand('sfdisk');

let d: TempDir;
let env: Record<string, string>;
let repo: Repository;
let snap: StoredSnapshot;
const sources = new Map<string, Buffer>();

beforeAll(async () => {
  if (SKIP) return;
  d = await tempDir();
  env = { CAIRN_REPO: join(d.path, 'repo'), CAIRN_CACHE_DIR: join(d.path, 'cache') };
  expect((await cairn(['init', '--no-encryption'], { env })).code).toBe(0);
  const tree = join(d.path, 'ext-src');
  await mkdir(join(tree, 'etc'), { recursive: true });
  const put = async (root: string, inImage: string, rel: string, data: Buffer) => {
    await writeFile(join(root, rel), data);
    sources.set(`${inImage}/${rel}`, data);
  };
  await put(tree, '/part1', 'big.bin', randomBytes(32 << 20));
  await put(tree, '/part1', 'etc/hostname', Buffer.from('cairn-test\n'));
  await put(tree, '/part1', 'small.txt', Buffer.from('a small file\n'));
  const ext = await blankImage(d.path, 'p1.img', 48);
  mkfs('mkfs.ext4', ['-q', '-F', '-d', tree], ext);
  const fatSrc = join(d.path, 'fat-src');
  await mkdir(join(fatSrc, 'Docs'), { recursive: true });
  await put(fatSrc, '/part2', 'Docs/Read Me First.txt', Buffer.from('long name on FAT\n'));
  await put(fatSrc, '/part2', 'DATA.BIN', randomBytes(200_000));
  const fat = await blankImage(d.path, 'p2.img', 20);
  mkfs('mkfs.vfat', ['-F', '16'], fat);
  sh('mcopy', ['-i', fat, '-s', join(fatSrc, 'Docs'), join(fatSrc, 'DATA.BIN'), '::/']);
  const ntfs = await blankImage(d.path, 'p3.img', 16);
  mkfs('mkntfs', ['-q', '-F', '-Q'], ntfs);
  const ntfsFiles: [string, Buffer][] = [
    ['Program Files/app.ini', Buffer.from('[ntfs]\nlong = names\n')],
    ['pagefile.bin', randomBytes(300_000)],
  ];
  await withMounted(ntfs, 'ntfs-3g', async (dir) => {
    await mkdir(join(dir, 'Program Files'));
    for (const [rel, data] of ntfsFiles) await put(dir, '/part3', rel, data);
  });
  const disk = await assembleDisk(d.path, 'disk.img', [ext, fat, ntfs]);
  expect((await cairn(['image', disk.path, '-q'], { env })).code).toBe(0);
  repo = await Repository.open(new LocalBackend(env.CAIRN_REPO!), {
    cacheDir: join(d.path, 'lib-cache'),
    password: async () => '',
  });
  snap = (await repo.listSnapshots())[0]!;
});
afterAll(async () => {
  await repo?.close();
  await d?.cleanup();
});

async function ok(args: string[]) {
  const r = await cairn(args, { env });
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  return r;
}

describe.skipIf(SKIP)('a partitioned disk image', () => {
  it('shows each partition as part<N>/ with its files', async () => {
    const { files, volumes } = await openImageFiles(repo, snap);
    expect(volumes.map((v) => [v.partition, v.type])).toEqual([
      [1, 'ext4'],
      [2, 'fat16'],
      [3, 'ntfs'],
    ]);
    expect((await files!.readdir('/')).map((e) => e.name.toString())).toEqual([
      'part1',
      'part2',
      'part3',
    ]);
    for (const [path, data] of sources)
      expect((await readAll(files!, path)).equals(data)).toBe(true);
  });

  it('reads one small file of a large image by fetching a few chunks', async () => {
    const store = await repo.blobs();
    const gets = vi.spyOn(store, 'get');
    try {
      const { files } = await openImageFiles(repo, snap);
      const opening = gets.mock.calls.length;
      gets.mockClear();
      expect((await readAll(files!, '/part1/etc/hostname')).toString()).toBe('cairn-test\n');
      // The manifest's segments, then the chunks holding the group descriptors, inodes,
      // directory blocks and the file: a handful of the image's ~60 chunks.
      expect(snap.summary!.chunks_total).toBeGreaterThan(50);
      expect(opening).toBeLessThanOrEqual(8);
      expect(gets.mock.calls.length).toBeLessThanOrEqual(4);
    } finally {
      gets.mockRestore();
    }
  });

  it('ls lists the partitions, then the files inside them', async () => {
    const text = (await ok(['ls', 'latest'])).stdout.split('\n');
    expect(text[0]).toMatch(/^image disk\.img, /);
    expect(text[1]).toBe('partition table: gpt');
    expect(text[2]).toMatch(/^ {2}part1 .* ext4$/);
    expect(text[3]).toMatch(/^ {2}part2 .* fat16$/);
    expect(text[4]).toMatch(/^ {2}part3 .* ntfs$/);
    expect(text.slice(5, -1)).toEqual([
      '/part1',
      '/part1/big.bin',
      '/part1/etc',
      '/part1/etc/hostname',
      '/part1/lost+found',
      '/part1/small.txt',
      '/part2',
      '/part2/DATA.BIN',
      '/part2/Docs',
      '/part2/Docs/Read Me First.txt',
      '/part3',
      '/part3/Program Files',
      '/part3/Program Files/app.ini',
      '/part3/pagefile.bin',
    ]);
    const long = (await ok(['ls', '-l', 'latest', '/part1/small.txt'])).stdout;
    expect(long).toMatch(
      /^-rw-r--r-- 0\/0 +13 \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \/part1\/small\.txt\n$/,
    );
    const json = (await ok(['ls', '--json', 'latest'])).stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(json[0]).toMatchObject({ type: 'image', name: 'disk.img', partition_table: 'gpt' });
    expect(json[0].partitions.map((p: { filesystem: string }) => p.filesystem)).toEqual([
      'ext4',
      'fat16',
      'ntfs',
    ]);
    expect(json.find((e) => e.path === '/part2/DATA.BIN')).toMatchObject({
      type: 'file',
      size: 200_000,
      mode: 0o644,
      uid: 0,
    });
  });

  it('cat prints one file inside the image', async () => {
    const r = await ok(['cat', 'latest', '/part2/Docs/Read Me First.txt']);
    expect(r.stdout).toBe('long name on FAT\n');
    const missing = await cairn(['cat', 'latest', '/part2/nope'], { env });
    expect(missing.code).toBe(1);
    expect(missing.stderr).toBe('cairn: /part2/nope not found\n');
  });

  it('restore --files extracts the selected files', async () => {
    const target = join(d.path, 'restored');
    await ok([
      'restore',
      'latest',
      '--files',
      '--include',
      '/part2/Docs',
      '--target',
      target,
      '-q',
    ]);
    const got = await readFile(join(target, 'part2/Docs/Read Me First.txt'));
    expect(got.toString()).toBe('long name on FAT\n');
    const usage = await cairn(['restore', 'latest', '--include', '/x', '--target', target], {
      env,
    });
    expect(usage.stderr).toMatch(/add --files/);
  });
});

describe.skipIf(SKIP)('an image without a filesystem cairn reads', () => {
  it('is listed as before, and its files cannot be asked for', async () => {
    const img = join(d.path, 'raw.img');
    await writeFile(img, randomBytes(100_000));
    await ok(['image', img, '-q']);
    const ls = await ok(['ls', 'latest', '--name', 'raw.img']);
    expect(ls.stdout).toBe('image raw.img, 97.7 KiB (100000 bytes)\n');
    const cat = await cairn(['cat', 'latest', '--name', 'raw.img', '/etc/passwd'], { env });
    expect(cat.code).toBe(1);
    expect(cat.stderr).toMatch(/no readable filesystem in image snapshot \w+: no filesystem cairn/);
    const args = [
      'restore',
      'latest',
      '--name',
      'raw.img',
      '--files',
      '--target',
      join(d.path, 'x'),
    ];
    expect((await cairn(args, { env })).stderr).toMatch(/no readable filesystem/);
  });
});
