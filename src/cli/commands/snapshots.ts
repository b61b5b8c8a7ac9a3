import type { Command } from 'commander';
import { displayText } from '../../files/paths.js';
import type { StoredSnapshot } from '../../repo/snapshot.js';
import type { GlobalOptions } from '../context.js';
import { formatBytes, printJson, printLine } from '../output.js';
import {
  addFilterOptions,
  type FilterFlags,
  filteredSnapshots,
  withSharedLock,
} from '../snapshot-args.js';

export function registerSnapshots(program: Command): void {
  addFilterOptions(
    program.command('snapshots').description('list snapshots (all, or those matching filters)'),
  ).action(async (flags: FilterFlags, cmd: Command) => {
    const g = cmd.optsWithGlobals<GlobalOptions>();
    const list = await withSharedLock(g, 'snapshots', (repo) => filteredSnapshots(repo, flags));
    if (g.json) return printJson(list.map(snapshotJson));
    printTable(list, !g.quiet);
  });
}

/** SPEC's `snapshots --json` element; `summary` is added when backup recorded one. */
export function snapshotJson(s: StoredSnapshot): Record<string, unknown> {
  return {
    id: s.id,
    short_id: s.id.slice(0, 8),
    time: s.time,
    hostname: s.hostname,
    username: s.username,
    kind: s.kind,
    ...(s.kind === 'files' ? { paths: s.paths ?? [] } : { name: s.name ?? '' }),
    tags: s.tags,
    parent: s.parent ?? null,
    size: s.size,
    ...(s.summary ? { summary: s.summary } : {}),
  };
}

/** One line a snapshot, columns aligned, under a header (unless quiet or there are none). */
function printTable(list: StoredSnapshot[], header: boolean): void {
  const rows = list.map((s) => [
    s.id.slice(0, 8),
    localTime(new Date(s.time)),
    displayText(s.hostname),
    s.kind,
    displayText(s.tags.join(',')),
    displayText(s.kind === 'files' ? (s.paths ?? []).join(', ') : (s.name ?? '')),
    formatBytes(s.size),
  ]);
  const all =
    header && rows.length > 0
      ? [['ID', 'Time', 'Host', 'Kind', 'Tags', 'Paths/Name', 'Size'], ...rows]
      : rows;
  const widths = all[0]?.map((_, i) => Math.max(...all.map((r) => r[i]!.length))) ?? [];
  for (const r of all) {
    printLine(r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  '));
  }
}

/** `YYYY-MM-DD HH:MM:SS` in local time, as restic shows times. */
export function localTime(d: Date): string {
  const p = (n: number) => String(n).padStart(2, '0');
  const day = `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}`;
  return `${day} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}
