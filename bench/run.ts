import { mkdir, mkdtemp, open, rm, stat } from 'node:fs/promises';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_COMPRESSION_LEVEL } from '../src/repo/repository.js';
import { benchChunker } from './chunker.js';
import { mixedBlocks, randomBlock } from './data.js';
import { machineLimit } from './limit.js';
import { benchPrimitives } from './primitives.js';
import { benchWritePath } from './write-path.js';

/**
 * `npm run bench`: throughput of each stage and of the whole write path on 1 GiB of mixed
 * data (text, binary, zeros) and on 1 GiB of incompressible data, beside the machine's
 * limit (read + SHA-256 on every core). Data files are generated once into bench/.cache.
 * `--quick` uses 256 MiB for a fast look.
 */
const MiB = 2 ** 20;
const quick = process.argv.includes('--quick');
const SIZE = (quick ? 256 : 1024) * MiB;
const RUNS = quick ? 1 : 3;
const cacheDir = new URL('./.cache/', new URL('../../bench/', import.meta.url)).pathname;

async function dataFile(name: string, blocks: () => Iterable<Buffer>): Promise<string> {
  const path = join(cacheDir, `${name}-${SIZE / MiB}M.bin`);
  if ((await stat(path).catch(() => undefined))?.size === SIZE) return path;
  await mkdir(cacheDir, { recursive: true });
  const fh = await open(path, 'w');
  for (const b of blocks()) await fh.write(b);
  await fh.close();
  return path;
}

function* randomBlocks(): Generator<Buffer> {
  for (let i = 0; i < SIZE / (64 * MiB); i++) yield randomBlock(64 * MiB, 7, i);
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

interface Row {
  case: string;
  mbPerSec: number;
  ofLimit?: number;
  note?: string;
}

async function main(): Promise<void> {
  const mixed = await dataFile('mixed', () => mixedBlocks(SIZE, 1));
  const random = await dataFile('random', randomBlocks);
  const rows: Row[] = [];
  const limit = median(await seq(RUNS, () => machineLimit(mixed, SIZE)));
  rows.push({ case: `machine limit: read + SHA-256 on ${cpus().length} cores`, mbPerSec: limit });

  for (const r of await benchChunker({ bytes: SIZE, runs: RUNS + 2 }))
    rows.push({ case: r.name, mbPerSec: r.mbPerSec / 1.048576 });
  const sample = await open(mixed, 'r').then(async (fh) => {
    const b = Buffer.alloc(64 * MiB);
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
    for (let i = 0; i < RUNS; i++) {
      const dir = await mkdtemp(join(tmpdir(), 'cairn-bench-'));
      try {
        const r = await benchWritePath(file, SIZE, dir);
        speeds.push(r.mbPerSec);
        note = `${r.chunks} chunks, stored ${(r.storedBytes / MiB).toFixed(0)} MiB, peak RSS ${r.peakRssMiB.toFixed(0)} MiB`;
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    }
    rows.push({ case: `whole write path, ${label}`, mbPerSec: median(speeds), note });
  }
  for (const r of rows) r.ofLimit = r.mbPerSec / limit;
  print(rows);
  const out = join(cacheDir, 'results.json');
  const { writeFile } = await import('node:fs/promises');
  await writeFile(
    out,
    JSON.stringify(
      {
        date: new Date().toISOString(),
        size: SIZE,
        cpus: cpus().length,
        cpu: cpus()[0]?.model,
        memory: totalmem(),
        node: process.version,
        rows,
      },
      null,
      2,
    ),
  );
  process.stdout.write(`\n(${SIZE / MiB} MiB per case, median of ${RUNS}; JSON in ${out})\n`);
}

async function seq<T>(n: number, fn: () => Promise<T>): Promise<T[]> {
  const out: T[] = [];
  for (let i = 0; i < n; i++) out.push(await fn());
  return out;
}

function print(rows: Row[]): void {
  const w = Math.max(...rows.map((r) => r.case.length));
  process.stdout.write(`${'case'.padEnd(w)}  ${'MiB/s'.padStart(8)}  ${'of limit'.padStart(8)}\n`);
  for (const r of rows) {
    const pct = `${((r.ofLimit ?? 0) * 100).toFixed(0)}%`;
    process.stdout.write(
      `${r.case.padEnd(w)}  ${r.mbPerSec.toFixed(0).padStart(8)}  ${pct.padStart(8)}  ${r.note ?? ''}\n`,
    );
  }
}

await main();
