import { createHash } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import {
  Chunker,
  type ChunkerParams,
  DEFAULT_CHUNKER_PARAMS,
  gearTable,
  isAllZero,
} from '../src/chunker/index.js';
import { generateMixedData, mutate, randomBlock } from './data.js';

export interface ThroughputResult {
  name: string;
  /** Input bytes per second of wall-clock time, in MB (10^6 bytes). */
  mbPerSec: number;
  /** Input bytes per second of CPU time used by the process. */
  mbPerCpuSec: number;
}

export interface BenchChunkerOptions {
  params?: ChunkerParams;
  /** Bytes chunked per timed run (default 1 GiB, streamed repeatedly over `sampleBytes`). */
  bytes?: number;
  sampleBytes?: number;
  kinds?: Array<'random' | 'mixed'>;
  /**
   * Read sizes to feed the chunker (default 8 MiB and 1 MiB). Chunks that span reads are
   * copied into fresh memory, which costs about as much per byte as hashing, so the read
   * size matters as much as the hash loop.
   */
  readSizes?: number[];
  /** Timed runs; the median is reported (default 5, after one warm-up run). */
  runs?: number;
}

const MiB = 1024 * 1024;
const TABLE = gearTable(new Uint8Array(32).fill(0x5a));

const sizeLabel = (n: number) => (n >= MiB ? `${n / MiB}M` : `${n / 1024}K`);
export const paramsLabel = (p: ChunkerParams) =>
  `${sizeLabel(p.min)}/${sizeLabel(p.avg)}/${sizeLabel(p.max)}`;

/** Pushes `bytes` of `sample` through one chunker in `readSize` reads; returns chunk count. */
function chunkRepeatedly(p: ChunkerParams, sample: Uint8Array, bytes: number, readSize: number) {
  const chunker = new Chunker(p, TABLE);
  let chunks = 0;
  for (let done = 0; done < bytes; ) {
    for (let off = 0; off < sample.length && done < bytes; off += readSize) {
      const read = sample.subarray(
        off,
        Math.min(off + readSize, sample.length, off + bytes - done),
      );
      chunks += chunker.push(read).length;
      done += read.length;
    }
  }
  return chunks + chunker.finish().length;
}

/**
 * Median throughput over `runs` timed runs after one warm-up, by wall clock and by the
 * process's CPU time. The CPU figure stays meaningful when other work shares the machine.
 */
function measure(run: () => void, bytes: number, runs: number) {
  run();
  const wall: number[] = [];
  const cpu: number[] = [];
  for (let i = 0; i < runs; i++) {
    const c0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    run();
    wall.push(Number(process.hrtime.bigint() - t0) / 1e9);
    const c = process.cpuUsage(c0);
    cpu.push((c.user + c.system) / 1e6);
  }
  const median = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  return { mbPerSec: bytes / 1e6 / median(wall), mbPerCpuSec: bytes / 1e6 / median(cpu) };
}

/** Chunker throughput on one core over random and over mixed data, per read size. */
export async function benchChunker(options: BenchChunkerOptions = {}): Promise<ThroughputResult[]> {
  const {
    params = DEFAULT_CHUNKER_PARAMS,
    bytes = 1024 * MiB,
    sampleBytes = 64 * MiB,
    kinds = ['random', 'mixed'],
    readSizes = [8 * MiB, MiB],
    runs = 5,
  } = options;
  const results: ThroughputResult[] = [];
  for (const kind of kinds) {
    const sample =
      kind === 'random' ? randomBlock(sampleBytes, 1, 0) : generateMixedData(sampleBytes, 1);
    for (const readSize of readSizes) {
      const run = () => chunkRepeatedly(params, sample, bytes, readSize);
      results.push({
        name: `chunker ${paramsLabel(params)} ${kind}, ${sizeLabel(readSize)} reads`,
        ...measure(run, bytes, runs),
      });
    }
  }
  return results;
}

/** Zero detection over 256 MiB of zeros (the worst case: every byte must be looked at). */
export function benchIsAllZero(bytes = 256 * MiB, blockSize = MiB, runs = 5): ThroughputResult {
  const zeros = Buffer.alloc(bytes);
  zeros.fill(1).fill(0); // touch every page so the kernel's shared zero page can't flatter us
  const run = () => {
    for (let off = 0; off < bytes; off += blockSize) {
      if (!isAllZero(zeros.subarray(off, off + blockSize))) throw new Error('not zero');
    }
  };
  return { name: `isAllZero, ${sizeLabel(blockSize)} blocks`, ...measure(run, bytes, runs) };
}

