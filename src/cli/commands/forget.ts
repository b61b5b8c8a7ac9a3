import type { Command } from 'commander';
import { CairnError } from '../../errors.js';
import { displayText } from '../../files/paths.js';
import { type ForgetGroup, type ForgetResult, forget } from '../../ops/forget.js';
import {
  describePolicy,
  type GroupField,
  type KeepDecision,
  type RetentionPolicy,
} from '../../ops/policy.js';
import type { StoredSnapshot } from '../../repo/snapshot.js';
import { type GlobalOptions, withRepository } from '../context.js';
import { printJson, printLine } from '../output.js';
import {
  addFilterOptions,
  collectOption,
  type FilterFlags,
  snapshotFilter,
} from '../snapshot-args.js';
import { parseMaxUnused, printPruneResult, pruneJson } from './prune.js';
import { localTime, snapshotJson } from './snapshots.js';

interface ForgetFlags extends FilterFlags {
  keepLast?: number;
  keepHourly?: number;
  keepDaily?: number;
  keepWeekly?: number;
  keepMonthly?: number;
  keepYearly?: number;
  keepTag?: string[];
  groupBy: string;
  dryRun?: boolean;
  prune?: boolean;
  maxUnused: string;
}

const GROUP_FIELDS: readonly GroupField[] = ['host', 'paths', 'name', 'tags'];

export function registerForget(program: Command): void {
  const cmd = program
    .command('forget')
    .description('remove snapshots: those named, or all a retention policy does not keep')
    .argument('[ref...]', 'snapshots to remove (ID, prefix or "latest"); no policy then');
  for (const [rule, what] of [
    ['last', 'the N latest snapshots'],
    ['hourly', 'the latest snapshot of each of the last N hours with snapshots'],
    ['daily', 'the latest snapshot of each of the last N days with snapshots'],
    ['weekly', 'the latest snapshot of each of the last N weeks with snapshots'],
    ['monthly', 'the latest snapshot of each of the last N months with snapshots'],
    ['yearly', 'the latest snapshot of each of the last N years with snapshots'],
  ]) {
    cmd.option(`--keep-${rule} <n>`, `keep ${what} (-1 or "unlimited": all)`, parseCount);
  }
  addFilterOptions(
    cmd
      .option(
        '--keep-tag <tags>',
        'keep snapshots with all these tags (a,b; repeatable)',
        collectOption,
      )
      .option(
        '--group-by <fields>',
        'group by host,paths,name,tags ("" for one group)',
        'host,paths,name',
      )
      .option('-n, --dry-run', 'show what would be removed; remove nothing')
      .option('--prune', 'run prune afterwards if snapshots were removed')
      .option(
        '--max-unused <limit>',
        'for --prune: unused space tolerated (5%, 100M, unlimited)',
        '5%',
      ),
  ).action(async (refs: string[], flags: ForgetFlags, command: Command) => {
    const g = command.optsWithGlobals<GlobalOptions>();
    const policy = policyOf(flags);
    const policyGiven = Object.values(policy).some((v) => v !== undefined);
    if (refs.length > 0 && policyGiven) {
      throw new CairnError('give snapshots to remove or a --keep-* policy, not both', 'Usage');
    }
    const result = await withRepository(g, (repo) =>
      forget(repo, {
        refs,
        policy,
        groupBy: parseGroupBy(flags.groupBy),
        filter: snapshotFilter(flags),
        dryRun: flags.dryRun,
        prune: flags.prune ? { maxUnused: parseMaxUnused(flags.maxUnused) } : undefined,
      }),
    );
    if (g.json) return printForgetJson(result);
    if (!g.quiet) printForget(result, policy, refs.length > 0);
  });
}

function parseCount(text: string): number {
  if (text === 'unlimited') return -1;
  const n = Number(text);
  if (!Number.isInteger(n) || n < -1) {
    throw new CairnError(`invalid count "${text}": a whole number, -1 or "unlimited"`, 'Usage');
  }
  return n;
}

