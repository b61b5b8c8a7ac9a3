import type { Command } from 'commander';
import { repositoryStats, snapshotStats } from '../../ops/stats.js';
import type { StoredSnapshot } from '../../repo/snapshot.js';
import type { GlobalOptions } from '../context.js';
import { formatBytes, printJson, printLine } from '../output.js';
import {
  addFilterOptions,
  type FilterFlags,
  resolveSnapshot,
  withSharedLock,
} from '../snapshot-args.js';

export function registerStats(program: Command): void {
  addFilterOptions(
    program
      .command('stats')
      .description('show repository size, deduplication and compression (or of some snapshots)')
      .argument('[ref...]', 'only these snapshots: their size and the unique data they reference'),
  ).action(async (refs: string[], flags: FilterFlags, cmd: Command) => {
    const g = cmd.optsWithGlobals<GlobalOptions>();
    const stats = await withSharedLock(g, 'stats', async (repo) => {
      if (refs.length === 0) return repositoryStats(repo);
      const snaps = new Map<string, StoredSnapshot>();
      for (const ref of refs) {
        const s = await resolveSnapshot(repo, ref, flags);
        snaps.set(s.id, s);
      }
      return snapshotStats(repo, [...snaps.values()]);
    });
    if (g.json) return printJson(stats);
    printLine(`Snapshots:          ${stats.snapshots}`);
    printLine(`Total size:         ${formatBytes(stats.total_size)}`);
    printLine(`Unique data:        ${formatBytes(stats.unique_size)}`);
    printLine(`Stored size:        ${formatBytes(stats.stored_size)}`);
    printLine(`Chunks:             ${stats.chunks}`);
    printLine(`Blobs:              ${stats.blobs}`);
    printLine(`Packs:              ${stats.packs}`);
    printLine(`Dedup ratio:        ${stats.dedup_ratio.toFixed(2)}x`);
    printLine(`Compression ratio:  ${stats.compression_ratio.toFixed(2)}x`);
  });
}
