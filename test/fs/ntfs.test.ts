import { randomBytes } from 'node:crypto';
import { mkdir, open, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { extractFiles, type ImageFiles, openImageFiles } from '../../src/fs/index.js';
import { imageBackup } from '../../src/image/index.js';
import { makeRepo, type TempDir, type TestRepo, tempDir } from '../helpers.js';
import {
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

/*
 * An NTFS volume made by mkntfs and filled through ntfs-3g (which stores symlinks, FIFOs
 * and device nodes the Interix way), backed up as a whole-volume image.
 */
/** NTFS times count 100 ns; it has no POSIX owners or modes (ntfs-3g shows 0777). */
const NTFS_META = { mtimeNs: 100n, owners: false, modes: false, dirTimes: true };
const COMPRESSED_TEXT = 'compress me '.repeat(2000);
const SKIP = !isRoot || !hasCommand('mkntfs') || !hasCommand('ntfs-3g');

let t: TestRepo;
let d: TempDir;
let expected: Map<string, EntryInfo>;
let image: ImageFiles;

beforeAll(async () => {
  if (SKIP) return;
  t = await makeRepo({ encryption: false });
  d = await tempDir();
  const src = await makeSourceTree(d.path, { special: true, bigDir: 150, holes: true });
  await writeRuns(join(src, 'runs.bin'));
  expected = await describeDir(src);
  const path = await blankImage(d.path, 'ntfs.img', 32);
  mkfs('mkntfs', ['-q', '-F', '-Q'], path);
  await withMounted(path, 'ntfs-3g', async (dir) => {
    sh('cp', ['-dR', '--preserve=timestamps,links', '--sparse=always', `${src}/.`, dir]);
    await mkdir(join(dir, 'compressed'));
    // FILE_ATTRIBUTE_COMPRESSED on the directory: ntfs-3g compresses files made in it.
    sh('setfattr', ['-n', 'system.ntfs_attrib_be', '-v', '0x00000800', join(dir, 'compressed')]);
    await writeFile(join(dir, 'compressed/text.txt'), COMPRESSED_TEXT);
  });
  const s = await imageBackup(t.repo, path, { usedOnly: true });
  image = await openImageFiles(t.repo, await snapshotById(t.repo, s.snapshotId));
});
afterAll(async () => {
  await t?.cleanup();
  await d?.cleanup();
});

/**
 * 600 data runs with holes between them: too many for one MFT record, so the file's $DATA
 * goes on in extension records that an $ATTRIBUTE_LIST names.
 */
async function writeRuns(path: string): Promise<void> {
  const fh = await open(path, 'w');
  for (let i = 0; i < 600; i++) await fh.write(randomBytes(4096), 0, 4096, i * 65536);
  await fh.close();
}

describe.skipIf(SKIP)('NTFS inside an image snapshot', () => {
  it('is the one volume of the image', () => {
    expect(image.volumes).toEqual([{ start: 0, size: 32 << 20, type: 'ntfs', readable: true }]);
  });

  it('lists files, Interix specials, hard links, times and content as the source', async () => {
    const ignore = ['compressed'];
    expectSameEntries(expected, await describeFs(image.files!), { ...NTFS_META, ignore });
  });

  it('reads a file whose runs continue in extension records', async () => {
    const file = await image.files!.extents('/runs.bin');
    expect(file.filter((e) => e.kind === 'data').length).toBeGreaterThanOrEqual(600);
  });

  it('flags a compressed file instead of reading it', async () => {
    const st = await image.files!.stat('/compressed/text.txt');
    expect(st).toMatchObject({
      type: 'file',
      size: COMPRESSED_TEXT.length,
      unreadable: 'compressed',
    });
    await expect(readAll(image.files!, '/compressed/text.txt')).rejects.toThrow(
      '/compressed/text.txt cannot be read: it is compressed',
    );
    const out = join(d.path, 'compressed-out');
    const gen = extractFiles(image.files!, out, { include: ['/compressed'] });
    const errors: string[] = [];
    let next = await gen.next();
    while (!next.done) {
      if (next.value.type === 'error') errors.push(`${next.value.path}: ${next.value.message}`);
      next = await gen.next();
    }
    expect(errors).toEqual(['/compressed/text.txt: cannot be read: it is compressed']);
  });

  it('extracts files, symlinks, FIFOs, devices and hard links', async () => {
    const out = join(d.path, 'out');
    const gen = extractFiles(image.files!, out, { exclude: ['/compressed'], verify: true });
    let next = await gen.next();
    while (!next.done) next = await gen.next();
    expect(next.value.errors).toBe(0);
    expectSameEntries(expected, await describeDir(out), { ...NTFS_META, mtimeNs: 1000n });
  });
});
