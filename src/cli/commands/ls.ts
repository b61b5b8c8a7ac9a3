import type { Command } from 'commander';
import { CairnError, shortHex } from '../../errors.js';
import { findEntry, HardlinkTracker, rootTreeId, walkFrom } from '../../files/browse.js';
import { displayText, jsonPath } from '../../files/paths.js';
import type { EntryType, TreeEntry } from '../../files/tree.js';
import { openImageFiles, treeEntry, type VolumeInfo } from '../../fs/index.js';
import { describeImage } from '../../image/index.js';
import type { Repository } from '../../repo/repository.js';
import type { StoredSnapshot } from '../../repo/snapshot.js';
import type { GlobalOptions } from '../context.js';
import { formatBytes, printJson, printLine, warn } from '../output.js';
import { addFilterOptions, type FilterFlags, withSnapshot } from '../snapshot-args.js';
import { localTime } from './snapshots.js';

interface LsFlags extends FilterFlags {
  long?: boolean;
}

export function registerLs(program: Command): void {
  addFilterOptions(
    program
      .command('ls')
      .description("list a snapshot's entries at and below PATH (default: all)")
      .argument('<ref>', 'snapshot ID, ID prefix or "latest"')
      .argument('[path]', 'absolute path inside the snapshot')
      .option('-l, --long', 'also show mode, owner, size and modification time'),
  ).action(async (ref: string, path: string | undefined, flags: LsFlags, cmd: Command) => {
    const g = cmd.optsWithGlobals<GlobalOptions>();
    await withSnapshot(g, ref, flags, 'ls', async (repo, snap) => {
      const form = g.json ? 'json' : flags.long ? 'long' : 'short';
      if (snap.kind === 'image') return listImage(repo, snap, path, form, g.quiet === true);
      await listFiles(repo, snap, path ?? '/', form);
    });
  });
}

async function listFiles(
  repo: Repository,
  snap: StoredSnapshot,
  path: string,
  form: 'short' | 'long' | 'json',
): Promise<void> {
  const store = await repo.blobs();
  const root = rootTreeId(snap);
  const found = await findEntry(store, root, path);
  if (!found) {
    throw new CairnError(`${path} not found in snapshot ${shortHex(snap.id)}`, 'NotFound');
  }
  const links = new HardlinkTracker();
  for await (const { path: p, entry } of walkFrom(store, root, found)) {
    const original = links.linkTarget(entry, p);
    if (form === 'json') printJson(entryJson(p, entry, original));
    else if (form === 'long') printLine(longLine(p, entry));
    else printLine(displayText(p));
  }
}

/**
 * An image snapshot: without PATH its name, size and partitions; then the files inside it
 * (SPEC: `part<N>/…` for whole disks) at and below PATH, in the file snapshot's forms.
 */
async function listImage(
  repo: Repository,
  snap: StoredSnapshot,
  path: string | undefined,
  form: 'short' | 'long' | 'json',
  quiet: boolean,
): Promise<void> {
  const { files, volumes } = await openImageFiles(repo, snap);
  if (path === undefined) await describeImageHeader(repo, snap, volumes, form === 'json');
  // Why a recognised filesystem's files are missing (or may be stale): a note, not an error.
  for (const v of volumes) if (v.type && v.note && !quiet) warn(`${volumeName(v)}: ${v.note}`);
  if (!files) {
    if (path === undefined) return;
    throw new CairnError(`no readable filesystem in image snapshot ${shortHex(snap.id)}`);
  }
  const links = new HardlinkTracker();
  let errors = 0;
  const onError = (p: Buffer, err: Error) => {
    errors++;
    warn(`${displayText(p)}: ${err.message}`);
  };
  for await (const e of files.walk(path ?? '/', { onError })) {
    const entry = treeEntry(e.path.subarray(e.path.lastIndexOf(0x2f) + 1), e.stat, e.target);
    const original = links.linkTarget(entry, e.path);
    if (form === 'json') {
      printJson({ ...entryJson(e.path, entry, original), ...unreadable(e.stat.unreadable) });
    } else if (form === 'long') printLine(longLine(e.path, entry));
    else printLine(displayText(e.path));
  }
  if (errors > 0) throw new CairnError(`${errors} entries in the image could not be read`);
}

