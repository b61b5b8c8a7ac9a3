import { randomBytes } from 'node:crypto';
import { mkdir, open, writeFile } from 'node:fs/promises';
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
  makeSourceTree,
  mkfs,
  sh,
  snapshotById,
} from './util.js';

/*
 * FAT12, FAT16 and FAT32 volumes made by mkfs.vfat and filled with mtools (no kernel vfat
 * driver needed), as the partitions of one disk image backed up once.
 */
const VARIANTS = [
  { type: 'fat12', mib: 14, args: ['-F', '12', '-s', '8'] },
  { type: 'fat16', mib: 20, args: ['-F', '16'] },
  { type: 'fat32', mib: 40, args: ['-F', '32'] },
];
/** FAT keeps mtimes to 2 seconds, no owners, no modes; mcopy sets directories' times. */
const FAT_META = { mtimeNs: 2_000_000_000n, owners: false, modes: false };
const SKIP = !hasCommand('mkfs.vfat') || !hasCommand('mcopy') || !hasCommand('sfdisk');

let t: TestRepo;
let d: TempDir;
let expected: Map<string, EntryInfo>;
let image: ImageFiles;

beforeAll(async () => {
  if (SKIP) return;
  t = await makeRepo({ encryption: false });
  d = await tempDir();
  const src = await makeSourceTree(d.path, { bigDir: 100, holes: true });
  // frag-c fills the hole frag-a leaves and goes on after frag-b: a fragmented chain.
  const frag = join(d.path, 'frag');
  await mkdir(frag);
  for (const [name, size] of [
    ['frag-a', 300_000],
    ['frag-b', 100_000],
    ['frag-c', 500_000],
  ] as const) {
    await writeFile(join(frag, name), randomBytes(size));
  }
  const parts: string[] = [];
  for (const v of VARIANTS) {
    const path = await blankImage(d.path, `${v.type}.img`, v.mib);
    mkfs('mkfs.vfat', v.args, path);
    const m = (cmd: string, ...args: string[]) => mtools(cmd, ['-i', path, ...args]);
    m(
      'mcopy',
      '-s',
      '-m',
      ...['empty', 'one', 'small.txt', 'medium.bin', 'large.bin', 'sub', 'many', 'holes.bin'].map(
        (n) => join(src, n),
      ),
      '::/',
    );
    m('mcopy', '-m', join(frag, 'frag-a'), join(frag, 'frag-b'), '::/');
    m('mdel', '::/frag-a');
    if (v.type === 'fat32') await forgetNextFree(path);
    m('mcopy', '-m', join(frag, 'frag-c'), '::/');
    parts.push(path);
  }
  sh('cp', ['-p', join(frag, 'frag-b'), join(frag, 'frag-c'), src]);
  expected = await describeDir(src);
  const disk = await assembleDisk(d.path, 'disk.img', parts);
  const s = await imageBackup(t.repo, disk.path, { usedOnly: true });
  image = await openImageFiles(t.repo, await snapshotById(t.repo, s.snapshotId));
});
afterAll(async () => {
  await t?.cleanup();
  await d?.cleanup();
});

/**
 * FAT32 keeps a hint to the next free cluster in its FSInfo sector (whose number is at
 * byte 48 of the boot sector; the hint at 492 of FSInfo); 0xFFFFFFFF makes mtools search
 * from the start, so the next file fills the hole a deleted one left.
 */
async function forgetNextFree(path: string): Promise<void> {
  const fh = await open(path, 'r+');
  try {
    const bs = Buffer.alloc(512);
    await fh.read(bs, 0, 512, 0);
    const hint = Buffer.alloc(4, 0xff);
    await fh.write(hint, 0, 4, bs.readUInt16LE(48) * 512 + 492);
  } finally {
    await fh.close();
  }
}

/** mtools with times read and written as UTC, as cairn reads FAT times. */
function mtools(cmd: string, args: string[]): void {
  sh('env', ['TZ=UTC', cmd, ...args]);
}

describe.skipIf(SKIP)('FAT12/16/32 inside an image snapshot', () => {
  it('finds each FAT type by its cluster count', () => {
    expect(image.volumes.map((v) => v.type)).toEqual(VARIANTS.map((v) => v.type));
  });

  it.each(VARIANTS.map((v, i) => ({ ...v, part: `/part${i + 1}` })))(
    '$type: long names, directories, content and times match the source',
    async ({ part }) => {
      expectSameEntries(expected, await describeFs(image.files!, part), FAT_META);
      const frag = await image.files!.extents(`${part}/frag-c`);
      expect(frag.filter((e) => e.kind === 'data').length).toBeGreaterThan(1);
    },
  );

  it('fat32: files are extracted', async () => {
    const out = join(d.path, 'out');
    const gen = extractFiles(image.files!, out, { include: ['/part3'], verify: true });
    let next = await gen.next();
    while (!next.done) next = await gen.next();
    expect(next.value.errors).toBe(0);
    expectSameEntries(expected, await describeDir(join(out, 'part3')), FAT_META);
  });
});
