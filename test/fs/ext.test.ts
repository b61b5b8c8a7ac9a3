import { lstat, open, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { extractFiles, type ImageFiles, openImageFiles } from '../../src/fs/index.js';
import { imageBackup } from '../../src/image/index.js';
import { makeRepo, type TempDir, type TestRepo, tempDir } from '../helpers.js';
import {
  assembleDisk,
  blankImage,
  describeDir,
  describeFs,
  type EntryInfo,
  expectSameEntries,
  hasCommand,
  isRoot,
  makeSourceTree,
  mkfs,
  readAll,
  sh,
  snapshotById,
  withMounted,
} from './util.js';

/** 5 GiB and a little: past 32-bit sizes, and (1 KiB blocks) through triple indirection. */
const HUGE = 5 * 2 ** 30 + 4;
const HUGE_MARKS: [number, string][] = [
  [0, 'head'],
  [100 << 20, 'mid!'],
  [HUGE - 4, 'tail'],
];

/**
 * The filesystems under test, each made by mkfs and filled by the kernel (cp -a through a
 * loop mount), are the partitions of one disk image: one backup covers them all.
 */
const VARIANTS = [
  { label: 'ext4', mkfs: 'mkfs.ext4', args: [], type: 'ext4' },
  { label: 'ext4 with inline_data', mkfs: 'mkfs.ext4', args: ['-O', 'inline_data'], type: 'ext4' },
  { label: 'ext3', mkfs: 'mkfs.ext3', args: [], type: 'ext3' },
  { label: 'ext2 with 1 KiB blocks', mkfs: 'mkfs.ext2', args: ['-b', '1024'], type: 'ext2' },
];
const part = (label: string) => `/part${VARIANTS.findIndex((v) => v.label === label) + 1}`;
const EXACT = {
  mtimeNs: 1n,
  owners: true,
  modes: true,
  dirTimes: true,
  ignore: ['lost+found', 'huge.sparse', 'prealloc.bin'],
};

let t: TestRepo;
let d: TempDir;
let expected: Map<string, EntryInfo>;
let src: string;
let disk: { path: string; starts: number[] };
let image: ImageFiles;

const SKIP = !isRoot || !hasCommand('mkfs.ext4') || !hasCommand('debugfs') || !hasCommand('sfdisk');

beforeAll(async () => {
  if (SKIP) return;
  t = await makeRepo({ encryption: false });
  d = await tempDir();
  src = await makeSourceTree(d.path, { special: true, owners: true, bigDir: 150, holes: true });
  expected = await describeDir(src);
  const parts: string[] = [];
  for (const v of VARIANTS) parts.push(await makeImage(v.label, v.mkfs, v.args));
  disk = await assembleDisk(d.path, 'disk.img', parts);
  // --used-only: what no filesystem uses is not even read, and no file may need it.
  const s = await imageBackup(t.repo, disk.path, { usedOnly: true });
  image = await openImageFiles(t.repo, await snapshotById(t.repo, s.snapshotId));
});
afterAll(async () => {
  await t?.cleanup();
  await d?.cleanup();
});

const imageName = (label: string) => `${label.replace(/\W+/g, '-')}.img`;

async function makeImage(label: string, cmd: string, args: string[]): Promise<string> {
  const path = await blankImage(d.path, imageName(label), 16);
  mkfs(cmd, ['-q', '-F', ...args], path);
  await withMounted(path, 'loop', async (dir) => {
    sh('cp', ['-a', '--sparse=always', `${src}/.`, dir]);
    const fh = await open(join(dir, 'huge.sparse'), 'w');
    for (const [at, text] of HUGE_MARKS) await fh.write(Buffer.from(text), 0, 4, at);
    await fh.close();
    if (cmd === 'mkfs.ext4') {
      // Preallocated (unwritten) extents, but for the first block.
      const pre = join(dir, 'prealloc.bin');
      sh('fallocate', ['-l', '1M', pre]);
      sh('dd', [`of=${pre}`, 'conv=notrunc', 'status=none'], 'data');
    }
  });
  if (cmd === 'mkfs.ext4') await staleUnwritten(path);
  return path;
}

/** Fills prealloc.bin's unwritten blocks with stale bytes, which must still read as zeros. */
async function staleUnwritten(path: string): Promise<void> {
  // debugfs shows an unwritten extent as `(1-1023[u]):14338-15360`.
  const stat = sh('debugfs', ['-R', 'stat /prealloc.bin', path]);
  const [, first, last] = /\(\d+-\d+\[u\]\):(\d+)-(\d+)/.exec(stat)!;
  const blockSize = Number(/^Block size:\s+(\d+)/m.exec(sh('dumpe2fs', ['-h', path]))![1]);
  const stale = Buffer.alloc((Number(last) - Number(first) + 1) * blockSize, 0xaa);
  const fh = await open(path, 'r+');
  try {
    await fh.write(stale, 0, stale.length, Number(first) * blockSize);
  } finally {
    await fh.close();
  }
}

describe.skipIf(SKIP)('ext2/3/4 inside an image snapshot', () => {
  it('finds each partition and its filesystem', () => {
    expect(image.volumes.map((v) => [v.partition, v.type, v.note])).toEqual(
      VARIANTS.map((v, i) => [i + 1, v.type, undefined]),
    );
  });

  it.each(VARIANTS)('$label: entries, metadata and content match the source', async (v) => {
    // Exact to the nanosecond, with owners (32-bit IDs), modes and directory times.
    expectSameEntries(expected, await describeFs(image.files!, part(v.label)), EXACT);
  });

  it('ext4: files are extracted with their metadata', async () => {
    const out = join(d.path, 'ext4-out');
    const opts = {
      include: ['/part1'],
      exclude: ['/part1/huge.sparse', '/part1/prealloc.bin'],
      verify: true,
    };
    const summary = await drain(extractFiles(image.files!, out, opts));
    const files = [...expected].filter(([k, e]) => e.type === 'file' && (e.linkOf ?? k) === k);
    expect(summary).toMatchObject({ errors: 0, filesVerified: files.length });
    // Restored times are exact to the microsecond (utimes), the rest exactly.
    expectSameEntries(expected, await describeDir(join(out, 'part1')), {
      ...EXACT,
      mtimeNs: 1000n,
    });
  });

  it('ext2 with 1 KiB blocks: a 5 GiB sparse file through triple indirect blocks', async () => {
    const path = `${part('ext2 with 1 KiB blocks')}/huge.sparse`;
    const file = await image.files!.open(path);
    expect(file.stat.size).toBe(HUGE);
    await expectHugeMarks((at) => file.read(at, 4));
    const out = join(d.path, 'huge-out');
    const summary = await drain(extractFiles(image.files!, out, { include: [path] }));
    expect(summary).toMatchObject({ errors: 0, filesRestored: 1, bytesRestored: HUGE });
    const huge = join(out, path);
    expect((await lstat(huge)).size).toBe(HUGE);
    expect((await lstat(huge)).blocks).toBeLessThan(1024);
    await expectHugeMarks((at) => readAt(huge, at));
  });

  it('reads inline data, deep extent trees, htree directories and holes as such', async () => {
    const p = part('ext4 with inline_data');
    const files = image.files!;
    // The filesystem really has what the reader is meant to handle.
    const part2 = join(d.path, imageName('ext4 with inline_data'));
    expect(sh('debugfs', ['-R', 'htree /many', part2])).toMatch(/Root node dump/);
    expect(sh('debugfs', ['-R', 'ex /holes.bin', part2])).toMatch(/^\s*0\/\s*1\s/m);
    expect((await files.extents(`${p}/small.txt`)).map((e) => e.kind)).toEqual(['inline']);
    const holes = await files.extents(`${p}/holes.bin`);
    expect(holes.filter((e) => e.kind === 'data').length).toBeGreaterThan(4);
    expect(holes.filter((e) => e.kind === 'hole').length).toBeGreaterThan(4);
    expect(holes.reduce((n, e) => n + e.length, 0)).toBe(4 << 20);
    // Data extents name bytes of the whole image: reading them there gives the file.
    const diskBytes = await readFile(disk.path);
    const fromExtents = Buffer.concat(
      holes.map((e) =>
        e.kind === 'data'
          ? diskBytes.subarray(e.offset, e.offset + e.length)
          : Buffer.alloc(e.length),
      ),
    );
    expect(fromExtents.equals(await readFile(join(src, 'holes.bin')))).toBe(true);
    expect((await files.readlink(`${p}/link-slow`)).toString()).toBe(`${'long/'.repeat(40)}target`);
    expect((await files.readdir(`${p}/many`)).length).toBe(150);
    const pre = await readAll(files, `${p}/prealloc.bin`);
    expect(pre.equals(Buffer.concat([Buffer.from('data'), Buffer.alloc((1 << 20) - 4)]))).toBe(
      true,
    );
  });

  it('names what it cannot find', async () => {
    const files = image.files!;
    await expect(files.stat('/part1/nope')).rejects.toThrow('/part1/nope not found');
    await expect(files.stat('/part1/small.txt/x')).rejects.toThrow(
      '/part1/small.txt is not a directory',
    );
    await expect(drain(files.readFile('/part1/sub'))).rejects.toThrow('/part1/sub is a directory');
  });
});

async function expectHugeMarks(read: (at: number) => Promise<Buffer>): Promise<void> {
  for (const [at, text] of HUGE_MARKS) expect((await read(at)).toString()).toBe(text);
  expect((await read(HUGE - 5)).subarray(0, 1)[0]).toBe(0);
}

async function readAt(path: string, at: number): Promise<Buffer> {
  const fh = await open(path);
  try {
    const buf = Buffer.alloc(4);
    await fh.read(buf, 0, 4, at);
    return buf;
  } finally {
    await fh.close();
  }
}

async function drain<T, R>(gen: AsyncGenerator<T, R>): Promise<R> {
  for (;;) {
    const next = await gen.next();
    if (next.done) return next.value;
  }
}
