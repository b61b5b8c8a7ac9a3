import { createCipheriv } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { BlobLocation } from '../src/repo/blob.js';
import { IndexView } from '../src/repo/index-view.js';
import type { ExtraRow } from './extras.js';
import { diskUsage, loadAverage, timed } from './measure.js';

/*
 * Index scale: cairn's local index view (src/repo/index-view.ts, LevelDB) holding 10^4, 10^6
 * and 10^7 synthetic entries. For each size one child process builds the view through
 * IndexView.addSegment, the call a backup makes for every index segment it writes (segments
 * of 32 768 entries, as BlobStore writes them), and a second child opens it and looks up
 * random IDs that are there (get, decoded) and that are not (has: the question a backup asks
 * of every chunk). Each child is timed with its peak RSS (GNU time %M), so the figures are
 * per size: a flat peak RSS is the point, where an index held in memory grows with it.
 * Entry IDs are AES-256-ECB of their number, so the build makes them in bulk and the lookup
 * child re-makes any of them without the build's help.
 */

export interface IndexScaleRow {
  entries: number;
  buildSeconds: number;
  buildPeakRssMiB: number;
  /** The largest anonymous (heap) part of the RSS seen, sampled after every segment. */
  buildAnonMiB: number;
  lookupPeakRssMiB: number;
  /** At the end of the lookups: heap, and file pages of the view LevelDB has mapped. */
  lookupAnonMiB: number;
  lookupFileMiB: number;
  hitsPerSec: number;
  missesPerSec: number;
  viewBytes: number;
  load: string;
}

const SEGMENT = 32_768;
const ENTRIES_PER_PACK = 512;
const KEY = Buffer.alloc(32, 0x5a);
const SELF = fileURLToPath(import.meta.url);

/** The IDs of the entries numbered `numbers` (below 2^48), 32 bytes each, in one buffer. */
function ids(numbers: ArrayLike<number>): Buffer {
  const plain = Buffer.alloc(numbers.length * 32);
  for (let i = 0; i < numbers.length; i++) {
    // Two AES blocks per ID: the entry's number with a 0 and a 1 in the last byte.
    plain.writeUIntLE(numbers[i]!, i * 32, 6);
    plain.writeUIntLE(numbers[i]!, i * 32 + 16, 6);
    plain[i * 32 + 31] = 1;
  }
  const ecb = createCipheriv('aes-256-ecb', KEY, null).setAutoPadding(false);
  return ecb.update(plain);
}

function range(from: number, count: number): Float64Array {
  const out = new Float64Array(count);
  for (let i = 0; i < count; i++) out[i] = from + i;
  return out;
}

/**
 * Resident memory in MiB: anonymous (heap, LevelDB's caches) and file-backed. LevelDB maps
 * the view's table files, so pages it has read count in the RSS as well, though they are page
 * cache the kernel reclaims under pressure rather than memory the process holds.
 */
function resident(): { anon: number; file: number } {
  const status = readFileSync('/proc/self/status', 'utf8');
  const kib = (field: string) => Number(new RegExp(`${field}:\\s+(\\d+)`).exec(status)?.[1] ?? 0);
  return { anon: kib('RssAnon') / 1024, file: kib('RssFile') / 1024 };
}

async function build(dir: string, entries: number, out: string): Promise<void> {
  const view = await IndexView.open(dir);
  let anon = 0;
  try {
    for (let first = 0; first < entries; first += SEGMENT) {
      const n = Math.min(SEGMENT, entries - first);
      const buf = ids(range(first, n));
      const batch: BlobLocation[] = [];
      let pack: Buffer = Buffer.alloc(32);
      for (let i = 0; i < n; i++) {
        const k = first + i;
        if (k % ENTRIES_PER_PACK === 0 || i === 0) pack = ids([2 ** 46 + k]).subarray(0, 32);
        const id = buf.subarray(i * 32, i * 32 + 32);
        const length = 4096 + (k % 1021) * 997;
        const offset = (k % ENTRIES_PER_PACK) * 32_768;
        batch.push({ id, type: 'data', flags: 1, pack, offset, length, rawLength: length * 2 });
      }
      await view.addSegment(ids([2 ** 47 + first]).toString('hex'), batch);
      anon = Math.max(anon, resident().anon);
    }
    writeFileSync(out, JSON.stringify({ anon }));
  } finally {
    await view.close();
  }
}

