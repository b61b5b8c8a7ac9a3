import type { Command } from 'commander';
import { CairnError } from '../../errors.js';
import { type PruneResult, prune } from '../../ops/prune.js';
import type { MaxUnused } from '../../ops/prune-plan.js';
import { type GlobalOptions, withRepository } from '../context.js';
import { formatBytes, parseSize, printJson, printLine } from '../output.js';

interface PruneFlags {
  maxUnused: string;
  dryRun?: boolean;
}

export function registerPrune(program: Command): void {
  program
    .command('prune')
    .description('remove data no snapshot references; rewrite packs that are mostly unused')
    .option(
      '--max-unused <limit>',
      'unused space tolerated in kept packs: a share (5%), a size (100M, 0) or "unlimited"',
      '5%',
    )
    .option('-n, --dry-run', 'show what would be removed; change nothing')
    .action(async (flags: PruneFlags, cmd: Command) => {
      const g = cmd.optsWithGlobals<GlobalOptions>();
      const maxUnused = parseMaxUnused(flags.maxUnused);
      const result = await withRepository(g, (repo) =>
        prune(repo, { maxUnused, dryRun: flags.dryRun }),
      );
      if (g.json) printJson(pruneJson(result));
      else if (!g.quiet) printPruneResult(result);
    });
}

export function parseMaxUnused(text: string): MaxUnused {
  const t = text.trim();
  if (t === 'unlimited') return 'unlimited';
  const pct = /^(\d+(?:\.\d+)?)%$/.exec(t);
  if (pct) {
    const percent = Number(pct[1]);
    if (percent > 100) throw new CairnError(`--max-unused ${text}: at most 100%`, 'Usage');
    return { percent };
  }
  try {
    return { bytes: parseSize(t) };
  } catch {
    throw new CairnError(`invalid --max-unused "${text}": use e.g. 5%, 100M or unlimited`, 'Usage');
  }
}

/** prune's JSON object (also the last line of `forget --prune --json`). */
export function pruneJson(r: PruneResult): Record<string, unknown> {
  return {
    message_type: 'summary',
    dry_run: r.dryRun,
    snapshots: r.snapshots,
    packs_before: r.packsBefore,
    bytes_before: r.bytesBefore,
    packs_deleted: r.packsDeleted,
    packs_repacked: r.packsRepacked,
    packs_written: r.packsWritten,
    packs_unindexed: r.packsUnindexed,
    bytes_repacked: r.bytesRepacked,
    bytes_after: r.bytesAfter,
    bytes_freed: r.bytesFreed,
    unused_after: r.unusedAfter,
    index_segments_written: r.segmentsWritten,
    index_segments_removed: r.segmentsRemoved,
  };
}

export function printPruneResult(r: PruneResult): void {
  const would = r.dryRun ? 'would be ' : '';
  const copied = `${formatBytes(r.bytesRepacked)} copied`;
  const rows: [string, string][] = [
    ['snapshots', String(r.snapshots)],
    ['packs before', `${r.packsBefore} (${formatBytes(r.bytesBefore)})`],
    [
      `packs ${would}repacked`,
      `${r.packsRepacked} (${r.dryRun ? copied : `${copied} into ${r.packsWritten} new packs`})`,
    ],
    [
      `packs ${would}deleted`,
      `${r.packsDeleted} (${r.packsRepacked} repacked, ${r.packsUnindexed} not in the index)`,
    ],
    ['unused after prune', formatBytes(r.unusedAfter)],
    [
      r.dryRun ? 'would free' : 'freed',
      `${formatBytes(r.bytesFreed)}, ${formatBytes(r.bytesAfter)} remain`,
    ],
  ];
  const width = Math.max(...rows.map(([label]) => label.length)) + 2;
  for (const [label, value] of rows) printLine(`${`${label}:`.padEnd(width)}${value}`);
}
