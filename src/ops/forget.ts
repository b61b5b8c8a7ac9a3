import { CairnError } from '../errors.js';
import type { Repository } from '../repo/repository.js';
import {
  byTime,
  matchesFilter,
  resolveRef,
  type SnapshotFilter,
  type StoredSnapshot,
} from '../repo/snapshot.js';
import { withLock } from './locked.js';
import {
  applyPolicy,
  DEFAULT_GROUP_BY,
  type GroupField,
  type GroupKey,
  groupSnapshots,
  isEmptyPolicy,
  type KeepDecision,
  type RetentionPolicy,
} from './policy.js';
import { type PruneOptions, type PruneResult, pruneLocked } from './prune.js';

export interface ForgetOptions {
  /** Snapshots to remove by reference (ID, prefix, `latest`); the policy is then not applied. */
  refs?: readonly string[];
  policy?: RetentionPolicy;
  groupBy?: readonly GroupField[];
  /** Only snapshots matching this are considered (and `latest` is resolved among them). */
  filter?: SnapshotFilter;
  dryRun?: boolean;
  /** Prune afterwards, under the same lock, if snapshots were removed. */
  prune?: PruneOptions;
}

export interface ForgetGroup {
  key: GroupKey;
  keep: KeepDecision[];
  remove: StoredSnapshot[];
}

export interface ForgetResult {
  dryRun: boolean;
  /** No refs and an empty policy: nothing is removed (restic's safety rule). */
  policyEmpty: boolean;
  /** The policy applied per group; empty when refs were given. */
  groups: ForgetGroup[];
  /** Every snapshot removed (or that would be, in a dry run), oldest first. */
  removed: StoredSnapshot[];
  prune?: PruneResult;
}

/**
 * restic's forget, under an exclusive lock as restic takes one: removes the snapshots named
 * by `refs`, or applies the retention policy to each group of the (filtered) snapshots.
 */
export function forget(repo: Repository, opts: ForgetOptions): Promise<ForgetResult> {
  return withLock(repo, true, opts.prune ? 'forget --prune' : 'forget', async () => {
    const all = await repo.listSnapshots();
    const filter = opts.filter ?? {};
    const result: ForgetResult = {
      dryRun: opts.dryRun === true,
      policyEmpty: false,
      groups: [],
      removed: [],
    };
    if (opts.refs && opts.refs.length > 0) {
      const named = new Map(opts.refs.map((r) => resolveRef(r, all, filter)).map((s) => [s.id, s]));
      result.removed = [...named.values()].sort(byTime);
    } else {
      const policy = opts.policy ?? {};
      result.policyEmpty = isEmptyPolicy(policy);
      if (!result.policyEmpty) {
        const candidates = all.filter((s) => matchesFilter(s, filter));
        result.groups = applyToGroups(candidates, policy, opts.groupBy ?? DEFAULT_GROUP_BY);
        result.removed = result.groups.flatMap((g) => g.remove).sort(byTime);
      }
    }
    if (!result.dryRun) {
      for (const s of result.removed) await repo.backend.delete(`snapshots/${s.id}`);
    }
    if (opts.prune && result.removed.length > 0) {
      // A dry run prunes as if the snapshots were gone, as restic's does.
      const ignore = new Set(result.removed.map((s) => s.id));
      result.prune = await pruneLocked(repo, { ...opts.prune, dryRun: result.dryRun, ignore });
    }
    return result;
  });
}

function applyToGroups(
  snapshots: readonly StoredSnapshot[],
  policy: RetentionPolicy,
  by: readonly GroupField[],
): ForgetGroup[] {
  return groupSnapshots(snapshots, by).map(({ key, snapshots: list }) => {
    const { keep, remove } = applyPolicy(list, policy);
    // Only a tags-only policy can keep nothing; restic refuses rather than empty a group.
    if (keep.length === 0) {
      throw new CairnError(
        `refusing to remove every snapshot of group ${JSON.stringify(key)}: ` +
          'none has the tags of --keep-tag',
      );
    }
    return { key, keep, remove };
  });
}
