import { randomBytes } from 'node:crypto';
import { open, readFile, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { imageBackup, restoreImage } from '../../src/image/index.js';
import { makeRepo, type TempDir, type TestRepo, tempDir } from '../helpers.js';
import { bytesWithZeroRuns, catToBuffer, isRoot, SMALL_CHUNKER, sh, snapshotById } from './util.js';

let t: TestRepo;
let d: TempDir;
const loops: string[] = [];
beforeAll(async () => {
  t = await makeRepo({ chunker: SMALL_CHUNKER });
  d = await tempDir();
});
afterAll(async () => {
  for (const l of loops) sh('losetup', ['-d', l]);
  await t.cleanup();
  await d.cleanup();
});

async function loopDevice(name: string, content: Buffer): Promise<string> {
  const path = join(d.path, name);
  await writeFile(path, content);
  const dev = sh('losetup', ['-f', '--show', path]).trim();
  loops.push(dev);
  return dev;
}

async function readDevice(dev: string, length: number): Promise<Buffer> {
  const fh = await open(dev, 'r');
  try {
    const buf = Buffer.alloc(length);
    await fh.read(buf, 0, length, 0);
    return buf;
  } finally {
    await fh.close();
  }
}

describe.skipIf(!isRoot)('block devices (needs root for losetup)', () => {
  it('images a loop device and restores onto another one, in full and by delta', async () => {
    const size = 8 << 20;
    const data = Buffer.concat([bytesWithZeroRuns(12, 400_000), randomBytes(size)]).subarray(
      0,
      size,
    );
    const source = await loopDevice('source.img', data);
    const s = await imageBackup(t.repo, source);
    expect(s.name).toBe(basename(source));
    expect(s.size).toBe(size);
    const snap = await snapshotById(t.repo, s.snapshotId);
    expect(snap.extra?.source_kind).toBe('blockdev');
    expect((await catToBuffer(t.repo, snap)).equals(data)).toBe(true);

    // A target full of garbage: holes must be written as zeros on a device.
    const target = await loopDevice('target.img', randomBytes(size + 4096));
    const full = await restoreImage(t.repo, snap, target, { verify: true });
    expect(full.targetKind).toBe('blockdev');
    expect(full.bytesWritten).toBe(size);
    expect((await readDevice(target, size)).equals(data)).toBe(true);

    const fh = await open(target, 'r+');
    await fh.write(Buffer.from('scribble'), 0, 8, 5_000_000);
    await fh.close();
    const delta = await restoreImage(t.repo, snap, target, { delta: true, verify: true });
    expect(delta.bytesWritten).toBeGreaterThan(0);
    expect(delta.bytesWritten).toBeLessThanOrEqual(64 << 10);
    expect(delta.bytesSkipped).toBe(size - delta.bytesWritten);
    expect((await readDevice(target, size)).equals(data)).toBe(true);
  });

  it('refuses a device smaller than the image', async () => {
    const s = await imageBackup(t.repo, Readable.from([randomBytes(2 << 20)]), { name: 'big' });
    const small = await loopDevice('small.img', Buffer.alloc(1 << 20));
    const snap = await snapshotById(t.repo, s.snapshotId);
    await expect(restoreImage(t.repo, snap, small)).rejects.toThrow(
      /holds 1048576 bytes, the image needs/,
    );
    expect((await readFile(join(d.path, 'small.img'))).every((b) => b === 0)).toBe(true);
  });
});
