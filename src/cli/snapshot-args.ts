import { resolve } from 'node:path';
import type { Command } from 'commander';
import type { Repository } from '../repo/repository.js';
import {
  byTime,
  matchesFilter,
  resolveRef,
  type SnapshotFilter,
  type StoredSnapshot,
} from '../repo/snapshot.js';
import { type GlobalOptions, withRepository } from './context.js';

/** The snapshot filters every command naming snapshots accepts (SPEC: snapshot references). */
export interface FilterFlags {
  host?: string;
  tag?: string[];
  path?: string[];
  name?: string;
}

/** For repeatable options: `--tag a --tag b` → ['a', 'b']. */
export function collectOption(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

export function addFilterOptions(cmd: Command): Command {
  return cmd
    .option('--host <host>', 'only snapshots taken on this host')
    .option(
      '--tag <tag>',
      'only snapshots with this tag (repeatable: all must match)',
      collectOption,
    )
    .option('--path <path>', 'only file snapshots of this path (repeatable)', collectOption)
    .option('--name <name>', 'only image snapshots with this name');
}

/** `--path` is compared with the absolute paths backup stores, so relative ones are resolved. */
export function snapshotFilter(flags: FilterFlags): SnapshotFilter {
  return {
    host: flags.host,
    tags: flags.tag,
    paths: flags.path?.map((p) => resolve(p)),
    name: flags.name,
  };
}

/** The snapshots matching the filters, oldest first. */
export async function filteredSnapshots(
  repo: Repository,
  flags: FilterFlags,
): Promise<StoredSnapshot[]> {
  const filter = snapshotFilter(flags);
  return (await repo.listSnapshots()).filter((s) => matchesFilter(s, filter)).sort(byTime);
}

/** Resolves REF (`latest` with the filters, an ID or a unique prefix of ≥ 4 hex digits). */
export async function resolveSnapshot(
  repo: Repository,
  ref: string,
  flags: FilterFlags,
): Promise<StoredSnapshot> {
  return resolveRef(ref, await repo.listSnapshots(), snapshotFilter(flags));
}

/**
 * Opens the repository under a shared lock (so prune cannot delete what we read), resolves
 * REF and runs `fn`; lock and repository are released whatever happens.
 */
export async function withSnapshot<T>(
  g: GlobalOptions,
  ref: string,
  flags: FilterFlags,
  command: string,
  fn: (repo: Repository, snap: StoredSnapshot) => Promise<T>,
): Promise<T> {
  return withSharedLock(g, command, async (repo) =>
    fn(repo, await resolveSnapshot(repo, ref, flags)),
  );
}

export async function withSharedLock<T>(
  g: GlobalOptions,
  command: string,
  fn: (repo: Repository) => Promise<T>,
): Promise<T> {
  return withRepository(g, async (repo) => {
    const lock = await repo.lock(false, command);
    try {
      return await fn(repo);
    } finally {
      await lock.release();
    }
  });
}
