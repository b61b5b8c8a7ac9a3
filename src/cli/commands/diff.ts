import { resolve } from 'node:path';
import type { Command } from 'commander';
import { gearTable } from '../../chunker/index.js';
import {
  changePath,
  checkSameKind,
  diffImageFiles,
  diffImages,
  diffLive,
  diffTrees,
  type FileDiffEvent,
  type FileDiffSummary,
  fileSummaryJson,
  type ImageDiffEvent,
  type ImageDiffSummary,
  imageSummaryJson,
  storeTreeLoader,
  withSummary,
} from '../../diff/index.js';
import { CairnError, shortHex } from '../../errors.js';
import { rootTreeId } from '../../files/browse.js';
import { Excludes } from '../../files/excludes.js';
import { OwnerNames } from '../../files/fsmeta.js';
import { displayText, jsonPath } from '../../files/paths.js';
import type { Repository } from '../../repo/repository.js';
import { resolveRef, type StoredSnapshot } from '../../repo/snapshot.js';
import type { GlobalOptions } from '../context.js';
import { formatBytes, printJson, printLine, warn } from '../output.js';
import {
  addFilterOptions,
  collectOption,
  type FilterFlags,
  snapshotFilter,
  withSharedLock,
  withSnapshot,
} from '../snapshot-args.js';

interface DiffFlags extends FilterFlags {
  content?: boolean;
  ranges?: boolean;
  files?: boolean;
  exclude?: string[];
  excludeFile?: string[];
}

/** Changed ranges of an image diff shown as text without --ranges. */
const FIRST_RANGES = 10;

export function registerDiff(program: Command): void {
  addFilterOptions(
    program
      .command('diff')
      .description('show what changed between two snapshots, or from a snapshot to live paths')
      .argument('<ref>', 'the older snapshot: ID, ID prefix or "latest"')
      .argument(
        '<ref-or-path...>',
        'the newer snapshot, or files and directories on disk (write ./NAME for a path that ' +
          'looks like a snapshot ID)',
      )
      .option('--content', 'live paths: re-read files that look changed and compare their chunks')
      .option('--ranges', 'image snapshots: list every changed byte range')
      .option(
        '--files',
        'image snapshots: the files added, removed and changed inside them (ext2/3/4, FAT, ' +
          'NTFS; part<N>/ for whole disks), listed as for file snapshots',
      )
      .option('--exclude <glob>', 'live paths: leave out paths matching a glob', collectOption)
      .option('--exclude-file <file>', 'live paths: read exclude globs from a file', collectOption),
  ).action(async (ref: string, rest: string[], flags: DiffFlags, cmd: Command) => {
    const g = cmd.optsWithGlobals<GlobalOptions>();
    if (rest.length === 1 && looksLikeRef(rest[0]!)) {
      const live = flags.content ? '--content' : flags.exclude ? '--exclude' : undefined;
      if (live || flags.excludeFile) {
        throw new CairnError(`${live ?? '--exclude-file'} applies to live paths only`, 'Usage');
      }
      await diffSnapshots(g, ref, rest[0]!, flags);
    } else {
      rejectImageFlags(flags);
      await diffLivePaths(g, ref, rest, flags);
    }
  });
}

function rejectImageFlags(flags: DiffFlags): void {
  if (flags.ranges || flags.files) {
    const flag = flags.ranges ? '--ranges' : '--files';
    throw new CairnError(`${flag} applies to image snapshots only`, 'Usage');
  }
}

/** The second argument names a snapshot when it reads as one: `latest` or 4–64 hex digits. */
function looksLikeRef(arg: string): boolean {
  return arg === 'latest' || /^[0-9a-f]{4,64}$/.test(arg);
}

async function diffSnapshots(g: GlobalOptions, refA: string, refB: string, flags: DiffFlags) {
  await withSharedLock(g, 'diff', async (repo) => {
    const all = await repo.listSnapshots();
    const filter = snapshotFilter(flags);
    const a = resolveRef(refA, all, filter);
    const b = resolveRef(refB, all, filter);
    if (checkSameKind(a, b) === 'image') return showImageDiff(g, repo, a, b, flags);
    rejectImageFlags(flags);
    const load = storeTreeLoader(await repo.blobs());
    const events = withSummary(diffTrees(load, rootTreeId(a), rootTreeId(b)));
    const header = `comparing snapshot ${shortHex(a.id)} to ${shortHex(b.id)}:`;
    await showFileDiff(g, events, header, { source_snapshot: a.id, target_snapshot: b.id });
  });
}

async function diffLivePaths(g: GlobalOptions, ref: string, paths: string[], flags: DiffFlags) {
  const excludes = await Excludes.load(flags.exclude ?? [], flags.excludeFile ?? []);
  await withSnapshot(g, ref, flags, 'diff', async (repo, snap) => {
    if (snap.kind !== 'files') {
      throw new CairnError(
        `live paths can only be compared with a file snapshot; ${shortHex(snap.id)} is an image`,
      );
    }
    const absolute = paths.map((p) => resolve(p));
    const content = flags.content
      ? { params: repo.config.chunker, table: gearTable(repo.chunkerSeed), hashId: repo.hashId }
      : undefined;
    const load = storeTreeLoader(await repo.blobs());
    const opts = { owners: await OwnerNames.load(), excludes, content };
    const events = withSummary(diffLive(load, rootTreeId(snap), absolute, opts));
    const header = `comparing snapshot ${shortHex(snap.id)} to live paths:`;
    await showFileDiff(g, events, header, { source_snapshot: snap.id, target_paths: absolute });
  });
}

