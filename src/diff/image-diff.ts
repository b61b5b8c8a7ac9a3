import { type ByteRange, changedRanges } from '../image/compare.js';
import { loadManifest, ManifestIndex } from '../image/manifest-reader.js';
import { isExtended, type Partition } from '../image/partitions.js';
import type { BlobStore } from '../repo/blob-store.js';
import type { Snapshot } from '../repo/snapshot.js';

export interface PartitionDiff extends Partition {
  changedBytes: number;
}

export interface ImageDiffSummary {
  type: 'summary';
  sizeA: number;
  sizeB: number;
  /** Bytes of B that differ from A (all of B past A's end). */
  changedBytes: number;
  /** Merged changed ranges. */
  ranges: number;
  /** B's chunks inside the changed ranges: what turning A into B must fetch. */
  changedChunks: number;
  /** A's chunks inside the changed ranges: what B no longer has there. */
  replacedChunks: number;
  /** B's partitions (A's when B has none), with the changed bytes inside each. */
  partitions: PartitionDiff[];
}

export type ImageDiffEvent = ({ type: 'range' } & ByteRange) | ImageDiffSummary;

/**
 * The byte ranges where image snapshot B differs from A, then a summary. Chunks are
 * compared by ID at the same offset, never by reading data, and segments that are the same
 * on both sides are skipped unread (see `changedRanges`); ranges are as fine as the chunks.
 */
export async function* diffImages(
  store: BlobStore,
  a: Snapshot,
  b: Snapshot,
): AsyncGenerator<ImageDiffEvent> {
  const [ma, mb] = await Promise.all([loadManifest(store, a), loadManifest(store, b)]);
  const ia = new ManifestIndex(store, ma);
  const ib = new ManifestIndex(store, mb);
  const partitions = partitionsOf(b) ?? partitionsOf(a) ?? [];
  const summary: ImageDiffSummary = {
    type: 'summary',
    sizeA: ia.size,
    sizeB: ib.size,
    changedBytes: 0,
    ranges: 0,
    changedChunks: 0,
    replacedChunks: 0,
    partitions: partitions.map((p) => ({ ...p, changedBytes: 0 })),
  };
  for await (const r of changedRanges(ia, ib)) {
    summary.changedBytes += r.length;
    summary.ranges++;
    summary.changedChunks += await chunksIn(ib, r);
    summary.replacedChunks += await chunksIn(ia, r);
    for (const p of summary.partitions) p.changedBytes += overlap(r, p.start, p.size);
    yield { type: 'range', ...r };
  }
  yield summary;
}

/**
 * Chunks (not holes) of one image that lie in a changed range. A chunk is the same on both
 * sides only with the same ID, offset and length, so none straddles a range's edge.
 */
async function chunksIn(index: ManifestIndex, r: ByteRange): Promise<number> {
  const end = r.offset + r.length;
  let n = 0;
  for await (const e of index.entries(r.offset)) {
    if (e.offset >= end) break;
    if (e.id) n++;
  }
  return n;
}

function overlap(r: ByteRange, start: number, size: number): number {
  return Math.max(0, Math.min(r.offset + r.length, start + size) - Math.max(r.offset, start));
}

/** Volumes from the snapshot's partition table; extended containers would count twice. */
function partitionsOf(s: Snapshot): Partition[] | undefined {
  const parts = s.extra?.partitions;
  if (!Array.isArray(parts) || parts.length === 0) return undefined;
  return (parts as Partition[]).filter((p) => !isExtended(p));
}

/** The summary under the `diff --json` names. */
export function imageSummaryJson(s: ImageDiffSummary): Record<string, unknown> {
  return {
    size_a: s.sizeA,
    size_b: s.sizeB,
    changed_bytes: s.changedBytes,
    changed_chunks: s.changedChunks,
    replaced_chunks: s.replacedChunks,
    ranges: s.ranges,
    partitions: s.partitions.map(({ changedBytes, ...p }) => ({
      ...p,
      changed_bytes: changedBytes,
    })),
  };
}
