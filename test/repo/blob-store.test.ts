import { createHash, randomBytes } from 'node:crypto';
import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { BodyDigests, WriteOptions } from '../../src/repo/backend/backend.js';
import { LocalBackend } from '../../src/repo/backend/local.js';
import { S3_TRAITS } from '../../src/repo/backend/s3-url.js';
import { hex } from '../../src/repo/blob.js';
import type { BlobStore } from '../../src/repo/blob-store.js';
import { readPackToc } from '../../src/repo/pack.js';
import { rebuildIndex } from '../../src/repo/rebuild.js';
import { Repository } from '../../src/repo/repository.js';
import { makeRepo, TEST_PASSWORD, type TestRepo } from '../helpers.js';

let t: TestRepo | undefined;
afterEach(async () => {
  await t?.cleanup();
  t = undefined;
});

/** Sizes mixing inline blobs (< 64 KiB) with blobs sent to worker threads. */
function randomBlob(i: number): Buffer {
  const size = i % 50 === 0 ? 70_000 + (i % 7) * 10_000 : (i * 7919) % 4096;
  const b = randomBytes(size);
  if (i % 3 === 0) b.fill(0x61, 0, size >> 1); // compressible half
  return b;
}

async function packFiles(repoDir: string): Promise<string[]> {
  const out: string[] = [];
  for (const sub of await readdir(join(repoDir, 'data'))) {
    for (const f of await readdir(join(repoDir, 'data', sub)))
      out.push(join(repoDir, 'data', sub, f));
  }
  return out;
}

