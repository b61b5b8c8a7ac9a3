import { randomBytes } from 'node:crypto';
import { open, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ImageReader, imageBackup, restoreImage, verifyImage } from '../../src/image/index.js';
import {
  bytesWithZeroRuns,
  catToBuffer,
  imageFixture,
  SMALL_CHUNKER,
  snapshotById,
} from './util.js';

const fixture = imageFixture();

const imageOf = fixture.imageOf;

describe('image backup and restore', () => {
  it('restore(image(x)) = x for random bytes with zero runs', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 0, max: 12 }),
        fc.integer({ min: 1, max: 200_000 }),
        async (parts, run) => {
          const data = bytesWithZeroRuns(parts, run);
          const { path, summary, snap } = await imageOf(data);
          expect(summary.size).toBe(data.length);
          const target = `${path}.restored`;
          const r = await restoreImage(fixture.repo, snap, target, { verify: true });
          expect((await readFile(target)).equals(data)).toBe(true);
          expect(r.bytesWritten + r.bytesSkipped).toBe(data.length);
          expect((await catToBuffer(fixture.repo, snap)).equals(data)).toBe(true);
        },
      ),
      { numRuns: 12 },
    );
  });

  it('records zeros as holes and restores a sparse file', async () => {
    const data = Buffer.concat([randomBytes(100_000), Buffer.alloc(4 << 20), randomBytes(50_000)]);
    const { summary, snap } = await imageOf(data);
    expect(summary.zeroBytes).toBeGreaterThan(4_000_000);
    const target = join(fixture.dir, 'sparse');
    const r = await restoreImage(fixture.repo, snap, target);
    expect(r.bytesSkipped).toBeGreaterThan(4_000_000);
    expect((await readFile(target)).equals(data)).toBe(true);
    const st = await stat(target);
    expect(st.blocks * 512).toBeLessThan(data.length - 3_000_000);
  });

  it('leaves no full-size file behind when a restore onto a new file fails', async () => {
    const { snap } = await imageOf(randomBytes(300_000));
    const target = join(fixture.dir, 'interrupted');
    const signal = AbortSignal.abort();
    await expect(restoreImage(fixture.repo, snap, target, { signal })).rejects.toThrow(
      /interrupted/,
    );
    expect((await stat(target)).size).toBe(0);
  });

  it('stores little for a second image after a small change; counts changed bytes', async () => {
    const data = bytesWithZeroRuns(40, 100_000);
    const first = await imageOf(data, 'disk');
    const changed = Buffer.from(data);
    changed.write('a small change', 300_000);
    const second = await imageOf(changed, 'disk');
    expect(second.summary.parent).toBe(first.summary.snapshotId);
    expect(second.summary.chunksNew).toBeLessThanOrEqual(3);
    expect(second.summary.dataAdded).toBeLessThan(first.summary.dataAdded / 10);
    expect(second.summary.changedBytes).toBeGreaterThan(0);
    expect(second.summary.changedBytes).toBeLessThanOrEqual(3 * SMALL_CHUNKER.max);
  });

  it('reads an image from a stream', async () => {
    const data = bytesWithZeroRuns(9, 300_000);
    const pieces = Array.from({ length: Math.ceil(data.length / 65536) }, (_, i) =>
      data.subarray(i * 65536, (i + 1) * 65536),
    );
    await expect(imageBackup(fixture.repo, Readable.from([data]))).rejects.toThrow(/needs a name/);
    await expect(
      imageBackup(fixture.repo, Readable.from([data]), { name: 'x', usedOnly: true }),
    ).rejects.toThrow(/--used-only needs a file or block device/);
    const s = await imageBackup(fixture.repo, Readable.from(pieces), { name: 'piped' });
    expect(s.size).toBe(data.length);
    expect(s.bytesRead).toBe(data.length);
    const snap = await snapshotById(fixture.repo, s.snapshotId);
    expect(snap.extra?.source_kind).toBe('stdin');
    expect((await catToBuffer(fixture.repo, snap)).equals(data)).toBe(true);
  });

  it('delta restore writes only the chunks that differ', async () => {
    const data = bytesWithZeroRuns(30, 200_000);
    const { snap, summary } = await imageOf(data);
    const target = join(fixture.dir, 'delta');
    const stale = Buffer.from(data);
    for (const at of [1000, Math.floor(data.length / 2), data.length - 10]) stale[at] ^= 0xff;
    await writeFile(target, Buffer.concat([stale, randomBytes(5000)]));
    const r = await restoreImage(fixture.repo, snap, target, { delta: true, verify: true });
    expect((await readFile(target)).equals(data)).toBe(true);
    expect(r.chunksWritten).toBeLessThanOrEqual(3);
    expect(r.chunksSkipped).toBe(summary.chunksTotal - r.chunksWritten);
    // A flipped byte inside a hole clears one 64 KiB block of it.
    expect(r.bytesWritten).toBeLessThanOrEqual(3 * (64 << 10));
  });

  it('verify finds a corrupted chunk in the target', async () => {
    const data = bytesWithZeroRuns(5, 200_000);
    const { snap } = await imageOf(data);
    const target = join(fixture.dir, 'verify');
    await restoreImage(fixture.repo, snap, target, { verify: true });
    expect(await verifyImage(fixture.repo, snap, target)).toEqual([]);
    const fh = await open(target, 'r+');
    await fh.write(Buffer.from([data[12_345]! ^ 1]), 0, 1, 12_345);
    await fh.close();
    const bad = await verifyImage(fixture.repo, snap, target);
    expect(bad).toHaveLength(1);
    expect(bad[0]!.offset).toBeLessThanOrEqual(12_345);
    expect(bad[0]!.offset + bad[0]!.length).toBeGreaterThan(12_345);
  });

  it('ImageReader reads any byte range', async () => {
    const data = bytesWithZeroRuns(11, 150_000);
    const { snap } = await imageOf(data);
    const reader = await ImageReader.open(fixture.repo, snap, { cacheBytes: 100_000 });
    expect(reader.size).toBe(data.length);
    await fc.assert(
      fc.asyncProperty(fc.nat(data.length + 10), fc.nat(100_000), async (off, len) => {
        const got = await reader.read(off, len);
        expect(got.equals(data.subarray(off, off + len))).toBe(true);
      }),
      { numRuns: 200 },
    );
  });
});
