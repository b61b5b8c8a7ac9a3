import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it, vi } from 'vitest';
import type { ContentPart } from '../../src/files/tree.js';
import { ChunkCache, ContentReader, PartsMap } from '../../src/mount/content.js';

/** A file of `count` chunks of `size` bytes, every `holeEvery`-th a hole, and its repository. */
function fixture(count: number, size: number, holeEvery = 0) {
  const parts: ContentPart[] = [];
  const stored = new Map<string, Buffer>();
  const bytes: Buffer[] = [];
  for (let i = 0; i < count; i++) {
    if (holeEvery && i % holeEvery === holeEvery - 1) {
      parts.push({ id: null, length: size });
      bytes.push(Buffer.alloc(size));
      continue;
    }
    const id = randomBytes(32);
    const data = randomBytes(size);
    stored.set(id.toString('hex'), data);
    parts.push({ id, length: size });
    bytes.push(data);
  }
  const fetched: string[] = [];
  const fetch = async (id: Buffer) => {
    fetched.push(id.toString('hex'));
    return stored.get(id.toString('hex'))!;
  };
  return { parts, stored, fetched, fetch, bytes: Buffer.concat(bytes) };
}

async function read(r: ContentReader, offset: number, length: number): Promise<Buffer> {
  const buf = Buffer.alloc(length);
  return buf.subarray(0, await r.read(buf, length, offset));
}

describe('PartsMap', () => {
  it('finds the part holding every offset', () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 1, max: 40 }), { minLength: 1, maxLength: 30 }),
        (ls) => {
          const parts = ls.map((length, i) => ({ id: i % 3 ? Buffer.from([i]) : null, length }));
          const map = new PartsMap(parts);
          let offset = 0;
          for (const part of parts) {
            for (let o = offset; o < offset + part.length; o++) {
              expect(map.locate(o)).toEqual({ offset, length: part.length, id: part.id });
            }
            offset += part.length;
          }
          expect(map.size).toBe(offset);
        },
      ),
    );
  });
});

