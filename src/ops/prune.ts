import { createHash } from 'node:crypto';
import { CairnError, shortHex } from '../errors.js';
import { type BlobLocation, hex } from '../repo/blob.js';
import { decodeBlob } from '../repo/blob-codec.js';
import { IndexReplacer } from '../repo/index-replace.js';
import { PackBuilder, packName } from '../repo/pack.js';
import type { Repository } from '../repo/repository.js';
import { type LoadedIndex, loadIndex } from './index-load.js';
import { withLock } from './locked.js';
import {
  DEFAULT_MAX_UNUSED,
  isUsedCopy,
  type MaxUnused,
  type PrunePlan,
  planPrune,
} from './prune-plan.js';

export interface PruneOptions {
  maxUnused?: MaxUnused;
  /** Work out and report what would be done; change nothing. */
  dryRun?: boolean;
  /** IDs of snapshots to treat as removed (forget --prune --dry-run). */
  ignore?: ReadonlySet<string>;
}

export interface PruneResult {
  dryRun: boolean;
  snapshots: number;
  packsBefore: number;
  bytesBefore: number;
  /** Packs deleted: unused, repacked and unindexed ones. */
  packsDeleted: number;
  packsRepacked: number;
  /** New packs holding what was copied out of repacked ones. */
  packsWritten: number;
  /** Bytes copied into new packs (sealed blobs). */
  bytesRepacked: number;
  /** Packs left by interrupted backups that no index listed. */
  packsUnindexed: number;
  /** Bytes of packs afterwards (a dry run: an estimate). */
  bytesAfter: number;
  bytesFreed: number;
  /** Unused bytes left in kept packs (within --max-unused). */
  unusedAfter: number;
  segmentsWritten: number;
  segmentsRemoved: number;
}

/** Removes data no snapshot references, under an exclusive lock. */
export function prune(repo: Repository, opts: PruneOptions = {}): Promise<PruneResult> {
  return withLock(repo, true, 'prune', () => pruneLocked(repo, opts));
}

/**
 * Prune for a caller already holding the exclusive lock (forget --prune). Order, so that a
 * crash anywhere leaves a repository check passes: new packs, then new index segments (the
 * last one superseding all old ones), then old segments deleted, then old packs deleted.
 */
export async function pruneLocked(repo: Repository, opts: PruneOptions): Promise<PruneResult> {
  // Snapshots before the index: a snapshot is saved only after the segments it needs.
  const snapshots = (await repo.listSnapshots()).filter((s) => !opts.ignore?.has(s.id));
  const index = await loadIndex(repo);
  try {
    if (index.damaged.length > 0) {
      const names = index.damaged.map((d) => shortHex(d.segment)).join(', ');
      throw new CairnError(
        `cannot prune: index segment(s) ${names} cannot be read; run \`cairn repair index\``,
        'Damaged',
      );
    }
    const plan = await planPrune(repo, index, snapshots, opts.maxUnused ?? DEFAULT_MAX_UNUSED);
    const result = summarize(plan, opts.dryRun === true);
    if (opts.dryRun || !hasWork(plan, index)) return result;
    await execute(repo, index, plan, result);
    await (await repo.indexView()).sync(repo.backend, repo.sealer);
    return result;
  } finally {
    await index.table.close();
  }
}

function hasWork(plan: PrunePlan, index: LoadedIndex): boolean {
  const packs = plan.remove.length + plan.repack.length + plan.unindexed.length;
  return packs > 0 || plan.dangling > 0 || index.superseded.length > 0;
}

