import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { imageBackup } from '../src/image/index.js';
import { check } from '../src/ops/check.js';
import { forget } from '../src/ops/forget.js';
import { prune } from '../src/ops/prune.js';
import { LocalBackend } from '../src/repo/backend/local.js';
import { Repository } from '../src/repo/repository.js';
import { generateMixedData, mutate } from './data.js';

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
