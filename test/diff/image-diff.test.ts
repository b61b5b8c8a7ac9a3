import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { diffImages, type ImageDiffEvent, type ImageDiffSummary } from '../../src/diff/index.js';
import type { ByteRange } from '../../src/image/index.js';
import { loadManifest, ManifestIndex } from '../../src/image/index.js';
import type { Snapshot } from '../../src/repo/snapshot.js';
import { imageFixture, SMALL_CHUNKER } from '../image/util.js';

const BLOCK = 4096;
const MAX_CHUNK = SMALL_CHUNKER.max;

const fixture = imageFixture();

async function image(data: Buffer): Promise<Snapshot> {
  return (await fixture.imageOf(data, 'disk')).snap;
}

async function diff(a: Snapshot, b: Snapshot) {
  const ranges: ByteRange[] = [];
  let summary: ImageDiffSummary | undefined;
  const events: AsyncIterable<ImageDiffEvent> = diffImages(await fixture.repo.blobs(), a, b);
  for await (const e of events) {
    if (e.type === 'range') ranges.push({ offset: e.offset, length: e.length });
    else summary = e;
  }
  return { ranges, summary: summary! };
}

/** Offsets of the bytes that differ (all of the longer image past the shorter's end). */
function changedBytes(a: Buffer, b: Buffer): number[] {
  const out: number[] = [];
  for (let off = 0; off < Math.max(a.length, b.length); off += BLOCK) {
    const x = a.subarray(off, off + BLOCK);
    const y = b.subarray(off, off + BLOCK);
    if (x.equals(y)) continue;
    for (let i = 0; i < Math.max(x.length, y.length); i++) if (x[i] !== y[i]) out.push(off + i);
  }
  return out;
}

/** Chunks of `of` with no chunk of the same ID, offset and length in `other`. */
async function chunksNotIn(of: Snapshot, other: Snapshot): Promise<number> {
  const store = await fixture.repo.blobs();
  const key = (e: { offset: number; length: number; id: Buffer | null }) =>
    `${e.offset}:${e.length}:${e.id!.toString('hex')}`;
  const seen = new Set<string>();
  for await (const e of new ManifestIndex(store, await loadManifest(store, other)).entries()) {
    if (e.id) seen.add(key(e));
  }
  let count = 0;
  for await (const e of new ManifestIndex(store, await loadManifest(store, of)).entries()) {
    if (e.id && !seen.has(key(e))) count++;
  }
  return count;
}

/** Offsets where a hole of the image ends. */
async function holeEndsOf(s: Snapshot): Promise<number[]> {
  const store = await fixture.repo.blobs();
  const ends: number[] = [];
  for await (const e of new ManifestIndex(store, await loadManifest(store, s)).entries()) {
    if (!e.id) ends.push(e.offset + e.length);
  }
  return ends;
}

const editArb = fc.record({
  block: fc.nat(),
  kind: fc.constantFrom('random', 'byte', 'zero'),
  at: fc.integer({ min: 0, max: BLOCK - 1 }),
});