const unreadable = (why?: string) => (why ? { unreadable: why } : {});

function volumeName(v: VolumeInfo): string {
  return v.partition === undefined ? 'image' : `part${v.partition}`;
}

async function describeImageHeader(
  repo: Repository,
  snap: StoredSnapshot,
  volumes: VolumeInfo[],
  json: boolean,
): Promise<void> {
  const d = await describeImage(repo, snap);
  const fsOf = (n?: number) => volumes.find((v) => v.partition === n)?.type;
  const withFs = (n?: number) => (fsOf(n) ? { filesystem: fsOf(n) } : {});
  if (json) {
    const table = d.partitionTable ? { partition_table: d.partitionTable } : {};
    return printJson({
      type: 'image',
      name: d.name,
      size: d.size,
      ...table,
      ...(d.partitionTable ? {} : withFs()),
      partitions: d.partitions.map((p) => ({ ...p, ...withFs(p.number) })),
    });
  }
  printLine(`image ${displayText(d.name)}, ${formatBytes(d.size)} (${d.size} bytes)`);
  if (d.partitionTable) printLine(`partition table: ${d.partitionTable}`);
  else if (fsOf()) printLine(`filesystem: ${fsOf()}`);
  for (const p of d.partitions) {
    const label = p.label ? ` ${displayText(p.label)}` : '';
    const where = `start ${p.start}, ${formatBytes(p.size)}`;
    const fs = fsOf(p.number) ? `  ${fsOf(p.number)}` : '';
    printLine(`  part${p.number}  type ${displayText(p.type)}  ${where}${label}${fs}`);
  }
}

/** SPEC's `ls --json` object; `permissions` (as `-rw-r--r--`) is added for people. */
export function entryJson(path: Buffer, e: TreeEntry, original?: Buffer): Record<string, unknown> {
  const target = original ?? (e.type === 'symlink' ? e.target : undefined);
  return {
    ...jsonPath(path),
    type: original ? 'hardlink' : e.type,
    size: e.size,
    mode: e.mode,
    permissions: modeString(e.type, e.mode),
    uid: e.uid,
    gid: e.gid,
    user: e.user,
    group: e.group,
    mtime: isoNs(e.mtimeNs),
    ...(target ? jsonPath(target, 'target') : {}),
  };
}

function longLine(path: Buffer, e: TreeEntry): string {
  const owner = `${e.user || e.uid}/${e.group || e.gid}`;
  const time = localTime(new Date(Number(e.mtimeNs / 1_000_000n)));
  const link = e.type === 'symlink' ? ` -> ${displayText(e.target!)}` : '';
  const cols = [
    modeString(e.type, e.mode),
    displayText(owner).padEnd(17),
    String(e.size).padStart(12),
  ];
  return `${cols.join(' ')} ${time} ${displayText(path)}${link}`;
}

const TYPE_CHAR: Record<EntryType, string> = {
  file: '-',
  dir: 'd',
  symlink: 'l',
  fifo: 'p',
  chardev: 'c',
  blockdev: 'b',
};

/** `drwxr-sr-t`-style, with setuid/setgid/sticky shown as s/S and t/T as ls(1) does. */
export function modeString(type: EntryType, mode: number): string {
  let s = TYPE_CHAR[type];
  for (const [shift, special, char] of [
    [6, 0o4000, 's'],
    [3, 0o2000, 's'],
    [0, 0o1000, 't'],
  ] as const) {
    const bits = (mode >> shift) & 7;
    const x = bits & 1;
    const sp = mode & special;
    s += bits & 4 ? 'r' : '-';
    s += bits & 2 ? 'w' : '-';
    s += sp ? (x ? char : char.toUpperCase()) : x ? 'x' : '-';
  }
  return s;
}

/** ISO 8601 in UTC with all nine digits of the nanoseconds the snapshot recorded. */
export function isoNs(ns: bigint): string {
  const billion = 1_000_000_000n;
  let secs = ns / billion;
  if (ns % billion < 0n) secs -= 1n;
  const frac = ns - secs * billion;
  const base = new Date(Number(secs) * 1000).toISOString().slice(0, 19);
  return `${base}.${frac.toString().padStart(9, '0')}Z`;
}
