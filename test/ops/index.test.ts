import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadIndex } from '../../src/ops/index-load.js';
import { LocalBackend } from '../../src/repo/backend/local.js';
import { type BlobLocation, hex } from '../../src/repo/blob.js';
import { IndexReplacer } from '../../src/repo/index-replace.js';
import { IndexView } from '../../src/repo/index-view.js';
import type { Repository } from '../../src/repo/repository.js';
import { type TempDir, tempDir } from '../helpers.js';
import {
  backupDir,
  CrashingBackend,
  copyRepo,
  initRepo,
  openRepo,
  randomFiles,
  SimulatedCrash,
  writeTree,
} from './fixtures.js';

let d: TempDir;
let pristine: string;
let n = 0;

beforeAll(async () => {
  d = await tempDir();
  pristine = join(d.path, 'pristine');
  await initRepo(pristine);
  const src = join(d.path, 'src');
  await writeTree(src, randomFiles(['a', 'b', 'c'], 40 << 10));
  const repo = await openRepo(pristine, join(d.path, 'c'));
  await backupDir(repo, src);
  await repo.close();
});
afterAll(() => d.cleanup());

async function copy(crashAt?: number): Promise<{ dir: string; repo: Repository }> {
  const dir = join(d.path, `copy-${n++}`);
  await copyRepo(pristine, dir);
  const backend = new CrashingBackend(new LocalBackend(dir), crashAt);
  return { dir, repo: await openRepo(dir, join(d.path, `cache-${n++}`), backend) };
}

async function indexOf(repo: Repository) {
  const index = await loadIndex(repo);
  const entries: BlobLocation[] = [];
  for await (const p of index.table.packs()) entries.push(...p.entries);
  await index.table.close();
  return { segments: index.segments, entries };
}

const key = (e: BlobLocation) => hex(e.id) + hex(e.pack);

/** Replaces the index with `keep` in segments of 8 entries; returns the writes it made. */
async function replace(repo: Repository, keep: BlobLocation[]): Promise<void> {
  const { segments } = await indexOf(repo);
  const replacer = new IndexReplacer(repo.backend, repo.sealer, segments, 8);
  for (const e of keep) await replacer.add(e);
  await replacer.commit();
}

describe('replacing the index', () => {
  it('leaves a complete index when it stops after any of its segments', async () => {
    const probe = await copy();
    const all = (await indexOf(probe.repo)).entries;
    expect(all.length).toBeGreaterThan(24);
    await replace(probe.repo, all);
    const steps = (probe.repo.backend as CrashingBackend).mutations;
    expect(steps).toBeGreaterThan(4);
    for (let crashAt = 1; crashAt <= steps; crashAt++) {
      const run = await copy(crashAt);
      await expect(replace(run.repo, all)).rejects.toThrow(SimulatedCrash);
      const after = await openRepo(run.dir, join(d.path, `cache-${n++}`));
      const got = (await indexOf(after)).entries.map(key).sort();
      expect(got).toEqual(all.map(key).sort());
      await after.close();
    }
  });

  it('the local view leaves out a replaced segment even when it meets both at once', async () => {
    const run = await copy();
    const all = (await indexOf(run.repo)).entries;
    const dropped = all[0]!;
    // Stop right after the replacement's last segment, before the old ones are deleted.
    const { segments } = await indexOf(run.repo);
    const writes = Math.floor((all.length - 1) / 8) + 1;
    const stopped = await openRepo(
      run.dir,
      join(d.path, `cache-${n++}`),
      new CrashingBackend(new LocalBackend(run.dir), writes + 1),
    );
    await expect(replace(stopped, all.slice(1))).rejects.toThrow(SimulatedCrash);
    const listed = (await indexOf(await openRepo(run.dir, join(d.path, `cache-${n++}`)))).segments;
    expect(listed.filter((s) => segments.includes(s))).toEqual(segments);

    const view = await IndexView.open(join(d.path, `view-${n++}`));
    const backend = new LocalBackend(run.dir);
    await view.sync(backend, run.repo.sealer);
    expect(view.has(dropped.id)).toBe(false);
    expect(view.has(all[1]!.id)).toBe(true);
    expect(await view.sync(backend, run.repo.sealer)).toEqual({
      segmentsMerged: 0,
      rebuilt: false,
    });
    await view.close();
  });
});