async function showFileDiff(
  g: GlobalOptions,
  events: AsyncIterable<FileDiffEvent>,
  header: string,
  ids: Record<string, unknown>,
): Promise<void> {
  if (!g.json && !g.quiet) printLine(`${header}\n`);
  for await (const e of events) {
    if (e.type === 'error') {
      warn(`cannot read ${displayText(e.path)}: ${e.reason}`);
    } else if (e.type === 'change') {
      const path = changePath(e);
      if (g.json) printJson({ message_type: 'change', modifier: e.modifier, ...jsonPath(path) });
      else if (!g.quiet) printLine(`${e.modifier.padEnd(5)}${displayText(path)}`);
    } else {
      if (g.json) printJson({ message_type: 'summary', ...ids, ...fileSummaryJson(e) });
      else {
        if (!g.quiet) printLine();
        printFileSummary(e);
      }
      // As backup's exit 3: the diff finished, but some of what it was to compare was unreadable.
      if (e.errors > 0) process.exitCode = 3;
    }
  }
}

/** restic's layout, with the counts restic leaves out (changed others, metadata, types). */
function printFileSummary(s: FileDiffSummary): void {
  const n = (v: number) => String(v).padStart(5);
  printLine(
    `Files:       ${n(s.filesAdded)} new, ${n(s.filesRemoved)} removed, ${n(s.filesChanged)} changed`,
  );
  printLine(`Dirs:        ${n(s.dirsAdded)} new, ${n(s.dirsRemoved)} removed`);
  printLine(
    `Others:      ${n(s.othersAdded)} new, ${n(s.othersRemoved)} removed, ${n(s.othersChanged)} changed`,
  );
  printLine(`Metadata:    ${n(s.metadataChanged)} changed`);
  printLine(`Types:       ${n(s.typesChanged)} changed`);
  printLine(`Chunks:      ${n(s.chunksAdded)} new, ${n(s.chunksRemoved)} removed`);
  printLine(`  Added:   ${formatBytes(s.addedBytes)}`);
  printLine(`  Removed: ${formatBytes(s.removedBytes)}`);
  if (s.errors > 0) printLine(`Unreadable:  ${n(s.errors)} (listed above on stderr)`);
}

async function showImageDiff(
  g: GlobalOptions,
  repo: Repository,
  a: StoredSnapshot,
  b: StoredSnapshot,
  flags: DiffFlags,
): Promise<void> {
  const what = (s: StoredSnapshot) =>
    `${shortHex(s.id)} (${displayText(s.name ?? '')}, ${formatBytes(s.size)})`;
  if (flags.files) {
    if (flags.ranges) throw new CairnError('--ranges and --files cannot be combined', 'Usage');
    const changes = diffImageFiles(repo, a, b, { onNote: g.quiet ? undefined : warn });
    const header = `comparing files in image snapshot ${what(a)} to ${what(b)}:`;
    await showFileDiff(g, withSummary(changes), header, {
      source_snapshot: a.id,
      target_snapshot: b.id,
    });
    return;
  }
  if (!g.json && !g.quiet) printLine(`comparing image snapshot ${what(a)} to ${what(b)}:\n`);
  const events: AsyncIterable<ImageDiffEvent> = diffImages(await repo.blobs(), a, b);
  let shown = 0;
  for await (const e of events) {
    if (e.type === 'range') {
      if (g.json) printJson({ message_type: 'range', offset: e.offset, length: e.length });
      else if (!g.quiet && (flags.ranges || shown < FIRST_RANGES)) {
        printLine(`  at ${e.offset}: ${e.length} bytes (${formatBytes(e.length)})`);
        shown++;
      }
    } else if (g.json) {
      const ids = { source_snapshot: a.id, target_snapshot: b.id };
      printJson({ message_type: 'summary', ...ids, ...imageSummaryJson(e) });
    } else printImageSummary(e, g.quiet ? e.ranges : shown);
  }
}

function printImageSummary(s: ImageDiffSummary, shown: number): void {
  if (shown < s.ranges)
    printLine(`  … and ${s.ranges - shown} more ranges (--ranges lists them all)`);
  if (shown > 0) printLine();
  const bytes = `${formatBytes(s.changedBytes)} (${s.changedBytes} bytes)`;
  printLine(`Changed:  ${bytes} in ${s.ranges} range${s.ranges === 1 ? '' : 's'}`);
  printLine(`Chunks:   ${s.changedChunks} changed, ${s.replacedChunks} replaced`);
  if (s.sizeA !== s.sizeB) printLine(`Size:     ${s.sizeA} → ${s.sizeB} bytes`);
  if (s.partitions.length === 0) return;
  printLine('Partitions:');
  for (const p of s.partitions) {
    const where = `start ${p.start}, ${formatBytes(p.size)}`;
    const label = p.label ? ` ${displayText(p.label)}` : '';
    printLine(`  part${p.number}  ${where}${label}: ${formatBytes(p.changedBytes)} changed`);
  }
}
