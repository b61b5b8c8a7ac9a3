import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { forget } from '../../src/ops/forget.js';
import { repositoryStats, snapshotStats } from '../../src/ops/stats.js';
import type { Repository } from '../../src/repo/repository.js';
import type { StoredSnapshot } from '../../src/repo/snapshot.js';
import { type TempDir, tempDir } from '../helpers.js';
import { backupDir, initRepo, openRepo, randomFiles, writeTree } from './fixtures.js';

let d: TempDir;
let repo: Repository;
let src: string;

beforeEach(async () => {
  d = await tempDir();
  await initRepo(join(d.path, 'repo'));
  repo = await openRepo(join(d.path, 'repo'), join(d.path, 'cache'));
  src = join(d.path, 'src');
  await writeTree(src, randomFiles(['a', 'b'], 64 << 10));
});
afterEach(async () => {
  await repo.close();
  await d.cleanup();
});

/** Snapshot documents over the tree of the (one) real snapshot, at chosen times and hosts. */
async function fakeSnapshots(specs: { day: number; host: string; tags?: string[] }[]) {
  const [base] = await repo.listSnapshots();
  const out: StoredSnapshot[] = [];
  for (const s of specs) {
    const doc = {
      time: new Date(2024, 0, s.day, 12).toISOString(),
      hostname: s.host,
      username: 'u',
      kind: 'files' as const,
      paths: [src],
      tags: s.tags ?? [],
      root: base!.root,
      size: base!.size,
    };
    out.push({ ...doc, id: await repo.saveSnapshot(doc) });
  }
  return out;
}

const ids = (l: readonly StoredSnapshot[]) => l.map((s) => s.id).sort();

describe('forget', () => {
  it('applies the policy per host and removes the rest; a dry run removes nothing', async () => {
    const real = await backupDir(repo, src);
    const made = await fakeSnapshots([
      { day: 1, host: 'x' },
      { day: 2, host: 'x' },
      { day: 3, host: 'x', tags: ['pin'] },
      { day: 1, host: 'y' },
      { day: 5, host: 'y' },
    ]);
    await repo.backend.delete(`snapshots/${real}`);
    const dry = await forget(repo, { policy: { last: 1, tags: [['pin']] }, dryRun: true });
    expect(ids(dry.removed)).toEqual(ids([made[0]!, made[1]!, made[3]!]));
    expect((await repo.listSnapshots()).length).toBe(5);
    const done = await forget(repo, { policy: { last: 1, tags: [['pin']] } });
    const groups = [...done.groups].sort((a, b) => a.key.host!.localeCompare(b.key.host!));
    expect(groups.map((g) => g.key)).toEqual([
      { kind: 'files', host: 'x', paths: [src] },
      { kind: 'files', host: 'y', paths: [src] },
    ]);
    expect(groups[0]!.keep.map((k) => k.reasons)).toEqual([['has tags [pin]', 'last snapshot']]);
    expect(ids(await repo.listSnapshots())).toEqual(ids([made[2]!, made[4]!]));
  });

  it('removes named snapshots, refuses to empty a group, prunes when asked', async () => {
    await backupDir(repo, src);
    const made = await fakeSnapshots([
      { day: 1, host: 'x' },
      { day: 2, host: 'x' },
    ]);
    const all = await repo.listSnapshots();
    const real = all.find((s) => !made.some((m) => m.id === s.id))!;
    await expect(forget(repo, { policy: { tags: [['none']] } })).rejects.toThrow(/refusing/);
    const r = await forget(repo, { refs: [made[0]!.id.slice(0, 8)], prune: {} });
    expect(ids(r.removed)).toEqual([made[0]!.id]);
    expect(r.prune!.packsDeleted).toBe(0);
    expect(ids(await repo.listSnapshots())).toEqual(ids([made[1]!, real]));
    const empty = await forget(repo, {});
    expect(empty).toMatchObject({ policyEmpty: true, removed: [] });
  });
});

describe('stats of some snapshots', () => {
  it('counts shared chunks once: unique data below the sum of logical sizes', async () => {
    const first = await backupDir(repo, src);
    await writeFile(join(src, 'c'), randomBytes(32 << 10));
    await backupDir(repo, src);
    const snaps = await repo.listSnapshots();
    const one = await snapshotStats(
      repo,
      snaps.filter((s) => s.id === first),
    );
    const both = await snapshotStats(repo, snaps);
    expect(one).toMatchObject({ snapshots: 1, total_size: 128 << 10, unique_size: 128 << 10 });
    expect(both).toMatchObject({ snapshots: 2, total_size: (128 + 160) << 10 });
    expect(both.unique_size).toBe(160 << 10);
    expect(both.chunks).toBeGreaterThan(one.chunks);
    expect(both.dedup_ratio).toBeCloseTo(288 / 160, 2);
    const whole = await repositoryStats(repo);
    expect(both.chunks).toBe(whole.chunks);
    expect(both.blobs).toBe(whole.blobs);
  });
});
