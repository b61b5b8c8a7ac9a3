import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { AesGcmSealer, ChecksumSealer, keyedIdHasher } from '../../src/crypto/index.js';
import { BLOB_TYPES, type BlobLocation, FLAG_COMPRESSED } from '../../src/repo/blob.js';
import { BlobDecoder, BlobEncoder, decodeBlob } from '../../src/repo/blob-codec.js';
import { decodeConfig, encodeConfig, type RepoConfig } from '../../src/repo/config.js';
import { decodeSegment, encodeSegment } from '../../src/repo/index-segment.js';
import { allocShared, decodeToc, encodeToc, type PackEntry } from '../../src/repo/pack.js';

const id = fc.uint8Array({ minLength: 32, maxLength: 32 }).map((a) => Buffer.from(a));
const u32 = fc.integer({ min: 0, max: 2 ** 32 - 1 });
const entry: fc.Arbitrary<PackEntry> = fc.record({
  id,
  type: fc.constantFrom(...BLOB_TYPES),
  flags: fc.integer({ min: 0, max: 255 }),
  offset: fc.integer({ min: 0, max: 2 ** 20 }),
  length: fc.integer({ min: 0, max: 2 ** 20 }),
  rawLength: u32,
});
const location: fc.Arbitrary<BlobLocation> = fc
  .tuple(entry, id)
  .map(([e, pack]) => ({ ...e, pack, offset: e.offset, length: e.length }));
const sealers = [new ChecksumSealer(), new AesGcmSealer(Buffer.alloc(32, 7))];

describe('pack table of contents', () => {
  it('round-trips', () => {
    fc.assert(
      fc.property(fc.array(entry, { maxLength: 50 }), (entries) => {
        expect(decodeToc(encodeToc(entries), 'pack', 2 ** 22)).toEqual(entries);
      }),
    );
  });

  it('rejects entries that point past the pack', () => {
    const e: PackEntry = {
      id: Buffer.alloc(32),
      type: 'data',
      flags: 0,
      offset: 10,
      length: 10,
      rawLength: 10,
    };
    expect(() => decodeToc(encodeToc([e]), 'pack x', 15)).toThrow(/pack x is damaged/);
  });

  it('rejects truncated tables', () => {
    fc.assert(
      fc.property(fc.array(entry, { minLength: 1, maxLength: 5 }), fc.nat(), (entries, cut) => {
        const toc = encodeToc(entries);
        const short = toc.subarray(0, cut % toc.length);
        expect(() => decodeToc(short, 'pack', 2 ** 22)).toThrow(/damaged/);
      }),
    );
  });
});

describe('index segments', () => {
  it('round-trip under both sealers', () => {
    fc.assert(
      fc.property(
        fc.array(location, { maxLength: 40 }),
        fc.array(id, { maxLength: 3 }),
        fc.constantFrom(...sealers),
        (entries, supersedes, sealer) => {
          const { id: segId, bytes } = encodeSegment({ supersedes, entries }, sealer);
          expect(segId.length).toBe(32);
          expect(decodeSegment(bytes, sealer, 'seg')).toEqual({ supersedes, entries });
        },
      ),
    );
  });

  it('detects any flipped byte', () => {
    fc.assert(
      fc.property(fc.array(location, { minLength: 1, maxLength: 4 }), fc.nat(), (entries, at) => {
        const sealer = sealers[1]!;
        const { bytes } = encodeSegment({ supersedes: [], entries }, sealer);
        const bad = Buffer.from(bytes);
        bad[at % bad.length]! ^= 0x01;
        expect(() => decodeSegment(bad, sealer, 'index 1234')).toThrow(/index 1234 is damaged/);
      }),
    );
  });
});

describe('config', () => {
  it('round-trips', () => {
    fc.assert(
      fc.property(
        fc.record({
          min: fc.integer({ min: 64, max: 1 << 20 }),
          avg: fc.integer({ min: 64, max: 1 << 20 }),
          max: fc.integer({ min: 64, max: 1 << 20 }),
        }),
        fc.boolean(),
        (chunker, encrypted) => {
          const config: RepoConfig = {
            version: 1,
            id: 'ab'.repeat(32),
            created: new Date(0).toISOString(),
            encryption: encrypted ? 'aes-256-gcm' : 'none',
            chunker,
            ...(encrypted ? {} : { chunkerSeed: 'cd'.repeat(32) }),
            compression: { algorithm: 'zstd', level: 3 },
            packSize: 1 << 24,
          };
          const sealer = sealers[encrypted ? 1 : 0]!;
          expect(decodeConfig(encodeConfig(config, sealer), sealer)).toEqual(config);
        },
      ),
    );
  });
});

