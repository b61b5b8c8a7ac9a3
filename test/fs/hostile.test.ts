import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Filesystem, openDiskFiles, openFilesystem } from '../../src/fs/index.js';
import { type TempDir, tempDir } from '../helpers.js';
import { BufferSource, blankImage, hasCommand, mkfs, sh } from './util.js';

/*
 * Hand-made damage of the kinds a hostile image would carry: loops in the directory tree,
 * a cyclic cluster chain, a filesystem larger than its volume. Each ends in a reported
 * error (or a note), never in a hang, a crash or a read outside the image.
 */

let d: TempDir;
beforeAll(async () => {
  d = await tempDir();
});
afterAll(() => d?.cleanup());

/** Walks everything, collecting the errors reported on the way. */
async function walkAll(fs: Filesystem): Promise<{ paths: string[]; errors: string[] }> {
  const paths: string[] = [];
  const errors: string[] = [];
  const onError = (p: Buffer, err: Error) => errors.push(`${p}: ${err.message}`);
  for await (const e of fs.walk('/', { onError })) paths.push(e.path.toString());
  return { paths, errors };
}

describe.skipIf(!hasCommand('mkfs.ext4') || !hasCommand('debugfs'))('ext', () => {
  it('a directory linked below itself is walked once, the loop reported', async () => {
    const src = join(d.path, 'ext-src');
    await mkdir(join(src, 'sub'), { recursive: true });
    await writeFile(join(src, 'sub/file'), 'x');
    const path = await blankImage(d.path, 'loop.img', 4);
    mkfs('mkfs.ext4', ['-q', '-F', '-d', src], path);
    sh('debugfs', ['-w', '-R', 'ln / sub/up', path]);
    const source = new BufferSource(await readFile(path));
    const { paths, errors } = await walkAll((await openFilesystem(source))!);
    expect(paths).toEqual(['/lost+found', '/sub', '/sub/file', '/sub/up']);
    expect(errors).toEqual(['/sub/up: directory loop: /sub/up was met before']);
    expect(source.outside).toEqual([]);
  });

  it('a filesystem larger than its volume is a clear note, not a listing', async () => {
    const path = await blankImage(d.path, 'big.img', 8);
    mkfs('mkfs.ext4', ['-q', '-F'], path);
    const cut = (await readFile(path)).subarray(0, 4 << 20);
    const { files, volumes } = await openDiskFiles(new BufferSource(cut), undefined);
    expect(files).toBeUndefined();
    expect(volumes).toEqual([
      {
        start: 0,
        size: 4 << 20,
        type: 'ext',
        readable: false,
        note: 'ext filesystem cannot be read: the filesystem is larger than its volume',
      },
    ]);
  });
});

describe.skipIf(!hasCommand('mkfs.vfat') || !hasCommand('mmd'))('FAT', () => {
  /** A FAT12 volume with SUB/INNER/ and a file in SUB; returns its bytes and layout. */
  async function fatImage() {
    const path = await blankImage(d.path, `fat-${Date.now()}.img`, 2);
    mkfs('mkfs.vfat', ['-F', '12'], path);
    const data = join(d.path, 'DATA.BIN');
    await writeFile(data, randomBytes(5000));
    sh('mmd', ['-i', path, '::/SUB', '::/SUB/INNER']);
    sh('mcopy', ['-i', path, data, '::/SUB/DATA.BIN']);
    const bytes = await readFile(path);
    const fs = (await openFilesystem(new BufferSource(bytes)))!;
    const sub = (await fs.stat('/SUB')).inode;
    const bps = bytes.readUInt16LE(11);
    const fatStart = bytes.readUInt16LE(14) * bps;
    const rootStart = fatStart + bytes[16]! * bytes.readUInt16LE(22) * bps;
    const dataStart = rootStart + bytes.readUInt16LE(17) * 32;
    const clusterAt = (c: number) => dataStart + (c - 2) * bytes[13]! * bps;
    return { bytes, sub, fatStart, clusterAt, path };
  }

  /** FAT12 packs two 12-bit entries in three bytes. */
  function setFat12(bytes: Buffer, fatStart: number, c: number, value: number): void {
    const at = fatStart + Math.floor((c * 3) / 2);
    const v = bytes.readUInt16LE(at);
    bytes.writeUInt16LE(c % 2 === 0 ? (v & 0xf000) | value : (v & 0x000f) | (value << 4), at);
  }

  it('a directory whose cluster chain loops is read once round, the loop reported', async () => {
    const { bytes, sub, fatStart, path } = await fatImage();
    // Enough files that SUB fills its first cluster and goes on into a second.
    const many = join(d.path, 'many');
    await mkdir(many, { recursive: true });
    const names = Array.from({ length: 80 }, (_, i) => `F${String(i).padStart(3, '0')}.TXT`);
    for (const n of names) await writeFile(join(many, n), n);
    sh('mcopy', ['-i', path, ...names.map((n) => join(many, n)), '::/SUB/']);
    const full = await readFile(path);
    setFat12(full, fatStart, sub, sub);
    const source = new BufferSource(full);
    const { paths, errors } = await walkAll((await openFilesystem(source))!);
    expect(errors).toEqual([`/SUB: directory at cluster ${sub}: the cluster chain loops`]);
    expect(paths.slice(0, 3)).toEqual(['/SUB', '/SUB/DATA.BIN', '/SUB/F000.TXT']);
    expect(paths.length).toBeLessThan(names.length);
    expect(source.bytesRead).toBeLessThan(2 * bytes.length);
  });

  it('a subdirectory pointing back at its parent is walked once, the loop reported', async () => {
    const { bytes, sub, clusterAt } = await fatImage();
    const inner = bytes.indexOf('INNER      ', clusterAt(sub), 'latin1');
    bytes.writeUInt16LE(sub, inner + 26);
    const source = new BufferSource(bytes);
    const { paths, errors } = await walkAll((await openFilesystem(source))!);
    expect(paths).toEqual(['/SUB', '/SUB/DATA.BIN', '/SUB/INNER']);
    expect(errors).toEqual(['/SUB/INNER: directory loop: /SUB/INNER was met before']);
  });

  it('a file whose chain ends early is reported, not padded', async () => {
    const { bytes, fatStart } = await fatImage();
    const fs = (await openFilesystem(new BufferSource(bytes)))!;
    const first = (await fs.stat('/SUB/DATA.BIN')).inode;
    setFat12(bytes, fatStart, first, 0xfff);
    const damagedFs = (await openFilesystem(new BufferSource(bytes)))!;
    const read = async () => {
      for await (const _ of damagedFs.readFile('/SUB/DATA.BIN'));
    };
    await expect(read()).rejects.toThrow(/content ends \d+ bytes early/);
  });
});

it('random bytes are no filesystem', async () => {
  expect(await openFilesystem(new BufferSource(randomBytes(1 << 20)))).toBeUndefined();
});
