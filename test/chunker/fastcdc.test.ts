import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  Chunker,
  type ChunkerParams,
  chunkStream,
  DEFAULT_CHUNKER_PARAMS,
  findCut,
  gearTable,
  validateChunkerParams,
} from '../../src/chunker/index.js';
import { CairnError } from '../../src/errors.js';

/** Small sizes so property tests produce many chunks from a few KiB. */
const SMALL: ChunkerParams = { min: 64, avg: 256, max: 1024 };

/** Deterministic bytes: `kind` picks random, low-entropy (0/1 only) or all-zero content. */
function bytes(length: number, seed: number, kind = 'random'): Uint8Array {
  const out = new Uint8Array(length);
  if (kind === 'zero') return out;
  let x = seed | 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = kind === 'random' ? x & 0xff : (x >>> 7) & 1;
  }
  return out;
}

/**
 * The chunking rule written as plainly as possible, to check the WebAssembly scanner and
 * the streaming bookkeeping against: gear hash from `min`, NC-2 masks on the top bits.
 */
function referenceLengths(data: Uint8Array, p: ChunkerParams, table: Uint32Array) {
  const bits = Math.log2(p.avg);
  const maskS = (~0 << (32 - bits - 2)) | 0;
  const maskL = (~0 << (32 - bits + 2)) | 0;
  const lengths: number[] = [];
  let start = 0;
  while (start < data.length) {
    const end = Math.min(data.length, start + p.max);
    let cut = end;
    let h = 0;
    for (let i = start + p.min; i < end; i++) {
      h = ((h << 1) + table[data[i]!]!) | 0;
      if ((h & (i < start + p.avg ? maskS : maskL)) === 0) {
        cut = i + 1;
        break;
      }
    }
    lengths.push(cut - start);
    start = cut;
  }
  return lengths;
}

/** Splits `data` at the given points (any order, out-of-range points clamped). */
function split(data: Uint8Array, points: number[]): Uint8Array[] {
  const cuts = [...new Set(points.map((p) => Math.min(p, data.length)))].sort((a, b) => a - b);
  const parts: Uint8Array[] = [];
  let prev = 0;
  for (const c of [...cuts, data.length]) {
    if (c > prev) parts.push(data.slice(prev, c));
    prev = c;
  }
  return parts;
}

async function* fromArray(parts: Uint8Array[]): AsyncGenerator<Uint8Array> {
  for (const p of parts) yield p;
}

const TABLE = gearTable(new Uint8Array(32).fill(7));
const KINDS = ['random', 'random', 'lowEntropy', 'zero'] as const;

function chunkAll(parts: Uint8Array[], p = SMALL, table = TABLE): Uint8Array[] {
  const chunker = new Chunker(p, table);
  const out: Uint8Array[] = [];
  for (const part of parts) out.push(...chunker.push(part));
  out.push(...chunker.finish());
  return out;
}

const lengths = (chunks: Uint8Array[]) => chunks.map((c) => c.length);

/** Reads of 1 to 8 bytes: many of them per chunk, as from a slow pipe. */
function tinyReads(data: Uint8Array, seed: number): Uint8Array[] {
  const sizes = bytes(data.length, seed ^ 0x55);
  const parts: Uint8Array[] = [];
  for (let off = 0, i = 0; off < data.length; i++) {
    const n = 1 + (sizes[i]! & 7);
    parts.push(data.slice(off, off + n));
    off += n;
  }
  return parts;
}

/** Input bytes split into reads at arbitrary points, or into many tiny reads. */
const splitInput = fc
  .record({
    length: fc.nat({ max: 12_000 }),
    seed: fc.integer(),
    kind: fc.constantFrom(...KINDS),
    points: fc.array(fc.nat({ max: 12_000 }), { maxLength: 40 }),
    tiny: fc.boolean(),
  })
  .map(({ length, seed, kind, points, tiny }) => {
    const data = bytes(length, seed, kind);
    return { data, parts: tiny ? tinyReads(data, seed) : split(data, points) };
  });

