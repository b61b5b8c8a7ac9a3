import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Chunker, gearTable } from '../../src/chunker/index.js';
import { ChunkerFeed, SharedBufferPool, SharedCarver } from '../../src/repo/shared-buffers.js';

describe('SharedBufferPool', () => {
  it('hands a buffer out again only once every reference is released', () => {
    const pool = new SharedBufferPool(1024, 1);
    const a = pool.take();
    expect(a.buffer).toBeInstanceOf(SharedArrayBuffer);
    expect(a.length).toBe(1024);
    const chunk = a.subarray(10, 20);
    pool.retain(chunk);
    pool.release(a);
    expect(pool.take().buffer).not.toBe(a.buffer);
    pool.release(chunk);
    expect(pool.take().buffer).toBe(a.buffer);
  });

  it('ignores views of other memory and keeps no more than its spares', () => {
    const pool = new SharedBufferPool(64, 1);
    const other = Buffer.alloc(8);
    pool.retain(other);
    pool.release(other);
    const [a, b] = [pool.take(), pool.take()];
    pool.release(a);
    pool.release(b);
    pool.release(b);
    const [c, d] = [pool.take(), pool.take()];
    expect(c.buffer).toBe(a.buffer);
    expect(d.buffer).not.toBe(b.buffer);
  });
});

describe('SharedCarver', () => {
  it('never hands out memory a retained piece still holds', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.integer({ min: 0, max: 1500 }), fc.nat(6)), { maxLength: 60 }),
        (takes) => {
          const pool = new SharedBufferPool(1024, 2);
          const carver = new SharedCarver(pool);
          const live: { piece: Buffer; mark: number; until: number }[] = [];
          for (const [step, [size, keep]] of takes.entries()) {
            const piece = carver.take(size);
            expect(piece.length).toBe(size);
            expect(piece.buffer).toBeInstanceOf(SharedArrayBuffer);
            piece.fill(step & 0xff);
            live.push({ piece, mark: step & 0xff, until: step + keep });
            for (let i = live.length - 1; i >= 0; i--) {
              const l = live[i]!;
              expect(l.piece.every((b) => b === l.mark)).toBe(true);
              if (l.until > step) continue;
              pool.release(l.piece);
              live.splice(i, 1);
            }
          }
        },
      ),
    );
  });
});

describe('ChunkerFeed', () => {
  const params = { min: 64, avg: 256, max: 1024 };
  const table = gearTable(Buffer.alloc(32, 3));

  it('never reuses a buffer a retained chunk or the chunker still views', () => {
    let reuses = 0;
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 4000, maxLength: 20_000 }),
        fc.array(fc.integer({ min: 100, max: 3000 }), { minLength: 1, maxLength: 20 }),
        fc.array(fc.integer({ min: 0, max: 5 }), { minLength: 1, maxLength: 20 }),
        (data, reads, keepFor) => {
          const pool = new SharedBufferPool(3000, 2);
          const feed = new ChunkerFeed(pool, new Chunker(params, table));
          const kept: { chunk: Uint8Array; offset: number; until: number }[] = [];
          const copies: Buffer[] = [];
          let cut = 0;
          let pos = 0;
          let step = 0;
          let reused = 0;
          const intact = (k: (typeof kept)[number]) =>
            Buffer.from(k.chunk).equals(data.subarray(k.offset, k.offset + k.chunk.length));
          const take = (chunks: Uint8Array[]) => {
            for (const chunk of chunks) {
              copies.push(Buffer.from(chunk));
              pool.retain(chunk);
              kept.push({ chunk, offset: cut, until: step + keepFor[step % keepFor.length]! });
              cut += chunk.length;
            }
          };
          const held = new Set<ArrayBufferLike>();
          while (pos < data.length) {
            const len = Math.min(reads[step % reads.length]!, data.length - pos);
            // Shorter than asked when the chunker's unfinished chunk was carried into it.
            const buf = feed.take(len);
            expect(buf.length).toBeGreaterThan(0);
            expect(buf.length).toBeLessThanOrEqual(len);
            if (held.has(buf.buffer)) reused++;
            held.add(buf.buffer);
            buf.fill(0xee); // what a reused buffer would otherwise show
            buf.set(data.subarray(pos, pos + buf.length));
            pos += buf.length;
            take(feed.push(buf));
            feed.settle();
            step++;
            // Every chunk still retained is intact; those whose time is up are released.
            for (const k of [...kept]) {
              expect(intact(k)).toBe(true);
              if (k.until < step) {
                pool.release(k.chunk);
                kept.splice(kept.indexOf(k), 1);
              }
            }
          }
          take(feed.finish());
          feed.releaseAll();
          for (const k of kept) expect(intact(k)).toBe(true);
          expect(Buffer.concat(copies).equals(data)).toBe(true);
          reuses += reused;
        },
      ),
    );
    expect(reuses).toBeGreaterThan(0);
  });
});
