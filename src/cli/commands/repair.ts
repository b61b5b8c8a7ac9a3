import type { Command } from 'commander';
import { shortHex } from '../../errors.js';
import { repairIndex } from '../../ops/repair.js';
import { type GlobalOptions, withRepository } from '../context.js';
import { printJson, printLine, warn } from '../output.js';

export function registerRepair(program: Command): void {
  const repair = program.command('repair').description('repair parts of a repository');
  repair
    .command('index')
    .description('rebuild the index from the packs alone')
    .action(async (_flags: unknown, cmd: Command) => {
      const g = cmd.optsWithGlobals<GlobalOptions>();
      const r = await withRepository(g, repairIndex);
      for (const d of r.damaged) warn(`pack ${shortHex(d.pack)} left out: ${d.error}`);
      if (g.json) {
        printJson({
          message_type: 'summary',
          packs: r.packs,
          blobs: r.blobs,
          damaged_packs: r.damaged.map((d) => ({ pack: d.pack, error: d.error })),
          index_segments_written: r.segmentsWritten,
          index_segments_removed: r.segmentsRemoved,
        });
      } else if (!g.quiet) {
        printLine(`read ${r.packs} packs holding ${r.blobs} blobs`);
        if (r.damaged.length > 0) {
          printLine(
            `${r.damaged.length} damaged packs left out; \`cairn check\` shows what they hold`,
          );
        }
        printLine(
          `wrote ${r.segmentsWritten} index segments, removed ${r.segmentsRemoved} old ones`,
        );
      }
    });
}
