import { randomBytes } from 'node:crypto';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ChunkFetcher } from '../../src/repo/chunk-fetcher.js';
import { makeRepo, type TestRepo } from '../helpers.js';

let t: TestRepo | undefined;
afterEach(async () => {
  await t?.cleanup();
  t = undefined;
});

/** Small and large, compressible and not: read together, opened several to a message. */
function blob(i: number): Buffer {
  const size = i % 10 === 0 ? 300_000 + i * 1000 : 100 + ((i * 7919) % 9000);
  const b = randomBytes(size);
  if (i % 3 === 0) b.fill(0x61, 0, size >> 1);
  return b;
}

async function storeBlobs(n: number) {
  t = await makeRepo();
  const store = await t.repo.blobs();
  const blobs = Array.from({ length: n }, (_, i) => blob(i));
  const ids = await Promise.all(blobs.map((b) => store.put('data', b).then((r) => r.id)));
  await store.flush();
  const repo = await t.reopen();
  return { repo, blobs, ids, fetcher: new ChunkFetcher(repo.backend, await repo.blobs()) };
}

describe('chunk fetcher', () => {
  it('lends chunks intact until released, then reuses their memory for others', async () => {
    const { blobs, ids, fetcher } = await storeBlobs(60);
    for (let round = 0; round < 3; round++) {
      const lent = await Promise.all(ids.map((id, i) => fetcher.lend(id, blobs[i]!.length)));
      const owned = await Promise.all(ids.map((id) => fetcher.get(id)));
      for (const [i, data] of lent.entries()) {
        expect(data.buffer).toBeInstanceOf(SharedArrayBuffer);
        expect(data.equals(blobs[i]!)).toBe(true);
        expect(owned[i]!.buffer).not.toBeInstanceOf(SharedArrayBuffer);
        expect(owned[i]!.equals(blobs[i]!)).toBe(true);
      }
      // Half given back before the next round's requests, half after them.
      for (const data of lent.slice(0, 30)) fetcher.release(data);
      const next = fetcher.lend(ids[5]!, blobs[5]!.length);
      for (const [i, data] of lent.slice(30).entries()) {
        expect(data.equals(blobs[30 + i]!)).toBe(true);
        fetcher.release(data);
      }
      fetcher.release(await next);
    }
  });

  it('fails only the request for a damaged blob, and a chunk of the wrong length', async () => {
    const { blobs, ids, fetcher, repo } = await storeBlobs(40);
    const packs: string[] = [];
    const data = join(t!.repoDir, 'data');
    for (const sub of await readdir(data)) {
      for (const f of await readdir(join(data, sub))) packs.push(join(data, sub, f));
    }
    const store = await repo.blobs();
    const victim = (await store.locate(ids[7]!))!;
    const pack = packs.find((p) => p.endsWith(victim.pack.toString('hex')))!;
    const bytes = await readFile(pack);
    bytes[victim.offset + 20]! ^= 1;
    await writeFile(pack, bytes);
    const results = await Promise.allSettled(
      ids.map((id, i) => fetcher.lend(id, blobs[i]!.length + (i === 12 ? 1 : 0))),
    );
    for (const [i, r] of results.entries()) {
      if (i === 7) {
        expect(r.status).toBe('rejected');
        expect(String((r as PromiseRejectedResult).reason)).toMatch(
          `pack ${victim.pack.toString('hex').slice(0, 8)}`,
        );
      } else if (i === 12) {
        expect(r.status).toBe('rejected');
        expect(String((r as PromiseRejectedResult).reason)).toMatch(/the chunk has \d+ bytes/);
      } else {
        expect(r.status).toBe('fulfilled');
        expect((r as PromiseFulfilledResult<Buffer>).value.equals(blobs[i]!)).toBe(true);
      }
    }
  });
});
