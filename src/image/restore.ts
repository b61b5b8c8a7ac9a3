import { isAllZero } from '../chunker/index.js';
import type { IdHasher } from '../crypto/index.js';
import { CairnError } from '../errors.js';
import { ChunkFetcher } from '../repo/chunk-fetcher.js';
import type { Repository } from '../repo/repository.js';
import type { Snapshot } from '../repo/snapshot.js';
import { loadManifest, ManifestIndex, type PlacedEntry } from './manifest-reader.js';
import { discardTarget, openTarget, type RestoreTarget, readTarget } from './target.js';
import { verifyTarget } from './verify.js';
import { OrderedWindow } from './window.js';

export interface RestoreImageOptions {
  /** Write only the chunks whose bytes differ from what the target already holds. */
  delta?: boolean;
  /** Read every restored byte back and check it against its chunk ID. */
  verify?: boolean;
  signal?: AbortSignal;
  onProgress?: (p: RestoreProgress) => void;
}

export interface RestoreProgress {
  phase: 'restore' | 'verify';
  bytesDone: number;
  bytesTotal: number;
  bytesWritten: number;
  bytesSkipped: number;
}

export interface RestoreImageResult {
  size: number;
  targetKind: 'file' | 'blockdev';
  /** Bytes written to the target (data and zeros). */
  bytesWritten: number;
  /** Bytes not written: already equal (delta) or holes left sparse in a new file. */
  bytesSkipped: number;
  chunksWritten: number;
  chunksSkipped: number;
  verified: boolean;
  /** Seconds. */
  totalDuration: number;
}

/**
 * Chunks fetched (or, with delta, compared) ahead of the writer: fetching is a pack read,
 * decryption and decompression per chunk, so several in flight hide their latency, and
 * half a window requested at once is read in one or two pack-range reads.
 */
const FETCH_AHEAD = 16;
const BYTES_AHEAD = 64 << 20;
const WRITES_IN_FLIGHT = 4;
/** Zeros are written and compared in pieces of this size. */
const ZERO_PIECE = 8 << 20;
const ZEROS = Buffer.alloc(ZERO_PIECE);
/** With delta, a hole is compared in blocks this size and only non-zero blocks cleared. */
const ZERO_CHECK = 64 << 10;
const PROGRESS_EVERY_MS = 100;

/** What to write for one entry: positioned buffers; bytes not listed are skipped. */
interface EntryPlan {
  entry: PlacedEntry;
  writes: { offset: number; data: Buffer }[];
}

/**
 * Restores an image snapshot onto `target`: a regular file (created sparse, or with `delta`
 * updated in place) or an existing block device (written in place; holes are written as
 * zeros unless `delta` finds them zero already). Holds a shared lock.
 */
export async function restoreImage(
  repo: Repository,
  snap: Snapshot,
  target: string,
  opts: RestoreImageOptions = {},
): Promise<RestoreImageResult> {
  const started = performance.now();
  const lock = await repo.lock(false, 'restore');
  try {
    const store = await repo.blobs();
    const index = new ManifestIndex(store, await loadManifest(store, snap));
    const t = await openTarget(target, index.size, opts.delta === true);
    try {
      // From remote storage, each pack is read once, whole, unless a delta restore skips most.
      const wholePacks = !opts.delta && repo.backend.traits?.remote === true;
      const fetcher = new ChunkFetcher(repo.backend, store, { wholePacks });
      const result = await writeImage(repo.hashId, fetcher, index, t, opts).catch(
        async (err: unknown) => {
          await discardTarget(t);
          throw err;
        },
      );
      // A device is synced before we report success (it may be unplugged next); a file is
      // left to writeback like any copy: syncing 1 GiB doubled restore time here.
      if (t.kind === 'file') await t.fh.truncate(index.size);
      else await t.fh.sync();
      if (opts.verify) {
        const report = (bytesDone: number) =>
          opts.onProgress?.({ ...result, phase: 'verify', bytesDone, bytesTotal: index.size });
        const bad = await verifyTarget(repo.hashId, index, t.fh, { ...opts, onProgress: report });
        if (bad.length > 0) {
          const first = bad[0]!;
          throw new CairnError(
            `verify failed: ${bad.length} chunk(s) of ${target} differ from the snapshot, ` +
              `the first at offset ${first.offset} (${first.length} bytes)`,
            'Damaged',
          );
        }
      }
      return {
        ...result,
        size: index.size,
        targetKind: t.kind,
        verified: opts.verify === true,
        totalDuration: (performance.now() - started) / 1000,
      };
    } finally {
      await t.fh.close();
    }
  } finally {
    await lock.release();
  }
}