describe('blob encoder', () => {
  const hashId = keyedIdHasher(Buffer.alloc(32, 5));
  const blob = fc.oneof(
    fc.uint8Array({ maxLength: 70_000 }),
    fc.integer({ min: 0, max: 300_000 }).map((n) => Buffer.alloc(n, 'abc')),
  );

  it('writes blobs one after another that decode to their plaintext, compressed when smaller', () => {
    for (const sealer of sealers) {
      // One encoder for all: its compression buffer is reused from blob to blob.
      const encoder = new BlobEncoder(sealer, 2);
      fc.assert(
        fc.property(fc.array(blob, { maxLength: 6 }), (blobs) => {
          const out = new Uint8Array(blobs.reduce((n, b) => n + encoder.bound(b), 0));
          let at = 0;
          const placed = blobs.map((b) => {
            const { length, flags } = encoder.encodeInto(b, out, at);
            at += length;
            return { offset: at - length, length, flags };
          });
          expect(at).toBeLessThanOrEqual(out.length);
          for (const [i, b] of blobs.entries()) {
            const { offset, length, flags } = placed[i]!;
            const loc = { id: hashId(b), type: 'data' as const, flags, pack: Buffer.alloc(32) };
            const sealed = Buffer.from(out.buffer, offset, length);
            const plain = decodeBlob(
              sealed,
              { ...loc, offset, length, rawLength: b.length },
              sealer,
              hashId,
            );
            expect(plain.equals(Buffer.from(b))).toBe(true);
            expect(flags === FLAG_COMPRESSED).toBe(length < b.length + sealer.overhead);
          }
        }),
        { numRuns: 40 },
      );
    }
  });
});

describe('blob decoder', () => {
  const hashId = keyedIdHasher(Buffer.alloc(32, 5));
  const blob = fc.oneof(
    fc.uint8Array({ maxLength: 70_000 }),
    fc.integer({ min: 0, max: 300_000 }).map((n) => Buffer.alloc(n, 'xyz')),
  );
  const pack = Buffer.alloc(32, 9);

  it('decodes blobs into shared memory, one after another, as decode returns them', () => {
    for (const sealer of sealers) {
      const encoder = new BlobEncoder(sealer, 2);
      const decoder = new BlobDecoder(sealer, hashId);
      fc.assert(
        fc.property(fc.array(blob, { maxLength: 5 }), fc.nat(64), (blobs, gap) => {
          const total = blobs.reduce((n, b) => n + b.length + gap, 0);
          const out = allocShared(total + 1).fill(0xee);
          let to = 0;
          for (const b of blobs) {
            const { sealed, flags } = encoder.encode(b);
            const loc = { id: hashId(b), pack, offset: 0, flags, rawLength: b.length };
            decoder.decodeInto(sealed, loc, out.subarray(to, to + b.length));
            expect(out.subarray(to, to + b.length).equals(decoder.decode(sealed, loc))).toBe(true);
            expect(out.subarray(to, to + b.length).equals(Buffer.from(b))).toBe(true);
            to += b.length + gap;
          }
          expect(out[total]).toBe(0xee);
        }),
        { numRuns: 30 },
      );
    }
  });

  it('refuses a blob that is not the one its location names', () => {
    const sealer = sealers[1]!;
    const decoder = new BlobDecoder(sealer, hashId);
    const data = Buffer.alloc(5000, 'abc');
    const { sealed, flags } = new BlobEncoder(sealer, 2).encode(data);
    expect(flags).toBe(FLAG_COMPRESSED);
    const loc = { id: hashId(data), pack, offset: 0, flags, rawLength: data.length };
    const out = Buffer.alloc(data.length);
    const wrong = [
      { ...loc, id: Buffer.alloc(32) },
      { ...loc, rawLength: data.length - 1 },
      { ...loc, rawLength: data.length + 1 },
    ];
    for (const l of wrong) {
      const into = Buffer.alloc(l.rawLength);
      expect(() => decoder.decodeInto(sealed, l, into)).toThrow(/content does not match its ID/);
      expect(() => decoder.decode(sealed, l)).toThrow(/content does not match its ID/);
    }
    const plain = { ...loc, flags: 0 };
    expect(() => decoder.decodeInto(sealed, plain, out)).toThrow(/content does not match its ID/);
    const garbage = sealer.seal(Buffer.alloc(100, 1));
    expect(() =>
      decoder.decodeInto(garbage, { ...loc, rawLength: 100 }, out.subarray(0, 100)),
    ).toThrow(/cannot decompress/);
  });
});