function policyOf(f: ForgetFlags): RetentionPolicy {
  return {
    last: f.keepLast,
    hourly: f.keepHourly,
    daily: f.keepDaily,
    weekly: f.keepWeekly,
    monthly: f.keepMonthly,
    yearly: f.keepYearly,
    tags: f.keepTag?.map((t) => (t === '' ? [] : t.split(','))),
  };
}

function parseGroupBy(text: string): GroupField[] {
  const fields = text.split(',').filter((f) => f !== '');
  for (const f of fields) {
    if (!GROUP_FIELDS.includes(f as GroupField)) {
      throw new CairnError(
        `invalid --group-by field "${f}": use ${GROUP_FIELDS.join(', ')}`,
        'Usage',
      );
    }
  }
  return fields as GroupField[];
}

/** restic's form: one array of groups (snapshots named by ID: one group with no key). */
function printForgetJson(r: ForgetResult): void {
  const byRef = r.groups.length === 0 && r.removed.length > 0;
  printJson(
    byRef
      ? [{ keep: [], remove: r.removed.map(snapshotJson), reasons: [] }]
      : r.groups.map((grp) => ({
          ...grp.key,
          keep: grp.keep.map((k) => snapshotJson(k.snapshot)),
          remove: grp.remove.map(snapshotJson),
          reasons: grp.keep.map((k) => ({
            snapshot: snapshotJson(k.snapshot),
            matches: k.reasons,
          })),
        })),
  );
  if (r.prune) printJson(pruneJson(r.prune));
}

function printForget(r: ForgetResult, policy: RetentionPolicy, byRef: boolean): void {
  if (r.policyEmpty) {
    printLine('no policy was specified, no snapshots will be removed');
    return;
  }
  if (!byRef) printLine(`Applying policy: ${describePolicy(policy)}`);
  for (const grp of r.groups) printGroup(grp);
  const verb = r.dryRun ? 'would remove' : 'removed';
  if (byRef) for (const s of r.removed) printLine(`${verb} snapshot ${s.id.slice(0, 8)}`);
  else if (r.dryRun && r.removed.length > 0)
    printLine(`${r.removed.length} snapshots would be removed`);
  if (r.prune) {
    printLine(
      `${r.removed.length} snapshots ${r.dryRun ? 'would be' : 'have been'} removed, running prune`,
    );
    printPruneResult(r.prune);
  }
}

function printGroup(grp: ForgetGroup): void {
  const k = grp.key;
  const what = [
    k.host !== undefined ? `host ${displayText(k.host)}` : '',
    k.paths ? `paths ${displayText(k.paths.join(', '))}` : '',
    k.name !== undefined ? `image ${displayText(k.name)}` : '',
    k.tags ? `tags [${displayText(k.tags.join(', '))}]` : '',
  ].filter(Boolean);
  printLine(`snapshots for ${[`${k.kind}`, ...what].join(', ')}:`);
  printLine(`keep ${grp.keep.length} snapshots:`);
  printTable(grp.keep);
  if (grp.remove.length > 0) {
    printLine(`remove ${grp.remove.length} snapshots:`);
    printTable(grp.remove.map((snapshot) => ({ snapshot, reasons: [] })));
  }
  printLine();
}

/** restic's layout: ID, time, host, tags, reasons (kept ones), paths or image name. */
function printTable(
  rows: readonly (KeepDecision | { snapshot: StoredSnapshot; reasons: [] })[],
): void {
  const withReasons = rows.some((r) => r.reasons.length > 0);
  const cells = rows.map(({ snapshot: s, reasons }) => [
    s.id.slice(0, 8),
    localTime(new Date(s.time)),
    displayText(s.hostname),
    displayText(s.tags.join(',')),
    ...(withReasons ? [reasons.join(', ')] : []),
    displayText(s.kind === 'files' ? (s.paths ?? []).join(', ') : (s.name ?? '')),
  ]);
  const header = ['ID', 'Time', 'Host', 'Tags', ...(withReasons ? ['Reasons'] : []), 'Paths/Name'];
  const all = [header, ...cells];
  const widths = header.map((_, i) => Math.max(...all.map((r) => r[i]!.length)));
  for (const r of all) {
    printLine(r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  '));
  }
}
