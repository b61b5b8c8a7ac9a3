import type { Command } from 'commander';
import { repositoryStats } from '../../ops/stats.js';
import { type GlobalOptions, withRepository } from '../context.js';
import { formatBytes, printJson, printLine } from '../output.js';

export function registerStats(program: Command): void {
  program
    .command('stats')
    .description('show repository size, deduplication and compression')
    .action(async (_flags: unknown, cmd: Command) => {
      const g = cmd.optsWithGlobals<GlobalOptions>();
      const stats = await withRepository(g, repositoryStats);
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
