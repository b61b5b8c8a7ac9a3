import { CairnError, shortHex } from '../errors.js';
import { hex } from '../repo/blob.js';
import type { Repository } from '../repo/repository.js';
import type { StoredSnapshot } from '../repo/snapshot.js';
import { BlobTable } from './scratch.js';
import { walkSnapshot } from './walk.js';

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

/**
 * Statistics of some snapshots: their logical size, and the distinct blobs they reference
 * (chunks, trees, manifest objects, each counted once however many snapshots share it):
 * `stored_size` is those blobs' stored bytes, `packs` the packs holding them.
 */
export async function snapshotStats(
  repo: Repository,
  snapshots: readonly StoredSnapshot[],
): Promise<RepoStats> {
  const view = await repo.indexView();
  const store = await repo.blobs();
  const table = await BlobTable.create(repo.cacheDir);
  const packs = new Set<string>();
  const s = { chunks: 0, blobs: 0, unique: 0, sealed: 0 };
  const count = async (id: Buffer) => {
    if (!(await table.mark(id))) return;
    const loc = view.get(id);
    if (!loc) throw new CairnError(`blob ${shortHex(id)} is not in the index`, 'Damaged');
    s.blobs++;
    s.sealed += loc.length;
    packs.add(hex(loc.pack));
    if (loc.type !== 'data') return;
    s.chunks++;
    s.unique += loc.rawLength;
  };
  try {
    for (const snap of snapshots) {
      await walkSnapshot(snap, {
        read: (id) => store.get(id),
        chunk: async (id) => {
          await count(id);
          return true;
        },
        seen: (id) => (table.isMarked(id) ? true : undefined),
        record: (id) => count(id),
        unreadable: (_id, err) => {
          throw err;
        },
      });
    }
  } finally {
    await table.close();
  }
  const totalSize = snapshots.reduce((sum, x) => sum + x.size, 0);
  return {
    snapshots: snapshots.length,
    total_size: totalSize,
    stored_size: s.sealed,
    chunks: s.chunks,
    blobs: s.blobs,
    packs: packs.size,
    unique_size: s.unique,
    dedup_ratio: ratio(totalSize, s.unique),
    compression_ratio: ratio(s.unique, s.sealed),
  };
}

function ratio(a: number, b: number): number {
  return b === 0 ? 1 : Math.round((a / b) * 1000) / 1000;
}