describe('diffImages', () => {
  // Two image backups a run: on a loaded two-core machine that can take a few seconds each.
  it('covers every changed byte with ranges only as wide as the chunks around them', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(editArb, { minLength: 1, maxLength: 10 }),
        fc.integer({ min: -3 * BLOCK, max: 3 * BLOCK }),
        async (edits, grow) => {
          // About 80 chunks of the small chunker, with a hole among them.
          const a = Buffer.concat([
            randomBytes(320_000),
            Buffer.alloc(96 << 10),
            randomBytes(250_000),
          ]);
          const b = Buffer.concat([a, randomBytes(Math.max(0, grow))]).subarray(0, a.length + grow);
          const blocks = Math.ceil(b.length / BLOCK);
          for (const { block, kind, at } of edits) {
            const off = (block % blocks) * BLOCK;
            const end = Math.min(off + BLOCK, b.length);
            if (kind === 'random') randomBytes(end - off).copy(b, off);
            else if (kind === 'zero') b.fill(0, off, end);
            else if (off + at < end) b[off + at] ^= 0x5a;
          }
          const [sa, sb] = [await image(a), await image(b)];
          const { ranges, summary } = await diff(sa, sb);
          const changed = changedBytes(a, b);

          let r = 0;
          for (const off of changed) {
            while (r < ranges.length && ranges[r]!.offset + ranges[r]!.length <= off) r++;
            expect(ranges[r]?.offset ?? Infinity, `byte ${off} is in a range`).toBeLessThanOrEqual(
              off,
            );
          }
          // Each range holds a changed byte and starts in the chunk that holds the first one;
          // after the last, the chunker takes a chunk or two to fall back into step (at most
          // 2.1 chunks of the maximum size seen over 186 ranges). Holes equal holes, so a
          // zero run can split that trail: its tail then starts where a hole ends and holds
          // no changed byte.
          const holeEnds = new Set([...(await holeEndsOf(sa)), ...(await holeEndsOf(sb))]);
          for (const range of ranges) {
            const end = range.offset + range.length;
            const inside = changed.filter((o) => o >= range.offset && o < end);
            if (inside.length === 0) {
              expect(holeEnds.has(range.offset), `range at ${range.offset} follows a hole`).toBe(
                true,
              );
              expect(range.length).toBeLessThan(4 * MAX_CHUNK);
              continue;
            }
            expect(inside[0]! - range.offset).toBeLessThan(MAX_CHUNK);
            expect(end - (inside.at(-1)! + 1)).toBeLessThan(4 * MAX_CHUNK);
          }
          expect(summary.changedBytes).toBe(ranges.reduce((s, x) => s + x.length, 0));
          expect(summary.ranges).toBe(ranges.length);
          expect(summary.sizeB).toBe(b.length);
          expect(summary.changedChunks).toBe(await chunksNotIn(sb, sa));
          expect(summary.replacedChunks).toBe(await chunksNotIn(sa, sb));
        },
      ),
      {
        numRuns: 8,
        // Once seen to carry a change's trail through the zero run.
        examples: [
          [
            [
              { block: 1508457009, kind: 'random', at: 0 },
              { block: 0, kind: 'random', at: 1181 },
            ],
            11132,
          ],
        ],
      },
    );
  }, 300_000);

  it('reports nothing for the same image', async () => {
    const data = randomBytes(3 << 20);
    const [a, b] = [await image(data), await image(data)];
    expect(a.root).toBe(b.root);
    const { ranges, summary } = await diff(a, b);
    expect(ranges).toEqual([]);
    expect(summary).toMatchObject({ changedBytes: 0, changedChunks: 0, replacedChunks: 0 });
  });

  it('counts changed bytes per partition of an MBR disk', async () => {
    const MiB = 1 << 20;
    const disk = randomBytes(6 * MiB);
    const mbr = Buffer.alloc(512);
    const entry = (i: number, startMiB: number, sizeMiB: number) => {
      const e = 446 + i * 16;
      mbr[e + 4] = 0x83;
      mbr.writeUInt32LE((startMiB * MiB) / 512, e + 8);
      mbr.writeUInt32LE((sizeMiB * MiB) / 512, e + 12);
    };
    entry(0, 1, 2);
    entry(1, 3, 2);
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    mbr.copy(disk, 0);
    const changed = Buffer.from(disk);
    changed.fill(7, 4 * MiB, 4 * MiB + 10_000);
    const { summary } = await diff(await image(disk), await image(changed));
    expect(summary.partitions.map((p) => [p.number, p.start, p.size])).toEqual([
      [1, MiB, 2 * MiB],
      [2, 3 * MiB, 2 * MiB],
    ]);
    expect(summary.partitions[0]!.changedBytes).toBe(0);
    expect(summary.partitions[1]!.changedBytes).toBe(summary.changedBytes);
    expect(summary.changedBytes).toBeGreaterThanOrEqual(10_000);
  });
});
