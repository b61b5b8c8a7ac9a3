import { type Command, Option } from 'commander';
import { CairnError, shortHex } from '../../errors.js';
import { type CopyEvent, type CopySummary, copySnapshots } from '../../ops/copy.js';
import { Repository } from '../../repo/repository.js';
import { matchesFilter, resolveRef, type StoredSnapshot } from '../../repo/snapshot.js';
import {
  cacheDir,
  type GlobalOptions,
  openBackend,
  parseDuration,
  showProgress,
  whileNotInterrupted,
  withRepository,
} from '../context.js';
import { formatBytes, printJson, printLine } from '../output.js';
import { readPassword } from '../password.js';
import { createProgress } from '../progress.js';
import { addFilterOptions, type FilterFlags, snapshotFilter } from '../snapshot-args.js';

interface CopyFlags extends FilterFlags {
  from?: string;
  fromRepo?: string;
  fromPasswordFile?: string;
}

export function registerCopy(program: Command): void {
  addFilterOptions(
    program
      .command('copy')
      .description(
        'copy snapshots from another repository into this one (-r), moving only missing data',
      )
      .argument('[ref...]', 'snapshots to copy: IDs, ID prefixes or "latest" (default: all)')
      .option(
        '--from <repo>',
        'source repository: path or s3://BUCKET[/PREFIX] (env CAIRN_FROM_REPO)',
      )
      // restic's spelling, for people who type it from habit.
      .addOption(new Option('--from-repo <repo>').hideHelp())
      .option(
        '--from-password-file <file>',
        'source password from a file (env CAIRN_FROM_PASSWORD_FILE, CAIRN_FROM_PASSWORD)',
      ),
  ).action(async (refs: string[], flags: CopyFlags, cmd: Command) => {
    const g = cmd.optsWithGlobals<GlobalOptions>();
    const from = flags.from ?? flags.fromRepo ?? process.env.CAIRN_FROM_REPO;
    if (!from) throw new CairnError('no source repository given: use --from or CAIRN_FROM_REPO');
    const source = await openSource(from, flags, g);
    try {
      const summary = await withRepository(g, (dest) =>
        whileNotInterrupted(async (signal) => {
          const snaps = await selectSnapshots(source, refs, flags);
          return run(copySnapshots(source, dest, snaps, { signal }), g);
        }),
      );
      printSummary(summary, g);
    } finally {
      await source.close();
    }
  });
}

async function openSource(from: string, flags: CopyFlags, g: GlobalOptions): Promise<Repository> {
  const backend = openBackend(from, g);
  try {
    return await Repository.open(backend, {
      cacheDir: cacheDir(g),
      password: () => sourcePassword(flags),
      lockWaitMs: g.lockWait === undefined ? 0 : parseDuration(g.lockWait),
    });
  } catch (err) {
    await backend.close();
    throw err;
  }
}

/** The source's own password: never the destination's (--password-file, CAIRN_PASSWORD). */
async function sourcePassword(flags: CopyFlags): Promise<string> {
  const file = flags.fromPasswordFile ?? process.env.CAIRN_FROM_PASSWORD_FILE;
  if (file) return readPassword({ passwordFile: file });
  const env = process.env.CAIRN_FROM_PASSWORD;
  if (env) return env;
  throw new CairnError(
    'the source repository is encrypted: give its password with --from-password-file, ' +
      'CAIRN_FROM_PASSWORD_FILE or CAIRN_FROM_PASSWORD',
    'NoPassword',
  );
}

/** REFs resolved with the filters; no REF: every snapshot matching them (restic's default). */
async function selectSnapshots(
  source: Repository,
  refs: string[],
  flags: FilterFlags,
): Promise<StoredSnapshot[]> {
  const all = await source.listSnapshots();
  const filter = snapshotFilter(flags);
  if (refs.length === 0) return all.filter((s) => matchesFilter(s, filter));
  const chosen = new Map(refs.map((r) => resolveRef(r, all, filter)).map((s) => [s.id, s]));
  return [...chosen.values()];
}

async function run(
  events: AsyncGenerator<CopyEvent, CopySummary>,
  g: GlobalOptions,
): Promise<CopySummary> {
  const progress = createProgress(showProgress(g));
  try {
    for (;;) {
      const next = await events.next();
      if (next.done) return next.value;
      const e = next.value;
      if (e.type === 'progress') {
        progress.update({ bytesDone: e.bytesCopied, current: shortHex(e.snapshot.id) });
      } else {
        report(e, g);
      }
    }
  } finally {
    progress.stop();
  }
}

function report(e: Exclude<CopyEvent, { type: 'progress' }>, g: GlobalOptions): void {
  const from = e.source.id;
  if (g.json) {
    if (e.type === 'copied') printJson({ message_type: 'copied', source: from, snapshot_id: e.id });
    else printJson({ message_type: 'skipped', source: from, existing: e.existing });
  } else if (!g.quiet) {
    const what = `${e.source.kind} snapshot ${shortHex(from)} of ${e.source.hostname}`;
    if (e.type === 'copied') printLine(`copied ${what} as ${shortHex(e.id)}`);
    else printLine(`skipped ${what}: already there as ${shortHex(e.existing)}`);
  }
}

function printSummary(s: CopySummary, g: GlobalOptions): void {
  if (g.json) {
    printJson({
      message_type: 'summary',
      snapshots_copied: s.snapshotsCopied,
      snapshots_skipped: s.snapshotsSkipped,
      blobs_copied: s.blobsCopied,
      bytes_copied: s.bytesCopied,
      data_added: s.dataAdded,
      total_duration: s.durationMs / 1000,
    });
  } else if (!g.quiet) {
    printLine(
      `copied ${s.snapshotsCopied} snapshots (${s.snapshotsSkipped} already there): ` +
        `${s.blobsCopied} blobs, ${formatBytes(s.bytesCopied)}, ` +
        `${formatBytes(s.dataAdded)} added to the repository`,
    );
  }
}