describe('Chunker', () => {
  it('matches the plain reference rule for any split into reads', () => {
    fc.assert(
      fc.property(splitInput, ({ data, parts }) => {
        expect(lengths(chunkAll(parts))).toEqual(referenceLengths(data, SMALL, TABLE));
      }),
      { numRuns: 300 },
    );
  });

  it('cuts the same chunks, none of them copied, when each read carries the unfinished chunk', () => {
    fc.assert(
      fc.property(splitInput, ({ data, parts }) => {
        const chunker = new Chunker(SMALL, TABLE);
        const reads = new Set<ArrayBufferLike>();
        const chunks: Uint8Array[] = [];
        for (const part of parts) {
          const buf = new Uint8Array(2 * SMALL.max + part.length);
          reads.add(buf.buffer);
          const carried = chunker.carryInto(buf);
          buf.set(part, carried);
          chunks.push(...chunker.push(buf.subarray(carried, carried + part.length)));
        }
        chunks.push(...chunker.finish());
        expect(lengths(chunks)).toEqual(referenceLengths(data, SMALL, TABLE));
        expect(Buffer.concat(chunks).equals(Buffer.from(data))).toBe(true);
        expect(chunks.every((c) => reads.has(c.buffer))).toBe(true);
      }),
      { numRuns: 300 },
    );
  });

  it('matches the reference when a scan crosses the 64 KiB WebAssembly window', () => {
    const wide = { min: 4096, avg: 65536, max: 262_144 };
    const data = bytes(2 << 20, 11);
    const parts = split(data, [100_000, 100_001, 700_000, 1_500_000]);
    const got = lengths(chunkAll(parts, wide));
    expect(got).toEqual(referenceLengths(data, wide, TABLE));
    expect(Math.max(...got)).toBeGreaterThan(65536 + 4096);
  });

  it('gives the same chunks for 1-byte reads as for one read', () => {
    const data = bytes(20_000, 42);
    const oneByte = Array.from({ length: data.length }, (_, i) => data.slice(i, i + 1));
    const whole = chunkAll([data]);
    const bytewise = chunkAll(oneByte);
    expect(lengths(bytewise)).toEqual(lengths(whole));
    expect(bytewise.every((c, i) => Buffer.compare(c, whole[i]!) === 0)).toBe(true);
  });

  it('reassembles to the input, with every chunk but the last in [min, max]', () => {
    fc.assert(
      fc.property(splitInput, ({ data, parts }) => {
        const chunks = chunkAll(parts);
        expect(Buffer.compare(Buffer.concat(chunks), data)).toBe(0);
        const outOfBounds = chunks.filter(
          (c, i) => c.length > SMALL.max || c.length < (i === chunks.length - 1 ? 1 : SMALL.min),
        );
        expect(outOfBounds).toEqual([]);
      }),
      { numRuns: 300 },
    );
  });

  it('yields nothing for empty input', async () => {
    const chunker = new Chunker(SMALL, TABLE);
    expect(chunker.push(new Uint8Array(0))).toEqual([]);
    expect(chunker.finish()).toEqual([]);
    const fromStream: Uint8Array[] = [];
    for await (const c of chunkStream(fromArray([]), SMALL, TABLE)) fromStream.push(c);
    expect(fromStream).toEqual([]);
  });

  it('never changes a chunk it has already returned, even when reused after finish', () => {
    fc.assert(
      fc.property(splitInput, splitInput, (first, second) => {
        const chunker = new Chunker(SMALL, TABLE);
        const seen: Array<{ chunk: Uint8Array; copy: Uint8Array }> = [];
        const keep = (cs: Uint8Array[]) => {
          for (const chunk of cs) seen.push({ chunk, copy: Uint8Array.from(chunk) });
        };
        for (const { parts } of [first, second]) {
          for (const part of parts) keep(chunker.push(part));
          keep(chunker.finish());
        }
        expect(seen.filter(({ chunk, copy }) => Buffer.compare(chunk, copy) !== 0)).toEqual([]);
      }),
      { numRuns: 200 },
    );
  });

  it('copies out a last chunk that was gathered from many tiny reads', () => {
    // 65 one-byte reads make the chunker gather them into its reusable staging buffer.
    const chunker = new Chunker(SMALL, TABLE);
    const feed = (fill: number) => {
      for (let i = 0; i < 65; i++) chunker.push(new Uint8Array([fill]));
      return chunker.finish();
    };
    const [first] = feed(1);
    feed(2);
    expect(Uint8Array.from(first!)).toEqual(new Uint8Array(65).fill(1));
  });

  it('returns chunks inside one read as views of it, without copying', () => {
    const data = Buffer.from(bytes(50_000, 9));
    const chunks = chunkAll([data]);
    expect(chunks.length).toBeGreaterThan(20);
    for (const c of chunks) expect(c.buffer).toBe(data.buffer);
  });

  it('cuts at max when the content never matches, and keeps working after finish', () => {
    const flat = new Uint32Array(256).fill(0x8000_0000); // h stays 0x80000000: no cut point
    const chunker = new Chunker(SMALL, flat);
    for (let round = 0; round < 2; round++) {
      const out = [...chunker.push(bytes(3000, 1)), ...chunker.finish()];
      expect(lengths(out)).toEqual([1024, 1024, 952]);
    }
  });

  it('is deterministic in the seed, and another seed moves the boundaries', () => {
    const data = bytes(1 << 20, 5);
    const seedA = new Uint8Array(32).fill(1);
    const seedB = Uint8Array.from(seedA);
    seedB[0] = 2;
    const cutsOf = (seed: Uint8Array) => {
      const ends: number[] = [];
      let end = 0;
      for (const c of chunkAll([data], SMALL, gearTable(seed))) {
        end += c.length;
        ends.push(end);
      }
      return ends;
    };
    const a = cutsOf(seedA);
    expect(cutsOf(Uint8Array.from(seedA))).toEqual(a);
    const b = new Set(cutsOf(seedB));
    const shared = a.filter((end) => b.has(end)).length;
    expect(a.length).toBeGreaterThan(1000);
    // Unrelated tables only share boundaries by chance (and at resynchronisation points).
    expect(shared / a.length).toBeLessThan(0.1);
  });
});

