import { mkdir, mkdtemp, open, rm, stat } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_COMPRESSION_LEVEL } from '../src/repo/repository.js';
import { benchChunker } from './chunker.js';
import { mixedBlocks, randomBlock } from './data.js';
import { machineLimit } from './limit.js';
import { dropCaches, median } from './measure.js';
import { benchPrimitives } from './primitives.js';
import { benchWritePath } from './write-path.js';

/*
 * Throughput of each stage and of the whole write path on mixed data (text, binary, zeros)
 * and on incompressible data, beside the machine's limit (read + SHA-256 on every core).
 * Data files are generated once into bench/.cache.
 */

export interface StageRow {
  case: string;
  mbPerSec: number;
  ofLimit?: number;
  note?: string;
}

export interface StageResult {
  rows: StageRow[];
  /** MiB/s of the machine's limit with the data in the page cache, and read from disk. */
  limit: number;
  coldLimit?: number;
}

const MiB = 2 ** 20;

async function dataFile(
  cacheDir: string,
  name: string,
  size: number,
  blocks: () => Iterable<Buffer>,
): Promise<string> {
  const path = join(cacheDir, `${name}-${size / MiB}M.bin`);
  if ((await stat(path).catch(() => undefined))?.size === size) return path;
  await mkdir(cacheDir, { recursive: true });
  const fh = await open(path, 'w');
  for (const b of blocks()) await fh.write(b);
  await fh.close();
  return path;
}

async function seq<T>(n: number, fn: () => Promise<T>): Promise<T[]> {
  const out: T[] = [];
  for (let i = 0; i < n; i++) out.push(await fn());
  return out;
}

export async function benchStages(
  cacheDir: string,
  size: number,
  runs: number,
): Promise<StageResult> {
  const mixed = await dataFile(cacheDir, 'mixed', size, () => mixedBlocks(size, 1));
  const random = await dataFile(cacheDir, 'random', size, function* () {
    for (let i = 0; i < size / (64 * MiB); i++) yield randomBlock(64 * MiB, 7, i);
  });
  const rows: StageRow[] = [];
  const limit = median(await seq(runs, () => machineLimit(mixed, size)));
  rows.push({ case: `machine limit: read + SHA-256 on ${cpus().length} cores`, mbPerSec: limit });
  // The peer comparison reads from disk (page cache dropped): its limit is this one.
  let coldLimit: number | undefined;
  if (dropCaches()) {
    coldLimit = await machineLimit(mixed, size);
    rows.push({ case: 'machine limit, page cache dropped', mbPerSec: coldLimit });
  }

  for (const r of await benchChunker({ bytes: size, runs: runs + 2 }))
    rows.push({ case: r.name, mbPerSec: r.mbPerSec / 1.048576 });
  const sample = await open(mixed, 'r').then(async (fh) => {
    const b = Buffer.alloc(Math.min(size, 64 * MiB));
    await fh.read(b, 0, b.length, 0);
    await fh.close();
    return b;
  });
  for (const r of benchPrimitives(sample, DEFAULT_COMPRESSION_LEVEL))
    rows.push({ case: `${r.name}, mixed`, mbPerSec: r.mbPerSec });

  for (const [label, file] of [
    ['mixed', mixed],
    ['incompressible', random],
  ] as const) {
    const speeds: number[] = [];
    let note = '';
    for (let i = 0; i < runs; i++) {
      const dir = await mkdtemp(join(tmpdir(), 'cairn-bench-'));
      try {
        const r = await benchWritePath(file, size, dir);
        speeds.push(r.mbPerSec);
        note = `${r.chunks} chunks, stored ${(r.storedBytes / MiB).toFixed(0)} MiB, peak RSS ${r.peakRssMiB.toFixed(0)} MiB`;
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    }
    rows.push({ case: `whole write path, ${label}`, mbPerSec: median(speeds), note });
  }
  for (const r of rows) r.ofLimit = r.mbPerSec / limit;
  return { rows, limit, coldLimit };
}

export function stageTable(rows: StageRow[]): string {
  const w = Math.max(...rows.map((r) => r.case.length));
  const lines = [`${'case'.padEnd(w)}  ${'MiB/s'.padStart(8)}  ${'of limit'.padStart(8)}`];
  for (const r of rows) {
    const pct = `${((r.ofLimit ?? 0) * 100).toFixed(0)}%`;
    lines.push(
      `${r.case.padEnd(w)}  ${r.mbPerSec.toFixed(0).padStart(8)}  ${pct.padStart(8)}  ${r.note ?? ''}`.trimEnd(),
    );
  }
  return `${lines.join('\n')}\n`;
}
