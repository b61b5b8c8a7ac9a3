import { createHash, randomInt } from 'node:crypto';
import { CairnError, shortHex } from '../errors.js';
import { type BlobLocation, hex } from '../repo/blob.js';
import { decodeBlob } from '../repo/blob-codec.js';
import { type PackEntry, packIdFromName, packName, readPackToc } from '../repo/pack.js';
import type { Repository } from '../repo/repository.js';
import type { BlobTable } from './scratch.js';

/** Reasons kept per damaged pack; more are counted, not listed. */
const MAX_REASONS = 10;

/**
 * What check found wrong with packs and blob copies. Held in memory: one entry per damaged
 * pack or blob copy, so its size follows the damage, not the repository.
 */
export class Damage {
  /** Damaged or missing packs (hex) → reasons. */
  readonly packs = new Map<string, { reasons: string[]; more: number }>();
  /** Packs none of whose blobs can be used: missing, or their table of contents unreadable. */
  private readonly whole = new Set<string>();
  /** Single bad copies: blob hex ‖ pack hex. */
  private readonly copies = new Set<string>();

  addPack(pack: string, reason: string, whole: boolean): void {
    let p = this.packs.get(pack);
    if (!p) {
      p = { reasons: [], more: 0 };
      this.packs.set(pack, p);
    }
    if (p.reasons.length < MAX_REASONS) p.reasons.push(reason);
    else p.more++;
    if (whole) this.whole.add(pack);
  }

  addCopy(loc: BlobLocation, reason: string): void {
    this.copies.add(hex(loc.id) + hex(loc.pack));
    this.addPack(hex(loc.pack), reason, false);
  }

  usable(loc: BlobLocation): boolean {
    const pack = hex(loc.pack);
    return !this.whole.has(pack) && !this.copies.has(hex(loc.id) + pack);
  }
}

export interface PackCheckOptions {
  /** Share of packs whose every blob is read and verified: 0 none, 1 all (--read-data). */
  readData: number;
  onProgress?: (done: number, total: number, bytesRead: number) => void;
}

export interface PackCheckStats {
  packs: number;
  packsRead: number;
  bytesRead: number;
  /** Packs no index segment lists: left by an interrupted backup (or one running now). */
  unindexed: string[];
}

/**
 * Checks every indexed pack: it exists, its table of contents opens and agrees with the
 * index; for the sampled share, that the whole pack hashes to its name and every blob opens
 * and hashes to its ID.
 */
export async function checkPacks(
  repo: Repository,
  table: BlobTable,
  damage: Damage,
  opts: PackCheckOptions,
): Promise<PackCheckStats> {
  const sizes = new Map<string, number>();
  for await (const o of repo.backend.list('data')) {
    const id = packIdFromName(o.name);
    if (id) sizes.set(hex(id), o.size);
  }
  const sampled = samplePacks([...sizes.keys()], opts.readData);
  const stats: PackCheckStats = { packs: sizes.size, packsRead: 0, bytesRead: 0, unindexed: [] };
  const indexed = new Set<string>();
  for await (const { pack, entries } of table.packs()) {
    const h = hex(pack);
    indexed.add(h);
    const size = sizes.get(h);
    if (size === undefined) {
      damage.addPack(h, `pack is missing (${entries.length} blobs in the index)`, true);
      continue;
    }
    let toc: PackEntry[];
    try {
      toc = await readPackToc(repo.backend, packName(pack), repo.sealer, size);
    } catch (err) {
      if (!(err instanceof CairnError) || err.code === 'Fatal') throw err;
      damage.addPack(h, err.message, true);
      continue;
    }
    compareWithIndex(toc, entries, damage);
    if (sampled.has(h)) {
      stats.bytesRead += await readData(repo, pack, toc, damage);
      stats.packsRead++;
    }
    opts.onProgress?.(indexed.size, sizes.size, stats.bytesRead);
  }
  stats.unindexed = [...sizes.keys()].filter((h) => !indexed.has(h));
  return stats;
}

/** A random share of the packs (all for 1): a different sample on every run, as restic's. */
function samplePacks(packs: string[], share: number): Set<string> {
  if (share >= 1) return new Set(packs);
  const n = Math.ceil(packs.length * Math.max(0, share));
  for (let i = 0; i < n; i++) {
    const j = i + randomInt(packs.length - i);
    [packs[i], packs[j]] = [packs[j]!, packs[i]!];
  }
  return new Set(packs.slice(0, n));
}

function compareWithIndex(toc: PackEntry[], entries: BlobLocation[], damage: Damage): void {
  const byId = new Map(toc.map((e) => [hex(e.id), e]));
  for (const e of entries) {
    const t = byId.get(hex(e.id));
    const what = `blob ${shortHex(e.id)}`;
    if (!t) {
      damage.addCopy(e, `${what} is in the index but not in the pack`);
    } else if (
      t.offset !== e.offset ||
      t.length !== e.length ||
      t.rawLength !== e.rawLength ||
      t.type !== e.type ||
      t.flags !== e.flags
    ) {
      damage.addCopy(e, `${what}: the index and the pack's table of contents disagree`);
    }
  }
}

/** Reads a whole pack, checks its name and every blob; returns the bytes read. */
async function readData(
  repo: Repository,
  pack: Buffer,
  toc: PackEntry[],
  damage: Damage,
): Promise<number> {
  const bytes = await repo.backend.read(packName(pack));
  if (!createHash('sha256').update(bytes).digest().equals(pack)) {
    damage.addPack(hex(pack), 'pack content does not match its name', false);
  }
  for (const e of toc) {
    const loc = { ...e, pack };
    try {
      decodeBlob(bytes.subarray(e.offset, e.offset + e.length), loc, repo.sealer, repo.hashId);
    } catch (err) {
      if (!(err instanceof CairnError)) throw err;
      damage.addCopy(loc, err.message);
    }
  }
  return bytes.length;
}