describe('ContentReader', () => {
  it('reads any range, holes as zeros, and stops at the end', async () => {
    const f = fixture(40, 5000, 4);
    const r = new ContentReader(new PartsMap(f.parts), new ChunkCache(f.fetch, 1 << 20));
    for (let i = 0; i < 300; i++) {
      const offset = Math.floor(Math.random() * (f.bytes.length + 100));
      const length = Math.floor(Math.random() * 20_000);
      expect(
        (await read(r, offset, length)).equals(f.bytes.subarray(offset, offset + length)),
      ).toBe(true);
    }
  });

  it('reads a hole without asking the repository', async () => {
    const f = fixture(8, 4096, 2);
    const r = new ContentReader(new PartsMap(f.parts), new ChunkCache(f.fetch, 1 << 20));
    expect((await read(r, 4096 + 10, 4000)).equals(Buffer.alloc(4000))).toBe(true);
    expect(f.fetched).toEqual([]);
  });

  it('fetches the next chunks ahead once reads are sequential, not before', async () => {
    const chunk = 64 << 10;
    const f = fixture(256, chunk);
    const r = new ContentReader(new PartsMap(f.parts), new ChunkCache(f.fetch, 64 << 20));
    const idOf = (i: number) => f.parts[i]!.id!.toString('hex');
    await read(r, 0, 4096);
    await read(r, 48 * chunk, 4096);
    // Two distant reads: only their own chunks.
    expect(f.fetched).toEqual([idOf(0), idOf(48)]);
    await read(r, 48 * chunk + 4096, 4096);
    // Sequential: the next MiB (chunks 48–64) is requested before it is read.
    await vi.waitFor(() => expect(f.fetched).toHaveLength(2 + 16));
    expect(f.fetched.at(-1)).toBe(idOf(64));
    // The window doubles while reads stay sequential, up to 16 MiB: here, to the end.
    for (let i = 2; i < 6; i++) await read(r, 48 * chunk + i * 4096, 4096);
    await vi.waitFor(() => expect(f.fetched).toHaveLength(1 + 256 - 48));
    expect(new Set(f.fetched).size).toBe(f.fetched.length);
  });

  it('asks for the read-ahead window a few MiB at a time, not a chunk at a time', async () => {
    const chunk = 64 << 10;
    const f = fixture(512, chunk);
    // Requests made in one event-loop turn are one batch, as a ChunkFetcher reads them.
    let turn = 0;
    const tick = setInterval(() => turn++, 0);
    const batches = new Map<number, number>();
    const ahead = (id: Buffer) => {
      batches.set(turn, (batches.get(turn) ?? 0) + 1);
      return f.fetch(id);
    };
    const cache = new ChunkCache(f.fetch, 64 << 20, ahead);
    const r = new ContentReader(new PartsMap(f.parts), cache);
    try {
      // As the kernel reads a file: 128 KiB at a time, two requests in flight.
      for (let at = 0; at < f.bytes.length; at += 256 << 10) {
        const [a, b] = await Promise.all([
          read(r, at, 128 << 10),
          read(r, at + (128 << 10), 128 << 10),
        ]);
        expect(Buffer.concat([a, b]).equals(f.bytes.subarray(at, at + (256 << 10)))).toBe(true);
      }
    } finally {
      clearInterval(tick);
    }
    // All but the chunks of the first two reads came ahead of their reads, once each, in a
    // few batches.
    expect(f.fetched).toHaveLength(512);
    expect([...batches.values()].reduce((a, b) => a + b)).toBe(512 - 4);
    expect(batches.size).toBeLessThan(16);
  });

  it("keeps the window growing when the kernel's concurrent reads arrive out of order", async () => {
    const chunk = 64 << 10;
    const f = fixture(512, chunk);
    const r = new ContentReader(new PartsMap(f.parts), new ChunkCache(f.fetch, 64 << 20));
    // 128 KiB requests, answered in the order they arrive: the third runs 1 MiB ahead, so
    // the fourth is more than 1 MiB behind the furthest read, yet part of the same stream.
    for (const i of [0, 1, 10, 2, 3, 4]) await read(r, i * (128 << 10), 128 << 10);
    // The window doubled at every read but the first, to 16 MiB past the furthest read.
    await vi.waitFor(() => expect(f.fetched.length).toBeGreaterThan((16 << 20) / chunk));
  });

  it('bounds the read-ahead in flight for all readers together, then resumes', async () => {
    const chunk = 1 << 20;
    const files = [0, 1, 2, 3].map(() => fixture(48, chunk));
    const stored = new Map(files.flatMap((f) => [...f.stored]));
    const pending: (() => void)[] = [];
    let requested = 0;
    // Read-ahead that does not finish until released.
    const ahead = (id: Buffer) => {
      requested += chunk;
      return new Promise<Buffer>((resolve) => {
        pending.push(() => resolve(stored.get(id.toString('hex'))!));
      });
    };
    const demand = async (id: Buffer) => stored.get(id.toString('hex'))!;
    const cache = new ChunkCache(demand, 1 << 30, ahead);
    const readers = files.map((f) => new ContentReader(new PartsMap(f.parts), cache));
    for (let i = 0; i < 6; i++) {
      await Promise.all(readers.map((r) => read(r, i * 4096, 4096)));
    }
    // Four readers with 16 MiB windows: no more than 32 MiB on the way at once.
    expect(requested).toBe(32 << 20);
    for (const release of pending.splice(0)) release();
    // Once those are done (a turn later), the next reads ask for the rest.
    await new Promise((resolve) => setImmediate(resolve));
    await Promise.all(readers.map((r) => read(r, 6 * 4096, 4096)));
    await vi.waitFor(() => expect(requested).toBeGreaterThan(32 << 20));
  });

  it('keeps decompressed chunks in a bounded cache', async () => {
    const f = fixture(40, 10_000);
    const r = new ContentReader(new PartsMap(f.parts), new ChunkCache(f.fetch, 30_000));
    for (const i of [0, 10, 20, 30, 0]) await read(r, i * 10_000, 100);
    const first = f.parts[0]!.id!.toString('hex');
    expect(f.fetched.filter((id) => id === first)).toHaveLength(2);
    await read(r, 50, 100);
    expect(f.fetched.filter((id) => id === first)).toHaveLength(2);
  });

  it('shares one fetch between concurrent readers of a chunk', async () => {
    const f = fixture(4, 10_000);
    const cache = new ChunkCache(f.fetch, 1 << 20);
    const readers = [0, 1, 2].map(() => new ContentReader(new PartsMap(f.parts), cache));
    await Promise.all(readers.map((r, i) => read(r, 100 * i, 50)));
    expect(f.fetched).toHaveLength(1);
    expect(cache.fetches).toBe(1);
  });

  it('refuses a chunk of the wrong length and does not keep a failed fetch', async () => {
    const f = fixture(2, 1000);
    let calls = 0;
    const flaky = async (id: Buffer) => {
      calls++;
      if (calls === 1) throw new Error('backend hiccup');
      if (calls === 2) return Buffer.alloc(999);
      return f.fetch(id);
    };
    const r = new ContentReader(new PartsMap(f.parts), new ChunkCache(flaky, 1 << 20));
    await expect(read(r, 0, 10)).rejects.toThrow(/backend hiccup/);
    await expect(read(r, 0, 10)).rejects.toThrow(/has 999 bytes, its content map says 1000/);
    expect((await read(r, 0, 10)).equals(f.bytes.subarray(0, 10))).toBe(true);
  });
});
