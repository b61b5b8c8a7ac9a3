import { randomBytes } from 'node:crypto';
import { readdir, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { check } from '../../src/ops/check.js';
import { forget } from '../../src/ops/forget.js';
import { prune } from '../../src/ops/prune.js';
import { LocalBackend } from '../../src/repo/backend/local.js';
import { packName } from '../../src/repo/pack.js';
import type { Repository } from '../../src/repo/repository.js';
import type { StoredSnapshot } from '../../src/repo/snapshot.js';
import { type TempDir, tempDir } from '../helpers.js';
import {
  backupDir,
  backupImage,
  CrashingBackend,
  contentOf,
  copyRepo,
  dropLocks,
  initRepo,
  openRepo,
  randomFiles,
  SimulatedCrash,
  writeStrayPack,
  writeTree,
} from './fixtures.js';

let d: TempDir;
let pristine: string;
/** Snapshots left after forgetting the first file and image snapshots, and their content. */
let expected: Map<string, Map<string, string>>;
let caches = 0;

/**
 * One repository for the whole file: two file snapshots and two image snapshots of changing
 * data; the first of each is forgotten, so their packs become unused or partly used.
 */
beforeAll(async () => {
  d = await tempDir();
  pristine = join(d.path, 'pristine');
  await initRepo(pristine);
  const src = join(d.path, 'src');
  await writeTree(src, randomFiles(['a', 'b', 'c', 'sub/d'], 48 << 10));
  const img = join(d.path, 'disk.img');
  const disk = Buffer.concat([
    randomBytes(160 << 10),
    Buffer.alloc(64 << 10),
    randomBytes(96 << 10),
  ]);
  await writeFile(img, disk);
  const repo = await openRepo(pristine, cache());
  const first = [await backupDir(repo, src), await backupImage(repo, img, 'disk')];
  await writeTree(src, randomFiles(['b', 'e'], 40 << 10));
  await rm(join(src, 'c'));
  randomBytes(80 << 10).copy(disk, 40 << 10);
  await writeFile(img, disk);
  await backupDir(repo, src);
  await backupImage(repo, img, 'disk');
  await forget(repo, { refs: first });
  expected = new Map();
  for (const s of await repo.listSnapshots()) expected.set(s.id, await contentOf(repo, s));
  await repo.close();
});
afterAll(() => d.cleanup());

function cache(): string {
  return join(d.path, `cache-${caches++}`);
}

/** A copy of the pristine repository, opened with a fresh cache. */
async function fresh(name: string, backend?: (dir: string) => CrashingBackend) {
  const dir = join(d.path, name);
  await copyRepo(pristine, dir);
  return { dir, repo: await openRepo(dir, cache(), backend?.(dir)) };
}

async function files(dir: string, folder: string): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  const walk = async (rel: string) => {
    for (const e of await readdir(join(dir, rel), { withFileTypes: true })) {
      if (e.isDirectory()) await walk(join(rel, e.name));
      else out.set(join(rel, e.name), (await stat(join(dir, rel, e.name))).size);
    }
  };
  await walk(folder);
  return out;
}

/**
 * Check (reading every blob) passes, the same snapshots are there and, unless `contents` is
 * false, each restores to exactly what it held.
 */
async function expectIntact(dir: string, contents = true): Promise<void> {
  const repo = await openRepo(dir, cache());
  try {
    const report = await check(repo, { readData: 1 });
    expect(report.problems).toEqual([]);
    const snaps = await repo.listSnapshots();
    expect(snaps.map((s) => s.id).sort()).toEqual([...expected.keys()].sort());
    if (!contents) return;
    for (const s of snaps) expect(await contentOf(repo, s)).toEqual(expected.get(s.id));
  } finally {
    await repo.close();
  }
}

function sum(m: Map<string, number>): number {
  return [...m.values()].reduce((a, b) => a + b, 0);
}

