import type { Command } from 'commander';
import { CairnError } from '../../errors.js';
import { type CheckProblem, type CheckReport, check } from '../../ops/check.js';
import { type GlobalOptions, showProgress, withRepository } from '../context.js';
import { formatBytes, printJson, printLine } from '../output.js';
import { createProgress } from '../progress.js';

interface CheckFlags {
  readData?: boolean;
  readDataSubset?: string;
}

export function registerCheck(program: Command): void {
  program
    .command('check')
    .description('check the repository for damage; exit 1 listing what is damaged')
    .option('--read-data', 'also read every pack and verify every chunk against its hash')
    .option('--read-data-subset <P%>', 'read and verify a random share of the packs, e.g. 10%')
    .action(async (flags: CheckFlags, cmd: Command) => {
      const g = cmd.optsWithGlobals<GlobalOptions>();
      const readData = readShare(flags);
      const progress = createProgress(showProgress(g) && readData > 0);
      let report: CheckReport;
      try {
        report = await withRepository(g, (repo) =>
          check(repo, {
            readData,
            onProgress: (done, total, bytes) => {
              progress.update({ bytesDone: bytes, filesDone: done, current: `of ${total} packs` });
            },
          }),
        );
      } finally {
        progress.stop();
      }
      if (g.json) printJson(checkJson(report));
      else printReport(report, g.quiet === true);
      if (!report.ok) {
        throw new CairnError(`check found ${report.problems.length} problem(s)`, 'Damaged');
      }
    });
}

function readShare(flags: CheckFlags): number {
  if (flags.readData && flags.readDataSubset) {
    throw new CairnError('give --read-data or --read-data-subset, not both', 'Usage');
  }
  if (flags.readData) return 1;
  if (flags.readDataSubset === undefined) return 0;
  const m = /^(\d+(?:\.\d+)?)%$/.exec(flags.readDataSubset.trim());
  const pct = m ? Number(m[1]) : Number.NaN;
  if (!(pct > 0 && pct <= 100)) {
    throw new CairnError(
      `invalid --read-data-subset "${flags.readDataSubset}": use e.g. 10%`,
      'Usage',
    );
  }
  return pct / 100;
}

function checkJson(r: CheckReport): Record<string, unknown> {
  return {
    ok: r.ok,
    snapshots: r.snapshots,
    index_segments: r.segments,
    packs: r.packs,
    blobs: r.blobs,
    packs_read: r.packsRead,
    bytes_read: r.bytesRead,
    problems: r.problems,
    notes: r.notes,
  };
}

function printReport(r: CheckReport, quiet: boolean): void {
  if (!quiet) {
    printLine(
      `checked ${r.snapshots} snapshots, ${r.segments} index segments, ` +
        `${r.packs} packs, ${r.blobs} blobs`,
    );
    if (r.packsRead > 0) printLine(`read ${r.packsRead} packs (${formatBytes(r.bytesRead)})`);
    for (const n of r.notes) printLine(`note: ${n}`);
  }
  for (const p of r.problems) printProblem(p);
  if (!quiet && r.ok) printLine('no errors were found');
}

function printProblem(p: CheckProblem): void {
  printLine(`error: ${p.object}: ${p.message}`);
  for (const a of p.affected) {
    printLine(`  snapshot ${a.snapshot.slice(0, 8)}:`);
    for (const path of a.paths) printLine(`    ${path}`);
    if (a.more > 0) printLine(`    … and ${a.more} more`);
  }
}