export interface DedupResult {
  params: ChunkerParams;
  chunks: number;
  /** Chunks after deduplication within the copy: what the index would hold. */
  uniqueChunks: number;
  meanChunkBytes: number;
  /** Per entry of `edits`: bytes of the edited copy in chunks the original does not have. */
  newBytes: number[];
  mixedMbPerSec: number;
  mixedMbPerCpuSec: number;
}

/** Unique chunks of `data` (ID → length) and how many chunks it was cut into. */
function chunkIds(data: Uint8Array, p: ChunkerParams) {
  const chunker = new Chunker(p, TABLE);
  const ids = new Map<string, number>();
  let count = 0;
  const add = (c: Uint8Array) => {
    ids.set(createHash('sha256').update(c).digest('hex'), c.length);
    count++;
  };
  for (let off = 0; off < data.length; off += 8 * MiB) {
    for (const c of chunker.push(data.subarray(off, off + 8 * MiB))) add(c);
  }
  for (const c of chunker.finish()) add(c);
  return { ids, count };
}

export const CANDIDATE_PARAMS: ChunkerParams[] = [
  { min: 64 * 1024, avg: 256 * 1024, max: MiB },
  { min: 128 * 1024, avg: 512 * 1024, max: 2 * MiB },
  { min: 256 * 1024, avg: 512 * 1024, max: 2 * MiB },
  { min: 256 * 1024, avg: MiB, max: 4 * MiB },
  { min: 512 * 1024, avg: MiB, max: 8 * MiB },
  { min: 512 * 1024, avg: 2 * MiB, max: 8 * MiB },
];

/**
 * Deduplication of lightly edited copies of mixed data (`edits` small inserts, deletes and
 * overwrites each), and throughput, per parameter set: the measurement behind
 * DEFAULT_CHUNKER_PARAMS.
 */
export async function compareChunkerParams(
  candidates = CANDIDATE_PARAMS,
  bytes = 256 * MiB,
  edits = [20, 200],
): Promise<DedupResult[]> {
  const original = generateMixedData(bytes, 1);
  const copies = edits.map((n) => mutate(original, { edits: n }));
  const results: DedupResult[] = [];
  for (const params of candidates) {
    const { count, ids: before } = chunkIds(original, params);
    const newBytes: number[] = [];
    for (const copy of copies) {
      let fresh = 0;
      for (const [id, length] of chunkIds(copy, params).ids) if (!before.has(id)) fresh += length;
      newBytes.push(fresh);
    }
    const [mixed] = await benchChunker({ params, kinds: ['mixed'], readSizes: [8 * MiB] });
    results.push({
      params,
      chunks: count,
      uniqueChunks: before.size,
      meanChunkBytes: Math.round(original.length / count),
      newBytes,
      mixedMbPerSec: mixed!.mbPerSec,
      mixedMbPerCpuSec: mixed!.mbPerCpuSec,
    });
  }
  return results;
}

async function main(): Promise<void> {
  for (const r of [...(await benchChunker()), benchIsAllZero()]) {
    console.log(`${r.name}: ${r.mbPerSec.toFixed(0)} MB/s (${r.mbPerCpuSec.toFixed(0)} per CPU s)`);
  }
  if (!process.argv.includes('--params')) return;
  const edits = [20, 200];
  console.log(`params: chunks (unique), mean size, new bytes after ${edits.join('/')} edits, MB/s`);
  for (const r of await compareChunkerParams(CANDIDATE_PARAMS, 256 * MiB, edits)) {
    const fresh = r.newBytes.map((b) => `${(b / MiB).toFixed(1)} MiB`).join(' / ');
    console.log(
      `${paramsLabel(r.params)}: ${r.chunks} (${r.uniqueChunks}), ` +
        `${(r.meanChunkBytes / 1024).toFixed(0)} KiB, ${fresh}, ` +
        `${r.mixedMbPerSec.toFixed(0)} (${r.mixedMbPerCpuSec.toFixed(0)} per CPU s)`,
    );
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await main();
}
