import { randomBytes } from 'node:crypto';
import { mkdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CairnError } from '../../src/errors.js';
import { type Filesystem, openFilesystem } from '../../src/fs/index.js';
import { type TempDir, tempDir } from '../helpers.js';
import { BufferSource, blankImage, hasCommand, isRoot, mkfs, sh, withMounted } from './util.js';

/*
 * Random byte mutations of small valid filesystems, aimed at the bytes a clean walk reads
 * (the metadata): opening and walking them, and reading every file, must only ever fail
 * with a CairnError, never read outside the image, and do bounded work.
 */

/** Each file is read up to this many bytes: a mutated size may claim terabytes of holes. */
const READ_CAP = 4 << 20;
/** More with FUZZ_RUNS=… when hunting. */
const RUNS = Number(process.env.FUZZ_RUNS ?? 120);

let d: TempDir;
const images = new Map<string, { bytes: Buffer; read: number[] }>();

beforeAll(async () => {
  d = await tempDir();
  const src = join(d.path, 'src');
  await mkdir(join(src, 'dir/sub'), { recursive: true });
  for (let i = 0; i < 40; i++)
    await writeFile(join(src, 'dir', `entry-with-a-long-name-${i}`), `${i}`);
  await writeFile(join(src, 'small.txt'), 'small');
  await writeFile(join(src, 'dir/sub/mid.bin'), randomBytes(300_000));
  const holes = Buffer.alloc(200_000);
  for (let i = 0; i < 8; i++) randomBytes(1024).copy(holes, i * 24_000);
  await writeFile(join(src, 'holes.bin'), holes);
  await symlink('small.txt', join(src, 'link'));
  await symlink('x'.repeat(100), join(src, 'long-link'));
  const ext4 = await blankImage(d.path, 'ext4.img', 1);
  mkfs('mkfs.ext4', ['-q', '-F', '-b', '1024', '-O', '^has_journal,inline_data', '-d', src], ext4);
  const ext2 = await blankImage(d.path, 'ext2.img', 1);
  mkfs('mkfs.ext2', ['-q', '-F', '-b', '1024', '-d', src], ext2);
  const fat = await blankImage(d.path, 'fat.img', 1);
  mkfs('mkfs.vfat', ['-F', '12'], fat);
  sh('mcopy', ['-i', fat, '-s', join(src, 'dir'), join(src, 'small.txt'), '::/']);
  const paths: [string, string][] = [
    ['ext4', ext4],
    ['ext2', ext2],
    ['fat12', fat],
  ];
  if (isRoot && hasCommand('mkntfs')) {
    const ntfs = await blankImage(d.path, 'ntfs.img', 2);
    mkfs('mkntfs', ['-q', '-F', '-Q'], ntfs);
    await withMounted(ntfs, 'ntfs-3g', async (dir) => {
      sh('cp', ['-dR', `${src}/.`, dir]);
    });
    paths.push(['ntfs', ntfs]);
  }
  for (const [name, path] of paths) {
    const bytes = await readFile(path);
    images.set(name, { bytes, read: await bytesReadByWalk(bytes) });
  }
}, 60_000);
afterAll(() => d?.cleanup());

/**
 * Every byte offset a clean open and walk (with extents, without file content) reads: the
 * metadata, where mutations matter.
 */
async function bytesReadByWalk(bytes: Buffer): Promise<number[]> {
  const touched = new Set<number>();
  const src = new BufferSource(bytes);
  const read = src.read.bind(src);
  src.read = async (offset, length) => {
    for (let i = offset; i < offset + length && i < bytes.length; i++) touched.add(i);
    return read(offset, length);
  };
  const fs = await openFilesystem(src);
  expect(fs).toBeDefined();
  for await (const _ of fs!.walk('/', { extents: true })) touched.size;
  return [...touched].sort((a, b) => a - b);
}

/** Walks everything (with extents) and reads every file, up to READ_CAP bytes each. */
async function exercise(fs: Filesystem): Promise<number> {
  let entries = 0;
  const onError = () => undefined;
  for await (const e of fs.walk('/', { extents: true, onError })) {
    entries++;
    if (e.stat.type !== 'file' || e.stat.unreadable) continue;
    let n = 0;
    try {
      for await (const piece of fs.readFile(e.node)) {
        n += piece.length;
        if (n >= READ_CAP) break;
      }
    } catch (err) {
      if (!(err instanceof CairnError)) throw err;
    }
  }
  return entries;
}

const mutations = (size: number) =>
  fc.array(
    fc.record({
      at: fc.nat({ max: size - 1 }),
      value: fc.oneof(fc.integer({ min: 0, max: 255 }), fc.constantFrom(0, 0xff, 0x7f, 0x80)),
      width: fc.constantFrom(1, 1, 1, 2, 4, 8),
    }),
    { minLength: 1, maxLength: 12 },
  );

describe.skipIf(!hasCommand('mkfs.ext4') || !hasCommand('mkfs.vfat') || !hasCommand('mcopy'))(
  'mutated filesystems',
  () => {
    it.each(['ext4', 'ext2', 'fat12', 'ntfs'])(
      '%s: only CairnErrors, in bounds, bounded',
      async (name) => {
        const image = images.get(name);
        if (!image) return;
        const { bytes, read } = image;
        await fc.assert(
          fc.asyncProperty(mutations(read.length), async (muts) => {
            const copy = Buffer.from(bytes);
            for (const m of muts) {
              copy.fill(m.value, read[m.at]!, Math.min(read[m.at]! + m.width, copy.length));
            }
            const src = new BufferSource(copy);
            try {
              const fs = await openFilesystem(src);
              if (fs) await exercise(fs);
            } catch (err) {
              if (!(err instanceof CairnError)) throw err;
            }
            expect(src.outside).toEqual([]);
            // Bounded work: reads stay within a small multiple of the image's bytes.
            expect(src.bytesRead).toBeLessThan(64 * bytes.length + 64 * READ_CAP);
          }),
          { numRuns: RUNS },
        );
      },
    );
  },
);