describe('chunkStream', () => {
  it('yields the same chunks as the Chunker', async () => {
    await fc.assert(
      fc.asyncProperty(splitInput, async ({ data, parts }) => {
        const out: Uint8Array[] = [];
        for await (const c of chunkStream(fromArray(parts), SMALL, TABLE)) out.push(c);
        expect(lengths(out)).toEqual(lengths(chunkAll([data])));
      }),
      { numRuns: 100 },
    );
  });
});

describe('findCut', () => {
  it('finds the first reference boundary, or -1 before max', () => {
    const data = bytes(5000, 3);
    const first = referenceLengths(data, SMALL, TABLE)[0]!;
    expect(findCut(data, 0, data.length, SMALL, TABLE)).toBe(first);
    expect(findCut(data, 0, first - 1, SMALL, TABLE)).toBe(-1);
    expect(findCut(data, 100, 100 + SMALL.min, SMALL, TABLE)).toBe(-1);
    const flat = new Uint32Array(256).fill(0x8000_0000);
    expect(findCut(data, 10, data.length, SMALL, flat)).toBe(10 + SMALL.max);
    expect(() => findCut(data, 10, 5, SMALL, TABLE)).toThrow(CairnError);
  });
});

describe('validateChunkerParams', () => {
  const bad: Array<[ChunkerParams, RegExp]> = [
    [{ min: 32, avg: 256, max: 1024 }, /min must be at least 64/],
    [{ min: 64, avg: 300, max: 1024 }, /power of two/],
    [{ min: 256, avg: 256, max: 1024 }, /min < avg < max/],
    [{ min: 64, avg: 1024, max: 1024 }, /min < avg < max/],
    [{ min: 64, avg: 256, max: 128 << 20 }, /at most 67108864/],
    [{ min: 64.5, avg: 256, max: 1024 }, /integers/],
  ];
  it.each(bad)('rejects %j', (p, message) => {
    expect(() => validateChunkerParams(p)).toThrow(message);
    expect(() => new Chunker(p, TABLE)).toThrow(CairnError);
  });

  it('accepts the defaults and the extremes', () => {
    validateChunkerParams(DEFAULT_CHUNKER_PARAMS);
    validateChunkerParams({ min: 64, avg: 128, max: 129 });
    validateChunkerParams({ min: 64, avg: 32 << 20, max: 64 << 20 });
  });
});
