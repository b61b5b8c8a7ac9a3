import type { Command } from 'commander';
import { shortHex } from '../../errors.js';
import {
  type BackupEvent,
  type BackupOptions,
  type BackupSummary,
  backup,
  resticSummary,
} from '../../files/archiver.js';
import { displayText } from '../../files/paths.js';
import type { Repository } from '../../repo/repository.js';
import {
  type GlobalOptions,
  showProgress,
  whileNotInterrupted,
  withRepository,
} from '../context.js';
import { formatBytes, printJson, printLine, warn } from '../output.js';
import { createProgress } from '../progress.js';

interface BackupFlags {
  tag: string[];
  host?: string;
  exclude: string[];
  excludeFile: string[];
  oneFileSystem?: boolean;
  parent?: string;
  force?: boolean;
  dryRun?: boolean;
}

/** Progress redraws on a terminal; JSON status lines are rarer (restic: a few per second). */
const PROGRESS_EVERY_MS = 250;
const STATUS_EVERY_MS = 1000;

const collect = (v: string, all: string[]) => [...all, v];

export function registerBackup(program: Command): void {
  program
    .command('backup')
    .description('back up files and directories as a file snapshot')
    .argument('<path...>', 'files and directories to back up (stored as absolute paths)')
    .option('--tag <tag>', 'add a tag (repeatable)', collect, [])
    .option('--host <host>', 'hostname to record (default: this machine)')
    .option('--exclude <glob>', 'leave out paths matching a gitignore-style glob', collect, [])
    .option('--exclude-file <file>', 'read exclude globs from a file, one a line', collect, [])
    .option('--one-file-system', 'do not descend into other filesystems')
    .option('--parent <ref>', 'compare with this snapshot (default: latest of same host/paths)')
    .option('--force', 'read every file, even those unchanged since the parent')
    .option('--dry-run', 'read everything and report what would be stored; store nothing')
    .action(async (paths: string[], flags: BackupFlags, cmd: Command) => {
      const g = cmd.optsWithGlobals<GlobalOptions>();
      const opts: BackupOptions = {
        tags: flags.tag,
        host: flags.host,
        exclude: flags.exclude,
        excludeFiles: flags.excludeFile,
        oneFileSystem: flags.oneFileSystem,
        parent: flags.parent,
        force: flags.force,
        dryRun: flags.dryRun,
        progressIntervalMs: g.json ? STATUS_EVERY_MS : PROGRESS_EVERY_MS,
      };
      const summary = await withRepository(g, (repo) =>
        whileNotInterrupted((signal) => run(repo, paths, { ...opts, signal }, g)),
      );
      printSummary(g, summary);
      // restic's code for "snapshot saved, but some source data could not be read".
      if (summary.errors > 0) process.exitCode = 3;
    });
}

async function run(
  repo: Repository,
  paths: string[],
  opts: BackupOptions,
  g: GlobalOptions,
): Promise<BackupSummary> {
  const progress = createProgress(showProgress(g));
  const started = Date.now();
  const events = backup(repo, paths, opts);
  try {
    for (;;) {
      const next = await events.next();
      if (next.done) return next.value;
      const e = next.value;
      if (e.type !== 'progress') {
        report(e, g);
      } else if (g.json) {
        if (!g.quiet) printJson(statusLine(e, started));
      } else {
        const current = e.current && displayText(e.current);
        progress.update({ bytesDone: e.bytesDone, filesDone: e.filesDone, current });
      }
    }
  } finally {
    progress.stop();
  }
}

function statusLine(e: Extract<BackupEvent, { type: 'progress' }>, started: number) {
  return {
    message_type: 'status',
    seconds_elapsed: Math.floor((Date.now() - started) / 1000),
    files_done: e.filesDone,
    bytes_done: e.bytesDone,
    current_files: e.current ? [displayText(e.current)] : [],
  };
}

function report(e: Exclude<BackupEvent, { type: 'progress' }>, g: GlobalOptions): void {
  const path = displayText(e.path);
  if (e.type === 'error') warn(`cannot read ${path}: ${e.reason}`);
  else if (e.type === 'warning') warn(`${path}: ${e.message}`);
  else if (!g.quiet) warn(`skipped ${e.reason} ${path}`);
}

function printSummary(g: GlobalOptions, s: BackupSummary): void {
  if (g.json) {
    printJson({
      message_type: 'summary',
      snapshot_id: s.snapshotId ?? null,
      ...resticSummary(s),
      ...(s.parent ? { parent: s.parent } : {}),
      dry_run: s.dryRun,
    });
    return;
  }
  if (g.quiet) return;
  const row = (a: number, b: number, c: number) =>
    `${String(a).padStart(6)} new, ${String(b).padStart(6)} changed, ${String(c).padStart(6)} unmodified`;
  if (s.parent) printLine(`using parent snapshot ${shortHex(s.parent)}`);
  printLine(`Files: ${row(s.filesNew, s.filesChanged, s.filesUnmodified)}`);
  printLine(`Dirs:  ${row(s.dirsNew, s.dirsChanged, s.dirsUnmodified)}`);
  printLine(`${s.dryRun ? 'Would add' : 'Added'} to the repository: ${formatBytes(s.dataAdded)}`);
  printLine(
    `processed ${s.totalFilesProcessed} files, ${formatBytes(s.totalBytesProcessed)} ` +
      `in ${duration(s.durationMs)}`,
  );
  if (s.errors > 0) printLine(`Warning: ${s.errors} source entries could not be read`);
  printLine(
    s.snapshotId ? `snapshot ${shortHex(s.snapshotId)} saved` : 'dry run: no snapshot saved',
  );
}

function duration(ms: number): string {
  const secs = Math.round(ms / 1000);
  return `${Math.floor(secs / 60)}:${String(secs % 60).padStart(2, '0')}`;
}
