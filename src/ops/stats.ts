import type { Repository } from '../repo/repository.js';

export interface RepoStats {
  snapshots: number;
  /** Sum of the snapshots' logical sizes. */
  total_size: number;
  /** Bytes of all packs in the repository. */
  stored_size: number;
  /** Distinct data chunks. */
  chunks: number;
  /** All distinct blobs (chunks, trees, manifest segments). */
  blobs: number;
  packs: number;
  /** Bytes of distinct chunks before compression. */
  unique_size: number;
  /** total_size / unique_size: how much deduplication saves. */
  dedup_ratio: number;
  /** unique_size / stored blob bytes: how much compression saves. */
  compression_ratio: number;
}

/** Whole-repository statistics, from the snapshot list, the pack listing and the index view. */
export async function repositoryStats(repo: Repository): Promise<RepoStats> {
  const snapshots = await repo.listSnapshots();
  let packs = 0;
  let storedSize = 0;
  for await (const o of repo.backend.list('data')) {
    packs++;
    storedSize += o.size;
  }
  let chunks = 0;
  let blobs = 0;
  let uniqueSize = 0;
  let sealedSize = 0;
  for await (const loc of (await repo.indexView()).entries()) {
    blobs++;
    sealedSize += loc.length;
    if (loc.type !== 'data') continue;
    chunks++;
    uniqueSize += loc.rawLength;
  }
  const totalSize = snapshots.reduce((sum, s) => sum + s.size, 0);
  return {
    snapshots: snapshots.length,
    total_size: totalSize,
    stored_size: storedSize,
    chunks,
    blobs,
    packs,
    unique_size: uniqueSize,
    dedup_ratio: ratio(totalSize, uniqueSize),
    compression_ratio: ratio(uniqueSize, sealedSize),
  };
}

function ratio(a: number, b: number): number {
  return b === 0 ? 1 : Math.round((a / b) * 1000) / 1000;
}