describe('prune', () => {
  it('frees what only forgotten snapshots used, repacks partly used packs', async () => {
    const { dir, repo } = await fresh('full');
    const before = sum(await files(dir, 'data'));
    const r = await prune(repo, { maxUnused: { bytes: 0 } });
    await repo.close();
    expect(r.packsDeleted).toBeGreaterThan(0);
    expect(r.packsRepacked).toBeGreaterThan(0);
    expect(r.packsWritten).toBeGreaterThan(0);
    expect(r.unusedAfter).toBe(0);
    expect(r.bytesBefore).toBe(before);
    expect(r.bytesAfter).toBe(sum(await files(dir, 'data')));
    expect(r.bytesFreed).toBe(before - r.bytesAfter);
    expect(r.bytesFreed).toBeGreaterThan(100 << 10);
    await expectIntact(dir);

    // Nothing left to do: a second prune changes nothing, not even the index.
    const segments = await files(dir, 'index');
    const again = await prune(await openRepo(dir, cache()), { maxUnused: { bytes: 0 } });
    expect(again.packsDeleted + again.packsRepacked + again.segmentsWritten).toBe(0);
    expect(await files(dir, 'index')).toEqual(segments);
  });

  it('leaves partly used packs within --max-unused, and a dry run changes nothing', async () => {
    const { dir, repo } = await fresh('limits');
    const dataBefore = await files(dir, 'data');
    const dry = await prune(repo, { maxUnused: { bytes: 0 }, dryRun: true });
    expect(dry.packsRepacked).toBeGreaterThan(0);
    expect(await files(dir, 'data')).toEqual(dataBefore);
    const lax = await prune(repo, { maxUnused: 'unlimited' });
    expect(lax.packsRepacked).toBe(0);
    expect(lax.unusedAfter).toBeGreaterThan(0);
    const pct = await prune(repo, { maxUnused: { percent: 5 } });
    await repo.close();
    expect(pct.unusedAfter).toBeLessThanOrEqual((5 / 95) * pct.bytesAfter);
    await expectIntact(dir);
  });

  it('removes packs no index lists, and refuses to run when a needed pack is missing', async () => {
    const { dir, repo } = await fresh('strays');
    const stray = await writeStrayPack(repo);
    const r = await prune(repo, { maxUnused: 'unlimited' });
    expect(r.packsUnindexed).toBe(1);
    expect(await repo.backend.stat(packName(stray))).toBeUndefined();

    const [victim] = [...(await files(dir, 'data')).keys()].sort();
    await rm(join(dir, victim!));
    const state = [await files(dir, 'data'), await files(dir, 'index')];
    await expect(prune(repo, { maxUnused: { bytes: 0 } })).rejects.toThrow(/cannot prune/);
    expect([await files(dir, 'data'), await files(dir, 'index')]).toEqual(state);
    await repo.close();
  });

  it('after a crash at any write or delete: check passes, snapshots restore', async () => {
    const { dir, repo } = await fresh('count', (dir) => new CrashingBackend(new LocalBackend(dir)));
    const counter = repo.backend as CrashingBackend;
    await prune(repo, { maxUnused: { bytes: 0 } });
    await repo.close();
    // From the lock's write to its release, every write and delete prune makes.
    const steps = counter.mutations;
    expect(steps).toBeGreaterThan(6);
    for (let crashAt = 1; crashAt <= steps; crashAt++) {
      const run = await fresh(`crash-${crashAt}`, (dir) => {
        return new CrashingBackend(new LocalBackend(dir), crashAt);
      });
      await expect(prune(run.repo, { maxUnused: { bytes: 0 } })).rejects.toThrow(SimulatedCrash);
      await run.repo.close();
      await dropLocks(run.dir);
      await expectIntact(run.dir);
      const done = await openRepo(run.dir, cache());
      await prune(done, { maxUnused: { bytes: 0 } });
      await done.close();
      // Content-addressed: every blob there and verified means the same bytes restore.
      await expectIntact(run.dir, false);
      await rm(run.dir, { recursive: true });
    }
    await rm(dir, { recursive: true });
  }, 180_000);
});

describe('prune with blobs stored twice', () => {
  it('keeps one copy of a blob two concurrent backups both stored', async () => {
    const dir = join(d.path, 'twice');
    await initRepo(dir);
    const src = join(d.path, 'twice-src');
    await writeTree(src, randomFiles(['x', 'y'], 64 << 10));
    const a = await openRepo(dir, cache());
    const b = await openRepo(dir, cache());
    // Tagged apart: two untagged backups of the same tree finishing in the same millisecond
    // would be one and the same snapshot.
    const ids = await Promise.all([backupDir(a, src, ['a']), backupDir(b, src, ['b'])]);
    await b.close();
    const sizeBefore = sum(await files(dir, 'data'));
    const r = await prune(a, { maxUnused: { bytes: 0 } });
    const snaps: StoredSnapshot[] = await a.listSnapshots();
    expect(snaps.map((s) => s.id).sort()).toEqual([...ids].sort());
    const want = await contentOf(a, snaps[0]!);
    await a.close();
    expect(r.bytesAfter).toBeLessThan(sizeBefore * 0.7);
    const repo: Repository = await openRepo(dir, cache());
    expect((await check(repo, { readData: 1 })).problems).toEqual([]);
    for (const s of snaps) expect(await contentOf(repo, s)).toEqual(want);
    await repo.close();
  });
});
