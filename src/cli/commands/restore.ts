import type { Command } from 'commander';
import { CairnError, shortHex } from '../../errors.js';
import { displayText } from '../../files/paths.js';
import { type RestoreEvent, type RestoreSummary, restore } from '../../files/restorer.js';
import { type ExtractOptions, extractFiles, openImageFiles } from '../../fs/index.js';
import type { Repository } from '../../repo/repository.js';
import type { StoredSnapshot } from '../../repo/snapshot.js';
import { type GlobalOptions, showProgress } from '../context.js';
import { formatBytes, printJson, printLine, warn } from '../output.js';
import { createProgress } from '../progress.js';
import {
  addFilterOptions,
  collectOption,
  type FilterFlags,
  withSnapshot,
} from '../snapshot-args.js';
import { type RestoreImageFlags, restoreImageCommand } from './restore-image.js';

interface RestoreFlags extends FilterFlags, RestoreImageFlags {
  files?: boolean;
}

/** JSON status lines at most this often: enough to follow, few enough to parse. */
const STATUS_EVERY_MS = 1000;

export function registerRestore(program: Command): void {
  addFilterOptions(
    program
      .command('restore')
      .description('restore a snapshot into a target directory')
      .argument('<ref>', 'snapshot ID, ID prefix or "latest"')
      .requiredOption('-t, --target <dir>', 'directory to restore into (created if missing)')
      .option(
        '--include <glob>',
        'restore only matching paths, with their parent directories (gitignore-style glob; ' +
          'a leading / anchors at the snapshot root; repeatable)',
        collectOption,
      )
      .option('--exclude <glob>', 'do not restore matching paths (repeatable)', collectOption)
      .option('--verify', 'read every restored byte back and check it against its chunk IDs')
      .option('--delta', 'image snapshots: write only what differs from what the target holds')
      .option(
        '--files',
        'image snapshots: extract the files inside the image instead of its bytes',
      ),
  ).action(async (ref: string, flags: RestoreFlags, cmd: Command) => {
    const g = cmd.optsWithGlobals<GlobalOptions>();
    await withSnapshot(g, ref, flags, 'restore', async (repo, snap) => {
      if (snap.kind === 'image' && !flags.files) return restoreImageCommand(repo, snap, flags, g);
      if (flags.files && (snap.kind !== 'image' || flags.delta)) {
        throw new CairnError(
          '--files extracts the files of an image snapshot (no --delta)',
          'Usage',
        );
      }
      await restoreFiles(repo, snap, flags, g);
    });
  });
}

/**
 * Runs the restore with progress (TTY) or JSON status lines, reports each failed entry on
 * stderr as it happens, prints the summary, then fails with exit 1 if anything failed and
 * 130 if interrupted (after what was in flight is finished and directories are completed).
 */
async function restoreFiles(
  repo: Repository,
  snap: StoredSnapshot,
  flags: RestoreFlags,
  g: GlobalOptions,
): Promise<void> {
  const stop = new AbortController();
  const onSignal = () => stop.abort();
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const progress = createProgress(showProgress(g));
  const json = g.json === true && !g.quiet;
  let lastStatus = Date.now();
  let summary: RestoreSummary;
  try {
    const opts = {
      include: flags.include,
      exclude: flags.exclude,
      verify: flags.verify,
      signal: stop.signal,
    };
    const events =
      snap.kind === 'image'
        ? await extractImageFiles(repo, snap, flags.target, opts)
        : restore(repo, snap, flags.target, opts);
    for (;;) {
      const next = await events.next();
      if (next.done) {
        summary = next.value;
        break;
      }
      const e = next.value;
      if (e.type === 'error') {
        warn(`${displayText(e.path)}: ${e.message}`);
        continue;
      }
      progress.update({ bytesDone: e.bytesDone, bytesTotal: e.bytesTotal, filesDone: e.filesDone });
      if (json && Date.now() - lastStatus >= STATUS_EVERY_MS) {
        lastStatus = Date.now();
        printJson({
          message_type: 'status',
          percent_done: e.bytesTotal ? e.bytesDone / e.bytesTotal : undefined,
          files_restored: e.filesDone,
          bytes_restored: e.bytesDone,
          total_bytes: e.bytesTotal,
        });
      }
    }
  } finally {
    progress.stop();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  report(summary, flags.verify === true, g);
  if (stop.signal.aborted) throw new CairnError('restore interrupted', 'Interrupted');
  if (summary.errors > 0) {
    throw new CairnError(`restore finished with ${summary.errors} error(s), listed above`);
  }
}

async function extractImageFiles(
  repo: Repository,
  snap: StoredSnapshot,
  target: string,
  opts: ExtractOptions,
): Promise<AsyncGenerator<RestoreEvent, RestoreSummary>> {
  const { files, volumes } = await openImageFiles(repo, snap);
  if (!files) {
    const why = volumes
      .map((v) => v.note)
      .filter(Boolean)
      .join('; ');
    throw new CairnError(`no readable filesystem in image snapshot ${shortHex(snap.id)}: ${why}`);
  }
  return extractFiles(files, target, opts);
}

function report(s: RestoreSummary, verify: boolean, g: GlobalOptions): void {
  if (g.json) {
    printJson({
      message_type: 'summary',
      files_restored: s.filesRestored,
      dirs_restored: s.dirsRestored,
      bytes_restored: s.bytesRestored,
      total_duration: s.durationMs / 1000,
      ...(verify ? { verified: s.errors === 0, files_verified: s.filesVerified } : {}),
      errors: s.errors,
    });
  } else if (!g.quiet) {
    const secs = (s.durationMs / 1000).toFixed(1);
    const checked = verify ? `, ${s.filesVerified} files verified` : '';
    printLine(
      `restored ${s.filesRestored} files, ${s.dirsRestored} directories, ` +
        `${formatBytes(s.bytesRestored)} in ${secs}s${checked}`,
    );
  }
}