describe('blob store', () => {
  it('round-trips 10 000 random blobs through packs, across a reopen', async () => {
    t = await makeRepo({ packSize: 1 << 20 });
    const store = await t.repo.blobs();
    const blobs = Array.from({ length: 10_000 }, (_, i) => randomBlob(i));
    const ids = await Promise.all(blobs.map((b) => store.put('data', b).then((r) => r.id)));
    await store.flush();
    expect(store.stats.packsWritten).toBeGreaterThan(5);
    for (let i = 0; i < blobs.length; i += 97) expect(await store.get(ids[i]!)).toEqual(blobs[i]);

    const again = await (await t.reopen()).blobs();
    for (let i = 0; i < blobs.length; i++) {
      expect((await again.get(ids[i]!)).equals(blobs[i]!)).toBe(true);
    }
  });

  it('stores the same blob once', async () => {
    t = await makeRepo({ encryption: false });
    const store = await t.repo.blobs();
    const big = randomBytes(200_000);
    const small = randomBytes(100);
    const first = await Promise.all([store.put('data', big), store.put('data', big)]);
    const second = await store.put('tree', small);
    await store.flush();
    const third = await store.put('tree', small);
    expect(first.filter((r) => r.added)).toHaveLength(1);
    expect(second.added).toBe(true);
    expect(third.added).toBe(false);
    expect(store.stats.blobsAdded).toEqual({ data: 1, tree: 1, manifest: 0 });

    const reopened = await (await t.reopen()).blobs();
    expect((await reopened.put('data', big)).added).toBe(false);
  });

  it('detects one flipped byte anywhere in a pack and names the pack', async () => {
    t = await makeRepo();
    const store = await t.repo.blobs();
    const blobs = Array.from({ length: 20 }, () => randomBytes(3000));
    const ids = await Promise.all(blobs.map((b) => store.put('data', b).then((r) => r.id)));
    await store.flush();
    const [pack] = await packFiles(t.repoDir);
    const original = await readFile(pack!);
    const packHex = pack!.slice(-64);
    const blobRegion = [0, 1500, 29_000];
    const tocRegion = [original.length - 100, original.length - 1];
    for (const at of [...blobRegion, ...tocRegion]) {
      const bad = Buffer.from(original);
      bad[at]! ^= 0x40;
      await writeFile(pack!, bad);
      const repo = await t.reopen();
      const errors: string[] = [];
      for (const id of ids) {
        await (await repo.blobs()).get(id).catch((e: Error) => errors.push(e.message));
      }
      if (blobRegion.includes(at)) {
        expect(errors).toHaveLength(1);
        expect(errors[0]).toContain(`pack ${packHex.slice(0, 8)}`);
      } else {
        // Reads go by the index, not the TOC; the TOC is checked when it is read.
        expect(errors).toEqual([]);
        const name = `data/${packHex.slice(0, 2)}/${packHex}`;
        await expect(readPackToc(repo.backend, name, repo.sealer)).rejects.toThrow(
          `pack ${packHex.slice(0, 8)}`,
        );
      }
    }
    const rebuilt = await rebuildIndex(await t.reopen());
    expect(rebuilt.damaged.map((d) => d.pack)).toEqual([packHex]);
  });

  it('rebuilds a deleted index from the packs with identical lookups', async () => {
    t = await makeRepo({ packSize: 256 << 10 });
    const store = await t.repo.blobs();
    const blobs = Array.from({ length: 500 }, (_, i) => randomBlob(i + 1));
    const results = await Promise.all(blobs.map((b, i) => store.put(i % 2 ? 'data' : 'tree', b)));
    await store.flush();
    const before = new Map<string, unknown>();
    for (const r of results) before.set(hex(r.id), await store.locate(r.id));

    await rm(join(t.repoDir, 'index'), { recursive: true });
    await rm(t.cacheDir, { recursive: true });
    const repo = await t.reopen();
    const rebuilt = await rebuildIndex(repo);
    expect(rebuilt.damaged).toEqual([]);
    expect(rebuilt.blobs).toBe(before.size);

    const fresh = await t.reopen();
    const after = await fresh.blobs();
    for (const r of results) expect(await after.locate(r.id)).toEqual(before.get(hex(r.id)));
    for (let i = 0; i < blobs.length; i += 13) {
      expect(await after.get(results[i]!.id)).toEqual(blobs[i]);
    }
  });

  it('a rebuild replaces existing segments and keeps the view consistent', async () => {
    t = await makeRepo({ encryption: false });
    const store = await t.repo.blobs();
    const r = await store.put('data', randomBytes(5000));
    await store.flush();
    const segmentsBefore = await readdir(join(t.repoDir, 'index'));
    const result = await rebuildIndex(t.repo);
    const segmentsAfter = await readdir(join(t.repoDir, 'index'));
    expect(result.segmentsRemoved).toBe(segmentsBefore.length);
    expect(segmentsAfter.some((s) => segmentsBefore.includes(s))).toBe(false);
    const reopened = await t.reopen();
    expect((await (await reopened.blobs()).get(r.id)).length).toBe(5000);
  });

  describe('pacing by the backend', () => {
    afterEach(() => {
      vi.useRealTimers();
    });

    /**
     * Four packs, the clock moved 2, 2 and 10 s before the 2nd, 3rd and 4th are written;
     * returns the store and what each write was given.
     */
    async function fourPacks(remote: boolean) {
      t = await makeRepo({ packSize: 64 << 10 });
      const writes: Written[] = [];
      const backend = new (class extends LocalBackend {
        readonly traits = remote ? S3_TRAITS : undefined;
        override async write(
          name: string,
          data: Uint8Array | readonly Uint8Array[],
          o?: WriteOptions,
        ) {
          const bytes = Buffer.concat(data instanceof Uint8Array ? [data] : data);
          writes.push({ name, bytes, digests: o?.digests });
          return super.write(name, data, o);
        }
      })(t.repoDir);
      // As the S3 backend: whole packs through `write`, none streamed.
      if (remote) Object.assign(backend, { startObject: undefined });
      const repo = await Repository.open(backend, {
        cacheDir: t.cacheDir,
        password: async () => TEST_PASSWORD,
      });
      const store = await repo.blobs();
      vi.useFakeTimers({ toFake: ['Date'] });
      for (const [i, advance] of [0, 2000, 2000, 10_000].entries()) {
        vi.setSystemTime(Date.now() + advance);
        // Incompressible and past the pack size: every put fills and starts one pack.
        await store.put('data', randomBytes(70_000));
        await packsWritten(store, i + 1);
      }
      await store.flush();
      await repo.close();
      return { store, writes };
    }

    it('checkpoints the index at most every 10 s on a remote backend, every 1 s on a disk', async () => {
      const local = await fourPacks(false);
      expect(local.store.stats.packsWritten).toBe(4);
      expect(local.store.stats.segmentsWritten).toBe(4);
      await t?.cleanup();
      t = undefined;
      // The first pack is indexed at once, the fourth 14 s later, the two between with it.
      const remote = await fourPacks(true);
      expect(remote.store.stats.packsWritten).toBe(4);
      expect(remote.store.stats.segmentsWritten).toBe(2);
      expect(remote.writes.filter((w) => w.name.startsWith('index/'))).toHaveLength(2);
    });

    it("passes a pack's digests to a backend that sends them, and only to one", async () => {
      const packsOf = (writes: Written[]) => writes.filter((w) => w.name.startsWith('data/'));
      // On a disk packs are streamed to files (startObject), hashed as written: no digests.
      const local = await fourPacks(false);
      expect(local.store.stats.packsWritten).toBe(4);
      expect(packsOf(local.writes)).toEqual([]);
      await t?.cleanup();
      t = undefined;
      const remote = await fourPacks(true);
      const packs = packsOf(remote.writes);
      expect(packs).toHaveLength(4);
      for (const w of packs) {
        const sha256 = createHash('sha256').update(w.bytes).digest();
        expect(Buffer.from(w.digests!.sha256!)).toEqual(sha256);
        expect(w.name.endsWith(sha256.toString('hex'))).toBe(true);
        expect(Buffer.from(w.digests!.md5!)).toEqual(createHash('md5').update(w.bytes).digest());
      }
    });
  });
});

interface Written {
  name: string;
  bytes: Buffer;
  digests?: BodyDigests;
}

/** Waits until `n` packs are durable (polling: Date is faked, performance.now is not). */
async function packsWritten(store: BlobStore, n: number): Promise<void> {
  const deadline = performance.now() + 30_000;
  while (store.stats.packsWritten < n) {
    if (performance.now() > deadline) {
      throw new Error(`only ${store.stats.packsWritten} of ${n} packs written`);
    }
    await new Promise((resolve) => setImmediate(resolve));
  }
}