type WriteCounts = Pick<
  RestoreImageResult,
  'bytesWritten' | 'bytesSkipped' | 'chunksWritten' | 'chunksSkipped'
>;

async function writeImage(
  hashId: IdHasher,
  fetcher: ChunkFetcher,
  index: ManifestIndex,
  t: RestoreTarget,
  opts: RestoreImageOptions,
): Promise<WriteCounts> {
  const counts: WriteCounts = {
    bytesWritten: 0,
    bytesSkipped: 0,
    chunksWritten: 0,
    chunksSkipped: 0,
  };
  const window = new OrderedWindow<EntryPlan>(FETCH_AHEAD, BYTES_AHEAD);
  let bytesDone = 0;
  let lastReport = 0;
  // Writes to disjoint ranges go on in the thread pool while the next chunks are decoded.
  const writes = new OrderedWindow<unknown>(WRITES_IN_FLIGHT, BYTES_AHEAD);
  const write = async (plan: EntryPlan) => {
    let written = 0;
    for (const w of plan.writes) {
      // A chunk's memory is lent by the fetcher, to give back once written (zeros are not).
      const done = t.fh.write(w.data, 0, w.data.length, w.offset);
      writes.push(
        done.finally(() => fetcher.release(w.data)),
        w.data.length,
      );
      while (writes.full) await writes.shift();
      written += w.data.length;
    }
    counts.bytesWritten += written;
    counts.bytesSkipped += plan.entry.length - written;
    if (plan.entry.id) counts[written > 0 ? 'chunksWritten' : 'chunksSkipped']++;
    bytesDone += plan.entry.length;
    if (Date.now() - lastReport >= PROGRESS_EVERY_MS) {
      lastReport = Date.now();
      opts.onProgress?.({ ...counts, phase: 'restore', bytesDone, bytesTotal: index.size });
    }
  };
  try {
    for await (const entry of index.entries()) {
      if (opts.signal?.aborted) throw new CairnError('interrupted', 'Interrupted');
      window.push(
        planEntry(hashId, fetcher, t, entry, opts.delta === true),
        entry.id ? entry.length : 0,
      );
      // Refilled half a window at a time: the fetcher reads the chunks requested in one
      // turn a pack range at a time.
      if (window.full) while (window.size > FETCH_AHEAD / 2) await write(await window.shift());
    }
    while (window.size > 0) await write(await window.shift());
    while (writes.size > 0) await writes.shift();
  } catch (err) {
    await Promise.all([window.settle(), writes.settle()]);
    throw err;
  }
  opts.onProgress?.({ ...counts, phase: 'restore', bytesDone, bytesTotal: index.size });
  return counts;
}

async function planEntry(
  hashId: IdHasher,
  fetcher: ChunkFetcher,
  t: RestoreTarget,
  entry: PlacedEntry,
  delta: boolean,
): Promise<EntryPlan> {
  if (entry.id) {
    if (delta) {
      const have = await readTarget(t.fh, entry.offset, entry.length);
      if (have.length === entry.length && hashId(have).equals(entry.id))
        return { entry, writes: [] };
    }
    const data = await fetcher.lend(entry.id, entry.length);
    return { entry, writes: [{ offset: entry.offset, data }] };
  }
  if (t.fresh) return { entry, writes: [] };
  const writes: EntryPlan['writes'] = [];
  const end = entry.offset + entry.length;
  for (let off = entry.offset; off < end; off += ZERO_PIECE) {
    const n = Math.min(ZERO_PIECE, end - off);
    if (!delta) {
      writes.push({ offset: off, data: ZEROS.subarray(0, n) });
      continue;
    }
    const have = await readTarget(t.fh, off, n);
    for (let b = 0; b < n; b += ZERO_CHECK) {
      const len = Math.min(ZERO_CHECK, n - b);
      const block = have.subarray(b, b + len);
      if (block.length === len && isAllZero(block)) continue;
      const last = writes.at(-1);
      // Adjacent blocks to clear are written as one.
      if (
        last &&
        last.offset + last.data.length === off + b &&
        last.data.length + len <= ZERO_PIECE
      ) {
        last.data = ZEROS.subarray(0, last.data.length + len);
      } else writes.push({ offset: off + b, data: ZEROS.subarray(0, len) });
    }
  }
  return { entry, writes };
}
