import { createHash } from 'node:crypto';
import { validateChunkerParams } from '../chunker/index.js';
import { readKeyFileInfo } from '../crypto/index.js';
import { CairnError, shortHex } from '../errors.js';
import { decodeConfig } from '../repo/config.js';
import { packName } from '../repo/pack.js';
import type { Repository } from '../repo/repository.js';
import { listSnapshotIds, loadSnapshot, type StoredSnapshot } from '../repo/snapshot.js';
import { checkPacks, Damage, type PackCheckOptions } from './check-packs.js';
import { type Affected, type Attribution, checkSnapshots } from './check-snapshots.js';
import { loadIndex } from './index-load.js';
import { withLock } from './locked.js';

export interface CheckOptions {
  /** Share of packs to read whole and verify blob by blob: 0 (default) to 1 (--read-data). */
  readData?: number;
  onProgress?: PackCheckOptions['onProgress'];
}

export interface CheckProblem {
  kind: 'config' | 'key' | 'index' | 'pack' | 'snapshot';
  /** The damaged object: `config`, `keys/…`, `index/…`, `data/…/…`, `snapshots/…`. */
  object: string;
  message: string;
  /** Snapshots that cannot be restored intact because of it, with the files affected. */
  affected: Affected[];
}

export interface CheckReport {
  ok: boolean;
  snapshots: number;
  segments: number;
  packs: number;
  blobs: number;
  packsRead: number;
  bytesRead: number;
  problems: CheckProblem[];
  /** Harmless findings, e.g. packs left by an interrupted backup. */
  notes: string[];
}

/**
 * Checks the repository's structure (config, keys, index segments, every pack's table of
 * contents against the index, every snapshot's trees and manifests complete) and, with
 * `readData`, every stored byte. Under a shared lock: backups may run meanwhile; what they
 * add after the snapshot list was read is at most noted, never reported as damage.
 */
export function check(repo: Repository, opts: CheckOptions = {}): Promise<CheckReport> {
  return withLock(repo, false, 'check', async () => {
    const problems: CheckProblem[] = [];
    const notes: string[] = [];
    await checkConfig(repo, problems);
    await checkKeys(repo, problems);
    // Snapshots before the index: a snapshot is saved only after the segments it needs.
    const snapshots = await loadSnapshots(repo, problems);
    const index = await loadIndex(repo);
    try {
      for (const d of index.damaged) problems.push(problem('index', `index/${d.segment}`, d.error));
      if (index.superseded.length > 0) {
        notes.push(
          `${index.superseded.length} replaced index segment(s) not yet deleted ` +
            '(an interrupted prune or repair; the next prune removes them)',
        );
      }
      const damage = new Damage();
      const packs = await checkPacks(repo, index.table, damage, {
        readData: opts.readData ?? 0,
        onProgress: opts.onProgress,
      });
      if (packs.unindexed.length > 0) {
        notes.push(
          `${packs.unindexed.length} pack(s) not in the index (left by an interrupted backup, ` +
            'or written by one running now); `cairn prune` removes them',
        );
      }
      const found = await checkSnapshots(repo, index.table, damage, snapshots);
      problems.push(...damageProblems(damage, found.attribution));
      for (const s of found.incomplete) {
        if (!problems.some((p) => p.affected.some((a) => a.snapshot === s.id))) {
          problems.push(problem('snapshot', `snapshots/${s.id}`, 'snapshot is incomplete'));
        }
      }
      return {
        ok: problems.length === 0,
        snapshots: snapshots.length,
        segments: index.segments.length,
        packs: packs.packs,
        blobs: index.entries,
        packsRead: packs.packsRead,
        bytesRead: packs.bytesRead,
        problems,
        notes,
      };
    } finally {
      await index.table.close();
    }
  });
}

function problem(kind: CheckProblem['kind'], object: string, message: string): CheckProblem {
  return { kind, object, message, affected: [] };
}

async function checkConfig(repo: Repository, problems: CheckProblem[]): Promise<void> {
  try {
    const config = decodeConfig(await repo.backend.read('config'), repo.sealer);
    validateChunkerParams(config.chunker);
    if (!(config.packSize > 0)) throw new CairnError(`pack size ${config.packSize} is invalid`);
  } catch (err) {
    if (!(err instanceof CairnError) || err.code === 'Fatal') throw err;
    problems.push(problem('config', 'config', err.message));
  }
}

async function checkKeys(repo: Repository, problems: CheckProblem[]): Promise<void> {
  let keys = 0;
  for await (const o of repo.backend.list('keys')) {
    keys++;
    const bytes = await repo.backend.read(o.name);
    const name = o.name.slice('keys/'.length);
    try {
      if (createHash('sha256').update(bytes).digest('hex') !== name) {
        throw new CairnError(`key file ${shortHex(name)} does not match its name`, 'Damaged');
      }
      readKeyFileInfo(bytes, `key file ${shortHex(name)}`);
    } catch (err) {
      if (!(err instanceof CairnError)) throw err;
      problems.push(problem('key', o.name, err.message));
    }
  }
  if (keys === 0 && repo.config.encryption !== 'none') {
    problems.push(problem('key', 'keys', 'an encrypted repository without key files'));
  }
}

async function loadSnapshots(repo: Repository, problems: CheckProblem[]) {
  const out: StoredSnapshot[] = [];
  for (const id of await listSnapshotIds(repo.backend)) {
    try {
      out.push(await loadSnapshot(repo.backend, repo.sealer, repo.hashId, id));
    } catch (err) {
      if (!(err instanceof CairnError) || err.code === 'Fatal') throw err;
      problems.push(problem('snapshot', `snapshots/${id}`, err.message));
    }
  }
  return out;
}

/** One problem per damaged pack, per malformed object, and one for blobs in no pack. */
function damageProblems(damage: Damage, attribution: Attribution): CheckProblem[] {
  const out: CheckProblem[] = [];
  const affected = (key: string) => [...(attribution.get(key)?.bySnapshot.values() ?? [])];
  for (const [pack, { reasons, more }] of damage.packs) {
    const message = reasons.join('; ') + (more > 0 ? `; and ${more} more` : '');
    const p = problem('pack', packName(Buffer.from(pack, 'hex')), message);
    p.affected = affected(JSON.stringify({ pack }));
    out.push(p);
  }
  for (const [key, { cause }] of attribution) {
    if ('index' in cause) {
      const p = problem('index', 'index', 'snapshots need blobs that no index segment lists');
      p.affected = affected(key);
      out.push(p);
    } else if ('malformed' in cause) {
      const p = problem('snapshot', 'snapshots', cause.malformed);
      p.affected = affected(key);
      out.push(p);
    }
  }
  return out;
}