async function execute(
  repo: Repository,
  index: LoadedIndex,
  plan: PrunePlan,
  result: PruneResult,
): Promise<void> {
  const replacer = new IndexReplacer(repo.backend, repo.sealer, index.segments);
  const repacker = new Repacker(repo, replacer);
  const removed = new Set(plan.remove.map((u) => hex(u.pack)));
  const repacked = new Set(plan.repack.map((u) => hex(u.pack)));
  for await (const { pack, entries } of index.table.packs()) {
    const h = hex(pack);
    if (!plan.packSizes.has(h) || removed.has(h)) continue;
    if (!repacked.has(h)) {
      // Kept packs keep all their entries, unused ones too: later backups may reuse them.
      for (const e of entries) await replacer.add(e);
      continue;
    }
    const used = entries.filter((e) => isUsedCopy(index.table, plan.packSizes, e));
    await repacker.copy(pack, used);
  }
  await repacker.finish();
  const segments = await replacer.commit();
  result.segmentsWritten = segments.segmentsWritten;
  result.segmentsRemoved = segments.segmentsRemoved;
  const doomed = [...plan.remove, ...plan.repack, ...plan.unindexed].filter(
    (p) => !repacker.reused.has(hex(p.pack)),
  );
  for (const { pack } of doomed) await repo.backend.delete(packName(pack));
  result.packsDeleted = doomed.length;
  result.packsWritten = repacker.packsWritten;
  result.bytesAfter = plan.bytesBefore - sizeOf(doomed) + repacker.bytesWritten;
  result.bytesFreed = plan.bytesBefore - result.bytesAfter;
}

function summarize(plan: PrunePlan, dryRun: boolean): PruneResult {
  const doomed = [...plan.remove, ...plan.repack, ...plan.unindexed];
  const copied = plan.repack.reduce((sum, u) => sum + u.usedBytes, 0);
  const bytesAfter = plan.bytesBefore - sizeOf(doomed) + copied;
  return {
    dryRun,
    snapshots: plan.snapshots,
    packsBefore: plan.packsBefore,
    bytesBefore: plan.bytesBefore,
    packsDeleted: doomed.length,
    packsRepacked: plan.repack.length,
    packsWritten: 0,
    bytesRepacked: copied,
    packsUnindexed: plan.unindexed.length,
    bytesAfter,
    bytesFreed: plan.bytesBefore - bytesAfter,
    unusedAfter: plan.unusedAfter,
    segmentsWritten: 0,
    segmentsRemoved: 0,
  };
}

function sizeOf(packs: readonly { size: number }[]): number {
  return packs.reduce((sum, p) => sum + p.size, 0);
}

/**
 * Copies used blobs out of partly used packs into new ones, sealed bytes as they are (a seal
 * does not depend on where it is stored), after verifying each: prune never spreads damage.
 * Data and metadata stay in separate packs, as the blob store keeps them.
 */
class Repacker {
  private readonly builders = { data: new PackBuilder(), meta: new PackBuilder() };
  packsWritten = 0;
  bytesWritten = 0;
  /**
   * New packs that already existed byte for byte (possible only without encryption, after an
   * interrupted prune): kept, even if the plan meant to delete them.
   */
  readonly reused = new Set<string>();

  constructor(
    private readonly repo: Repository,
    private readonly replacer: IndexReplacer,
  ) {}

  async copy(pack: Buffer, used: readonly BlobLocation[]): Promise<void> {
    const bytes = await this.repo.backend.read(packName(pack));
    for (const loc of used) {
      const sealed = bytes.subarray(loc.offset, loc.offset + loc.length);
      try {
        decodeBlob(sealed, loc, this.repo.sealer, this.repo.hashId);
      } catch (err) {
        throw new CairnError(
          `cannot prune: ${(err as Error).message}; nothing was deleted (run \`cairn check\`)`,
          'Damaged',
        );
      }
      const cls = loc.type === 'data' ? 'data' : 'meta';
      const { id, type, flags, rawLength } = loc;
      this.builders[cls].add({ id, type, flags, rawLength }, sealed);
      if (this.builders[cls].byteSize >= this.repo.config.packSize) await this.write(cls);
    }
  }

  async finish(): Promise<void> {
    await this.write('data');
    await this.write('meta');
  }

  private async write(cls: 'data' | 'meta'): Promise<void> {
    const builder = this.builders[cls];
    if (builder.count === 0) return;
    this.builders[cls] = new PackBuilder();
    const sha256 = async (b: Buffer) => createHash('sha256').update(b).digest();
    const { id, bytes, entries } = await builder.finish(this.repo.sealer, sha256);
    if (await this.repo.backend.stat(packName(id))) {
      this.reused.add(hex(id));
    } else {
      await this.repo.backend.write(packName(id), bytes);
      this.packsWritten++;
      this.bytesWritten += bytes.length;
    }
    for (const e of entries) await this.replacer.add({ ...e, pack: id });
  }
}
