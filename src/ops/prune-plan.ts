import { CairnError, shortHex } from '../errors.js';
import { type BlobLocation, hex } from '../repo/blob.js';
import { packIdFromName } from '../repo/pack.js';
import type { Repository } from '../repo/repository.js';
import type { StoredSnapshot } from '../repo/snapshot.js';
import { readAnyCopy } from './blobs.js';
import type { LoadedIndex } from './index-load.js';
import type { BlobTable } from './scratch.js';
import { walkSnapshot } from './walk.js';

/** Unused bytes tolerated in kept packs: a share of the repository, an amount, or any. */
export type MaxUnused = { percent: number } | { bytes: number } | 'unlimited';

/** restic's default: repack until at most 5% of what stays is unused. */
export const DEFAULT_MAX_UNUSED: MaxUnused = { percent: 5 };

export interface PackUsage {
  pack: Buffer;
  /** Bytes of the pack file. */
  size: number;
  usedBlobs: number;
  usedBytes: number;
  unusedBlobs: number;
  unusedBytes: number;
}

export interface PrunePlan {
  snapshots: number;
  packsBefore: number;
  bytesBefore: number;
  /** The packs as they are in the repository: name (hex) → size. Pack counts stay small. */
  packSizes: Map<string, number>;
  /** Packs no snapshot needs anything from: deleted whole. */
  remove: PackUsage[];
  /** Partly used packs: what is used is copied to new packs, then they are deleted. */
  repack: PackUsage[];
  /** Packs no index segment lists (left by interrupted backups): deleted. */
  unindexed: { pack: Buffer; size: number }[];
  /** Index entries naming packs that do not exist: left out of the new index. */
  dangling: number;
  usedBytes: number;
  /** Unused bytes left in kept packs afterwards. */
  unusedAfter: number;
}

/**
 * Works out what prune will do: marks every blob the snapshots reach, then sorts packs into
 * kept, removed and repacked ones. Refuses (before anything is changed) when a snapshot needs
 * a blob the index does not have or a tree that cannot be read: deleting then could lose data.
 */
export async function planPrune(
  repo: Repository,
  index: LoadedIndex,
  snapshots: readonly StoredSnapshot[],
  maxUnused: MaxUnused,
): Promise<PrunePlan> {
  const packSizes = new Map<string, number>();
  for await (const o of repo.backend.list('data')) {
    const id = packIdFromName(o.name);
    if (id) packSizes.set(hex(id), o.size);
  }
  await markUsed(repo, index.table, snapshots, packSizes);
  const plan: PrunePlan = {
    snapshots: snapshots.length,
    packsBefore: packSizes.size,
    bytesBefore: [...packSizes.values()].reduce((a, b) => a + b, 0),
    packSizes,
    remove: [],
    repack: [],
    unindexed: [],
    dangling: 0,
    usedBytes: 0,
    unusedAfter: 0,
  };
  const candidates: PackUsage[] = [];
  const indexed = new Set<string>();
  for await (const { pack, entries } of index.table.packs()) {
    const size = packSizes.get(hex(pack));
    if (size === undefined) {
      plan.dangling += entries.length;
      continue;
    }
    indexed.add(hex(pack));
    const usage = packUsage(index.table, packSizes, pack, size, entries);
    plan.usedBytes += usage.usedBytes;
    if (usage.usedBlobs === 0) plan.remove.push(usage);
    else if (usage.unusedBlobs > 0) candidates.push(usage);
  }
  for (const [h, size] of packSizes) {
    if (!indexed.has(h)) plan.unindexed.push({ pack: Buffer.from(h, 'hex'), size });
  }
  chooseRepacks(plan, candidates, maxUnused);
  return plan;
}

/** Whether `loc` is the copy prune keeps of a blob some snapshot needs. */
export function isUsedCopy(
  table: BlobTable,
  packSizes: ReadonlyMap<string, number>,
  loc: BlobLocation,
): boolean {
  if (!table.isMarked(loc.id)) return false;
  // Of several copies (two backups stored the same blob), the first in an existing pack.
  const chosen = table.copies(loc.id).find((c) => packSizes.has(hex(c.pack)));
  return chosen?.pack.equals(loc.pack) === true;
}

async function markUsed(
  repo: Repository,
  table: BlobTable,
  snapshots: readonly StoredSnapshot[],
  packSizes: ReadonlyMap<string, number>,
): Promise<void> {
  const present = (id: Buffer) => table.copies(id).filter((c) => packSizes.has(hex(c.pack)));
  for (const snap of snapshots) {
    const refuse = (what: string) =>
      new CairnError(
        `cannot prune: snapshot ${shortHex(snap.id)} needs ${what}; ` +
          'nothing was changed (run `cairn check`, then `cairn repair index`)',
        'Damaged',
      );
    await walkSnapshot(snap, {
      read: (id) => readAnyCopy(repo, id, present(id)),
      chunk: async (id) => {
        if (present(id).length === 0) throw refuse(`chunk ${shortHex(id)}, which is in no pack`);
        await table.mark(id);
        return true;
      },
      seen: (id) => (table.isMarked(id) ? true : undefined),
      record: async (id) => {
        await table.mark(id);
      },
      unreadable: (_id, err) => {
        throw refuse(`an object that cannot be read (${err.message})`);
      },
    });
  }
}

function packUsage(
  table: BlobTable,
  packSizes: ReadonlyMap<string, number>,
  pack: Buffer,
  size: number,
  entries: readonly BlobLocation[],
): PackUsage {
  const u = { pack, size, usedBlobs: 0, usedBytes: 0, unusedBlobs: 0, unusedBytes: 0 };
  for (const e of entries) {
    if (isUsedCopy(table, packSizes, e)) {
      u.usedBlobs++;
      u.usedBytes += e.length;
    } else {
      u.unusedBlobs++;
      u.unusedBytes += e.length;
    }
  }
  return u;
}

/**
 * restic's rule: repack the most wasteful partly used packs first until the unused bytes left
 * are within the limit, a percentage meaning "of the repository after prune".
 */
function chooseRepacks(plan: PrunePlan, candidates: PackUsage[], max: MaxUnused): void {
  let limit = Number.POSITIVE_INFINITY;
  if (max !== 'unlimited' && 'bytes' in max) limit = max.bytes;
  else if (max !== 'unlimited' && max.percent < 100) {
    limit = (max.percent / (100 - max.percent)) * plan.usedBytes;
  }
  let unused = candidates.reduce((sum, c) => sum + c.unusedBytes, 0);
  const order = [...candidates].sort(
    (a, b) => b.unusedBytes / b.size - a.unusedBytes / a.size || b.unusedBytes - a.unusedBytes,
  );
  for (const c of order) {
    if (unused <= limit) break;
    plan.repack.push(c);
    unused -= c.unusedBytes;
  }
  plan.unusedAfter = unused;
}
