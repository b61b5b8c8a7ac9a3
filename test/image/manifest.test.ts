import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import {
  decodeManifest,
  decodeSegment,
  encodeManifest,
  encodeSegment,
  loadManifest,
  MAX_SEGMENT_ENTRIES,
  type ManifestEntry,
  ManifestIndex,
  type SegmentRef,
} from '../../src/image/index.js';
import { ManifestWriter } from '../../src/image/manifest-writer.js';
import { hex } from '../../src/repo/blob.js';
import { makeRepo, type TestRepo } from '../helpers.js';

const entryArb: fc.Arbitrary<ManifestEntry> = fc.oneof(
  fc
    .record({
      id: fc.uint8Array({ minLength: 32, maxLength: 32 }),
      length: fc.integer({ min: 1, max: 1 << 22 }),
    })
    .map((e) => ({ id: Buffer.from(e.id), length: e.length })),
  fc.record({ id: fc.constant(null), length: fc.integer({ min: 1, max: 2 ** 45 }) }),
);

function ref(entries: ManifestEntry[], start = 0): SegmentRef {
  return {
    id: Buffer.alloc(32),
    start,
    length: entries.reduce((n, e) => n + e.length, 0),
    entries: entries.length,
  };
}

describe('manifest codec', () => {
  it('round-trips segments, and finds the entry at any offset', () => {
    fc.assert(
      fc.property(
        fc.array(entryArb, { minLength: 1, maxLength: 200 }),
        fc.double({ min: 0, max: 1, noNaN: true }),
        (entries, at) => {
          const r = ref(entries);
          const seg = decodeSegment(encodeSegment(entries), r, 'segment');
          expect(seg.count).toBe(entries.length);
          for (const [i, e] of entries.entries()) expect(seg.entry(i)).toEqual(e);
          const rel = Math.min(Math.floor(at * r.length), r.length - 1);
          const i = seg.find(rel);
          expect(seg.starts[i]! <= rel && rel < seg.starts[i + 1]!).toBe(true);
        },
      ),
      { numRuns: 200 },
    );
  });

  it('round-trips the top manifest', () => {
    fc.assert(
      fc.property(
        fc.array(fc.array(entryArb, { minLength: 1, maxLength: 5 }), { maxLength: 50 }),
        (segs) => {
          const refs: SegmentRef[] = [];
          let pos = 0;
          for (const s of segs) {
            refs.push({ ...ref(s, pos), id: Buffer.alloc(32, refs.length) });
            pos += refs.at(-1)!.length;
          }
          const m = decodeManifest(encodeManifest(pos, refs), 'manifest');
          expect(m.size).toBe(pos);
          expect(m.segments).toEqual(refs);
          expect(m.starts.length).toBe(refs.length + 1);
        },
      ),
    );
  });

  it('refuses damaged objects', () => {
    const entries: ManifestEntry[] = [
      { id: Buffer.alloc(32, 1), length: 100 },
      { id: null, length: 50 },
    ];
    const seg = encodeSegment(entries);
    expect(() => decodeSegment(seg, { ...ref(entries), length: 151 }, 's')).toThrow(
      /covers 150 bytes/,
    );
    expect(() => decodeSegment(seg, { ...ref(entries), entries: 3 }, 's')).toThrow(/2 entries/);
    expect(() => decodeSegment(seg.subarray(0, seg.length - 1), ref(entries), 's')).toThrow(
      /damaged/,
    );
    const bad = Buffer.from(seg);
    bad[0] = 0x58;
    expect(() => decodeSegment(bad, ref(entries), 's')).toThrow(/bad magic/);
    const r = ref(entries);
    const top = encodeManifest(150, [r]);
    expect(decodeManifest(top, 'm').size).toBe(150);
    expect(() => decodeManifest(encodeManifest(151, [r]), 'm')).toThrow(/cover 150 bytes of 151/);
    expect(() => decodeManifest(encodeManifest(300, [r, { ...r, start: 0 }]), 'm')).toThrow(
      /starts at 0, expected 150/,
    );
    expect(() =>
      decodeManifest(encodeManifest(150, [{ ...r, entries: MAX_SEGMENT_ENTRIES + 1 }]), 'm'),
    ).toThrow(/entries/);
    // A huge segment count in a small object is refused before anything is allocated.
    const huge = Buffer.concat([top.subarray(0, 13), Buffer.from([0xff, 0xff, 0xff, 0x7f])]);
    expect(() => decodeManifest(huge, 'm')).toThrow(/absurd segment count/);
  });
});

describe('manifest writer and index', () => {
  let t: TestRepo | undefined;
  afterEach(async () => {
    await t?.cleanup();
    t = undefined;
  });

  it('stores segments, merges holes, and locates every chunk by offset', async () => {
    t = await makeRepo({ encryption: false });
    const store = await t.repo.blobs();
    const writer = new ManifestWriter(store);
    const expected: ManifestEntry[] = [];
    for (let i = 0; i < 10_000; i++) {
      const id = t.repo.hashId(Buffer.from(`chunk ${i}`));
      if (i % 7 === 3) {
        // Two holes in a row are recorded as one.
        await writer.add({ id: null, length: 10 });
        await writer.add({ id: null, length: 5 });
        expected.push({ id: null, length: 15 });
      }
      await writer.add({ id, length: 1 + (i % 1000) });
      expected.push({ id, length: 1 + (i % 1000) });
    }
    const top = await writer.finish();
    await store.flush();
    expect(writer.stats.segments).toBeGreaterThan(10);
    const snap = { kind: 'image' as const, root: hex(top.id), size: top.size };
    const index = new ManifestIndex(store, await loadManifest(store, snap));
    const starts: number[] = [];
    let pos = 0;
    for (const e of expected) {
      starts.push(pos);
      pos += e.length;
    }
    expect(index.size).toBe(pos);
    for (let k = 0; k < 500; k++) {
      const i = (k * 7919) % expected.length;
      const off = starts[i]! + ((k * 31) % expected[i]!.length);
      const found = await index.locate(off);
      expect(found.offset).toBe(starts[i]);
      expect(found.length).toBe(expected[i]!.length);
      expect(found.id).toEqual(expected[i]!.id);
    }
    let n = 0;
    for await (const e of index.entries()) expect(e.offset).toBe(starts[n++]);
    expect(n).toBe(expected.length);
  });

  it('reuses the segments of unchanged stretches, even when offsets shift', async () => {
    t = await makeRepo({ encryption: false });
    const store = await t.repo.blobs();
    const ids = Array.from({ length: 8000 }, (_, i) => t!.repo.hashId(Buffer.from(`c${i}`)));
    const write = async (entries: ManifestEntry[]) => {
      const w = new ManifestWriter(store);
      for (const e of entries) await w.add(e);
      await w.finish();
      return w.stats;
    };
    const base = ids.map((id) => ({ id, length: 1000 }));
    const first = await write(base);
    expect(first.segments).toBeGreaterThan(10);
    const changed = base.map((e, i) => (i === 4000 ? { id: ids[0]!, length: 999 } : e));
    expect((await write(changed)).segmentsNew).toBeLessThanOrEqual(2);
    const inserted = [...base.slice(0, 2000), { id: null, length: 12_345 }, ...base.slice(2000)];
    expect((await write(inserted)).segmentsNew).toBeLessThanOrEqual(2);
  });
});
