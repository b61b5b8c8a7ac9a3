import type { Command } from 'commander';
import { CairnError, shortHex } from '../../errors.js';
import {
  type ImageBackupEvent,
  type ImageBackupSummary,
  imageBackup,
  imageSummaryNumbers,
} from '../../image/index.js';
import {
  type GlobalOptions,
  showProgress,
  whileNotInterrupted,
  withRepository,
} from '../context.js';
import { formatBytes, printJson, printLine, warn } from '../output.js';
import { createProgress } from '../progress.js';

interface ImageFlags {
  name?: string;
  tag: string[];
  host?: string;
  parent?: string;
  usedOnly?: boolean;
}

/** JSON status lines at most this often (restic prints a few per second at most). */
const STATUS_EVERY_MS = 1000;

export function registerImage(program: Command): void {
  program
    .command('image')
    .description('take an image snapshot of a block device, a disk-image file or stdin')
    .argument('<source>', 'block device, regular file, or - for stdin')
    .option('--name <name>', 'image name (default: the base name of the source)')
    .option('--tag <tag>', 'add a tag (repeatable)', (v: string, all: string[]) => [...all, v], [])
    .option('--host <host>', 'hostname to record (default: this machine)')
    .option('--parent <ref>', 'compare with this snapshot (default: latest of same name/host)')
    .option('--used-only', 'store blocks the filesystem does not use as holes (ext, FAT, NTFS)')
    .action(async (source: string, flags: ImageFlags, cmd: Command) => {
      const g = cmd.optsWithGlobals<GlobalOptions>();
      if (source === '-' && !flags.name) {
        throw new CairnError('an image read from stdin (-) needs --name', 'Usage');
      }
      const render = eventRenderer(g);
      let summary: ImageBackupSummary;
      try {
        summary = await withRepository(g, (repo) =>
          whileNotInterrupted((signal) =>
            imageBackup(repo, source === '-' ? process.stdin : source, {
              name: flags.name,
              tags: flags.tag,
              host: flags.host,
              parent: flags.parent,
              usedOnly: flags.usedOnly,
              signal,
              onEvent: render.event,
            }),
          ),
        );
      } finally {
        render.stop();
      }
      printSummary(g, summary);
    });
}

function eventRenderer(g: GlobalOptions) {
  const progress = createProgress(showProgress(g));
  const started = Date.now();
  let lastStatus = 0;
  let last: Extract<ImageBackupEvent, { type: 'progress' }> | undefined;
  const status = () => {
    if (!last) return;
    const total = last.bytesTotal;
    printJson({
      message_type: 'status',
      seconds_elapsed: Math.floor((Date.now() - started) / 1000),
      percent_done: total ? last.bytesDone / total : 0,
      total_bytes: total,
      bytes_done: last.bytesDone,
      bytes_read: last.bytesRead,
    });
  };
  return {
    event(e: ImageBackupEvent) {
      if (e.type === 'volume' && e.note) {
        const where = e.partition === undefined ? 'image' : `partition ${e.partition}`;
        warn(`${where}${e.fs ? ` (${e.fs})` : ''} stored in full: ${e.note}`);
      }
      if (e.type !== 'progress') return;
      last = e;
      progress.update({ bytesDone: e.bytesDone, bytesTotal: e.bytesTotal });
      if (g.json && Date.now() - lastStatus >= STATUS_EVERY_MS) {
        lastStatus = Date.now();
        status();
      }
    },
    stop() {
      progress.stop();
      // A final status line, so even a short run reports its end state before the summary.
      if (g.json) status();
    },
  };
}

function printSummary(g: GlobalOptions, s: ImageBackupSummary): void {
  if (g.json) {
    printJson({
      message_type: 'summary',
      snapshot_id: s.snapshotId,
      name: s.name,
      size: s.size,
      ...imageSummaryNumbers(s),
      ...(s.parent ? { parent: s.parent } : {}),
    });
    return;
  }
  if (g.quiet) return;
  printLine(
    `image ${s.name}: ${formatBytes(s.size)}, read ${formatBytes(s.bytesRead)}, ` +
      `${formatBytes(s.zeroBytes)} zeros/unused`,
  );
  printLine(
    `chunks: ${s.chunksTotal} in total, ${s.chunksNew} new; ` +
      `added ${formatBytes(s.dataAdded)} to the repository`,
  );
  if (s.parent && s.changedBytes !== undefined) {
    printLine(`changed since ${shortHex(s.parent)}: ${formatBytes(s.changedBytes)}`);
  }
  printLine(`snapshot ${shortHex(s.snapshotId)} saved in ${s.totalDuration.toFixed(1)} s`);
}
