import { appendFileSync, rmSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { backup } from '../src/files/archiver.js';
import { imageBackup } from '../src/image/index.js';
import { check } from '../src/ops/check.js';
import { forget } from '../src/ops/forget.js';
import { prune } from '../src/ops/prune.js';
import { LocalBackend } from '../src/repo/backend/local.js';
import { Repository } from '../src/repo/repository.js';
import { generateMixedData, mixedBlocks, mutate, Rng } from './data.js';
import type { ExtraRow } from './extras.js';
import { diskUsage, dropCaches, loadAverage, run, timed } from './measure.js';
import { type Command, installPeers, PASSWORD as PEER_PASSWORD } from './peers.js';
import { type FileSpec, mix, treeSpec, writeSpec, writeTree } from './tree.js';

const MiB = 2 ** 20;
const PASSWORD = 'bench';

export interface MaintenanceResult {
  name: string;
  seconds: number;
  /** Pack bytes processed per second (read for check, before prune for prune). */
  mbPerSec: number;
  note: string;
}

export interface BenchRepo {
  repoDir: string;
  cacheDir: string;
}

function open(r: BenchRepo): Promise<Repository> {
  return Repository.open(new LocalBackend(r.repoDir), {
    cacheDir: r.cacheDir,
    password: async () => PASSWORD,
  });
}

/**
 * An encrypted repository holding `snapshots` image snapshots of `size` bytes of mixed data,
 * each a scattered edit of the one before (as a disk changes between backups); the older
 * half is forgotten, so prune finds unused and partly used packs.
 */
export async function buildBenchRepo(dir: string, size: number, snapshots = 4): Promise<BenchRepo> {
  const r = { repoDir: join(dir, 'repo'), cacheDir: join(dir, 'cache') };
  const repo = await Repository.init(new LocalBackend(r.repoDir), {
    encryption: true,
    password: PASSWORD,
    kdf: { t: 1, m: 64, p: 1 },
    cacheDir: r.cacheDir,
  });
  const file = join(dir, 'disk.img');
  let data = generateMixedData(size, 3);
  const ids: string[] = [];
  try {
    for (let i = 0; i < snapshots; i++) {
      if (i > 0) data = mutate(data, { edits: 64, maxLength: 256 << 10, seed: 10 + i });
      await writeFile(file, data);
      ids.push((await imageBackup(repo, file, { name: 'disk' })).snapshotId);
    }
    await forget(repo, { refs: ids.slice(0, Math.floor(snapshots / 2)) });
  } finally {
    await rm(file, { force: true });
    await repo.close();
  }
  return r;
}

/** `check --read-data`: every pack read, every blob opened and hashed. */
export async function benchCheckReadData(r: BenchRepo): Promise<MaintenanceResult> {
  const repo = await open(r);
  try {
    const started = performance.now();
    const report = await check(repo, { readData: 1 });
    const seconds = (performance.now() - started) / 1000;
    if (!report.ok) throw new Error(`bench repository is damaged: ${report.problems[0]?.message}`);
    return {
      name: 'check --read-data',
      seconds,
      mbPerSec: report.bytesRead / MiB / seconds,
      note: `${report.packs} packs, ${report.blobs} blobs, ${report.snapshots} snapshots`,
    };
  } finally {
    await repo.close();
  }
}

/** `prune --max-unused 0`: everything unused deleted, partly used packs repacked. */
export async function benchPrune(r: BenchRepo): Promise<MaintenanceResult> {
  const repo = await open(r);
  try {
    const started = performance.now();
    const p = await prune(repo, { maxUnused: { bytes: 0 } });
    const seconds = (performance.now() - started) / 1000;
    return {
      name: 'prune --max-unused 0',
      seconds,
      mbPerSec: p.bytesBefore / MiB / seconds,
      note:
        `${p.packsDeleted} of ${p.packsBefore} packs deleted, ${p.packsRepacked} of them ` +
        `repacked first (${(p.bytesRepacked / MiB).toFixed(0)} MiB copied), ` +
        `${(p.bytesFreed / MiB).toFixed(0)} of ${(p.bytesBefore / MiB).toFixed(0)} MiB freed`,
    };
  } finally {
    await repo.close();
  }
}

export interface HistoryResult {
  tool: 'cairn' | 'restic';
  step: 'snapshots' | 'forget' | 'prune';
  seconds: number;
  peakRssMiB: number;
  note: string;
}

const KiB = 1024;
const CAIRN = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

/**
 * One day of a slowly changing tree: 1% of its files below 1 MiB rewritten, two files added,
 * one removed, 64 KiB appended to the log. Returns the tree's files afterwards.
 */
function nextDay(root: string, files: FileSpec[], day: number): FileSpec[] {
  const rng = new Rng(7000 + day);
  const small = files.filter((f) => !f.path.startsWith('large/') && f.size < 1024 * KiB);
  const next = new Map(files.map((f) => [f.path, f]));
  for (let j = 0; j < Math.max(1, Math.round(files.length / 100)); j++) {
    const f = small[rng.below(small.length)]!;
    const spec = { path: f.path, kind: f.kind, size: f.size, seed: mix(5e6 + day * 1000 + j) };
    writeSpec(root, spec);
    next.set(f.path, spec);
  }
  for (let j = 0; j < 2; j++) {
    const spec: FileSpec = {
      path: `new/day-${day}/n${j}.txt`,
      kind: 'text',
      size: rng.logUniform(KiB, 64 * KiB),
      seed: mix(6e6 + day * 10 + j),
    };
    writeSpec(root, spec);
    next.set(spec.path, spec);
  }
  const gone = small[rng.below(small.length)]!;
  if (next.get(gone.path) === gone) {
    rmSync(join(root, gone.path));
    next.delete(gone.path);
  }
  for (const b of mixedBlocks(64 * KiB, mix(day), { text: 1, zeros: 0 })) {
    appendFileSync(join(root, 'large/app.log'), b);
  }
  return [...next.values()];
}

/**
 * Many snapshots, then forget most and prune, for cairn and restic on the same history: a
 * tree (bench/tree.ts at `scale`) backed up `days` times, changing slowly between backups
 * (`nextDay`), into one repository per tool. cairn's history is written through the library
 * (one process, for speed), restic's by its CLI; each tool's forget and prune then run as
 * processes, as a user runs them, timed with their peak RSS. Both keep the last `keep`
 * snapshots and prune with their default (5%) unused-space limit.
 */
export async function benchManySnapshots(
  dir: string,
  opts: { days: number; keep: number; scale: number },
): Promise<HistoryResult[]> {
  const root = join(dir, 'tree');
  let files = treeSpec(opts.scale);
  writeTree(root, files);
  const cairnRepo = join(dir, 'cairn-repo');
  const cairnCache = join(dir, 'cairn-cache');
  const resticRepo = join(dir, 'restic-repo');
  const log = join(dir, 'log');
  installPeers(['restic']);
  const restic = (args: string[]): Command => ({
    file: 'restic',
    args: ['-r', resticRepo, '--cache-dir', join(dir, 'restic-cache'), '-q', ...args],
    env: { ...process.env, RESTIC_PASSWORD: PEER_PASSWORD },
  });
  run(restic(['init']));
  // The default KDF, so the timed commands pay for it as restic's pay for its scrypt.
  const repo = await Repository.init(new LocalBackend(cairnRepo), {
    encryption: true,
    password: PEER_PASSWORD,
    cacheDir: cairnCache,
  });
  try {
    for (let day = 0; day < opts.days; day++) {
      if (day > 0) files = nextDay(root, files, day);
      const cairnBackup = async () => {
        const events = backup(repo, [root], { host: 'bench' });
        while (!(await events.next()).done);
      };
      await Promise.all([timed(restic(['backup', '--host', 'bench', root]), log), cairnBackup()]);
    }
  } finally {
    await repo.close();
  }
  const cairn = (args: string[]): Command => ({
    file: process.execPath,
    args: [CAIRN, '-r', cairnRepo, '--cache-dir', cairnCache, '-q', ...args],
    env: { ...process.env, CAIRN_PASSWORD: PEER_PASSWORD },
  });
  const keep = ['--keep-last', String(opts.keep)];
  const out: HistoryResult[] = [];
  for (const [tool, cmd, repoDir] of [
    ['cairn', cairn, cairnRepo],
    ['restic', restic, resticRepo],
  ] as const) {
    const before = diskUsage([repoDir]);
    // What every command pays (start, key derivation, reading the snapshot list).
    dropCaches();
    const s = await timed(cmd(['snapshots']), log);
    out.push({ tool, step: 'snapshots', ...resultOf(s), note: 'the fixed cost of a command' });
    dropCaches();
    const f = await timed(cmd(['forget', ...keep]), log);
    const forgotten = `${opts.days - opts.keep} of ${opts.days} snapshots forgotten`;
    out.push({ tool, step: 'forget', ...resultOf(f), note: forgotten });
    dropCaches();
    const p = await timed(cmd(['prune']), log);
    const after = diskUsage([repoDir]);
    const mb = (n: number) => (n / 1e6).toFixed(0);
    const note = `repository ${mb(before)} -> ${mb(after)} MB`;
    out.push({ tool, step: 'prune', ...resultOf(p), note });
  }
  const load = loadAverage();
  for (const r of out) r.note += `; load ${load}`;
  return out;
}

/** The bench's rows: 200 snapshots of a 1 600-file tree, 190 forgotten (--quick: 12, 8). */
export async function manySnapshotRows(quick: boolean): Promise<ExtraRow[]> {
  const opts = quick ? { days: 12, keep: 4, scale: 0.005 } : { days: 200, keep: 10, scale: 0.02 };
  const dir = await mkdtemp(join(tmpdir(), 'cairn-bench-history-'));
  try {
    const results = await benchManySnapshots(dir, opts);
    return results.map((r) => ({
      section: 'maintenance',
      case: `${r.step}, ${opts.days} snapshots`,
      tool: r.tool,
      seconds: r.seconds,
      note: `peak RSS ${r.peakRssMiB.toFixed(0)} MiB; ${r.note}`,
      values: { peakRssMiB: r.peakRssMiB },
    }));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function resultOf(t: { seconds: number; peakRssKiB: number }) {
  return { seconds: t.seconds, peakRssMiB: t.peakRssKiB / 1024 };
}

async function main(): Promise<void> {
  const size = (process.argv.includes('--quick') ? 128 : 512) * MiB;
  const dir = await mkdtemp(join(tmpdir(), 'cairn-bench-maint-'));
  try {
    process.stdout.write(`building a repository: 4 image snapshots of ${size / MiB} MiB…\n`);
    const r = await buildBenchRepo(dir, size);
    for (const result of [await benchCheckReadData(r), await benchPrune(r)]) {
      const { name, seconds, mbPerSec, note } = result;
      const speed = `${mbPerSec.toFixed(0).padStart(6)} MiB/s`;
      process.stdout.write(
        `${name.padEnd(22)} ${seconds.toFixed(2).padStart(7)} s ${speed}  ${note}\n`,
      );
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) await main();