async function lookup(dir: string, entries: number, count: number, out: string): Promise<void> {
  const pick = new Float64Array(count);
  let x = 12345;
  for (let i = 0; i < count; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    pick[i] = Math.floor((x / 2 ** 32) * entries);
  }
  const hits = ids(pick);
  const misses = ids(pick.map((k) => 2 ** 45 + k));
  const view = await IndexView.open(dir);
  try {
    let started = performance.now();
    for (let i = 0; i < count; i++) {
      if (!view.get(hits.subarray(i * 32, i * 32 + 32))) throw new Error(`entry ${pick[i]} lost`);
    }
    const hitsPerSec = count / ((performance.now() - started) / 1000);
    started = performance.now();
    for (let i = 0; i < count; i++) {
      if (view.has(misses.subarray(i * 32, i * 32 + 32))) throw new Error('a miss was found');
    }
    const missesPerSec = count / ((performance.now() - started) / 1000);
    const { anon, file } = resident();
    writeFileSync(out, JSON.stringify({ hitsPerSec, missesPerSec, anon, file }));
  } finally {
    await view.close();
  }
}

/** Builds and probes a view of `entries` entries in two child processes. */
export async function benchIndexSize(entries: number, lookups: number): Promise<IndexScaleRow> {
  const dir = mkdtempSync(join(tmpdir(), 'cairn-bench-index-'));
  try {
    const log = join(dir, 'log');
    const view = join(dir, 'view');
    const node = (args: string[]) => ({ file: process.execPath, args, env: process.env });
    const result = join(dir, 'result.json');
    const b = await timed(node([SELF, 'build', view, String(entries), result]), log);
    const built = JSON.parse(readFileSync(result, 'utf8'));
    // Warm: the view is in the page cache after the build, as after a backup's first minute.
    const l = await timed(
      node([SELF, 'lookup', view, String(entries), String(lookups), result]),
      log,
    );
    const looked = JSON.parse(readFileSync(result, 'utf8'));
    return {
      entries,
      buildSeconds: b.seconds,
      buildPeakRssMiB: b.peakRssKiB / 1024,
      buildAnonMiB: built.anon,
      lookupPeakRssMiB: l.peakRssKiB / 1024,
      lookupAnonMiB: looked.anon,
      lookupFileMiB: looked.file,
      hitsPerSec: looked.hitsPerSec,
      missesPerSec: looked.missesPerSec,
      viewBytes: diskUsage([view]),
      load: loadAverage(),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function benchIndexScale(sizes: number[], lookups: number): Promise<IndexScaleRow[]> {
  const rows: IndexScaleRow[] = [];
  for (const n of sizes) rows.push(await benchIndexSize(n, lookups));
  return rows;
}

/**
 * The bench's rows: 10^4 and 10^6 entries (--quick: 10^4 and 10^5), and 10^7 with
 * CAIRN_BENCH_INDEX_MAX=1e7: its build took 7.3 minutes here at load average 11.
 */
export async function indexRows(quick: boolean): Promise<ExtraRow[]> {
  const max = Number(process.env.CAIRN_BENCH_INDEX_MAX ?? 1e6);
  const sizes = (quick ? [1e4, 1e5] : [1e4, 1e6, 1e7]).filter((n) => n <= max);
  const rows = await benchIndexScale(sizes, quick ? 20_000 : 100_000);
  const mib = (x: number) => `${x.toFixed(0)} MiB`;
  return rows.flatMap((r): ExtraRow[] => {
    const size = `${r.entries.toLocaleString('en')} entries`;
    const { hitsPerSec, missesPerSec, entries, load, ...values } = r;
    return [
      {
        section: 'index',
        case: `build, ${size}`,
        seconds: r.buildSeconds,
        note:
          `${Math.round(entries / r.buildSeconds)} entries/s; peak RSS ${mib(r.buildPeakRssMiB)} ` +
          `(anonymous ${mib(r.buildAnonMiB)}); view ${(r.viewBytes / 1e6).toFixed(0)} MB; load ${load}`,
        values: { entries, ...values },
      },
      {
        section: 'index',
        case: `lookups, ${size}`,
        note:
          `${Math.round(hitsPerSec)} hits/s, ${Math.round(missesPerSec)} misses/s; peak RSS ` +
          `${mib(r.lookupPeakRssMiB)} (anonymous ${mib(r.lookupAnonMiB)}, mapped view and ` +
          `binary ${mib(r.lookupFileMiB)})`,
        values: { entries, hitsPerSec, missesPerSec },
      },
    ];
  });
}

async function main(argv: string[]): Promise<void> {
  const [mode, dir, n, count, out] = argv;
  if (mode === 'build') return build(dir!, Number(n), count!);
  if (mode === 'lookup') return lookup(dir!, Number(n), Number(count), out!);
  // Standalone: node dist/bench/index-scale.js [sizes…], e.g. 10000 1000000 10000000.
  const sizes = argv.length > 0 ? argv.map(Number) : [1e4, 1e6];
  for (const row of await benchIndexScale(sizes, 100_000)) {
    process.stdout.write(`${JSON.stringify(row)}\n`);
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  await main(process.argv.slice(2));
}
