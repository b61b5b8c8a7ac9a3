import { type BigIntStats, lstatSync, readdirSync, readlinkSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import type { Excludes } from './excludes.js';
import { childPath, displayText } from './paths.js';
import type { EntryType, TreeEntry } from './tree.js';

/*
 * What the walk learns from the source filesystem apart from file bytes: listings with
 * lstat, symlink targets, owner names, and the metadata a tree entry records. Paths are
 * Buffers throughout, because names are bytes.
 */

/** What lstat says an entry is; sockets are seen but never stored. */
export type SourceKind = EntryType | 'socket';

export function kindOf(st: BigIntStats): SourceKind | undefined {
  if (st.isFile()) return 'file';
  if (st.isDirectory()) return 'dir';
  if (st.isSymbolicLink()) return 'symlink';
  if (st.isFIFO()) return 'fifo';
  if (st.isCharacterDevice()) return 'chardev';
  if (st.isBlockDevice()) return 'blockdev';
  if (st.isSocket()) return 'socket';
  return undefined;
}

/**
 * Device and inode numbers are 64-bit, but the tree codec stores safe integers. Overlayfs
 * (xino) and some network filesystems set the high bits, so fold them into the low 53 bits:
 * the result is still stable across runs, which is all that hardlink grouping and the
 * unchanged-file test need.
 */
export function foldId(v: bigint): number {
  if (v <= BigInt(Number.MAX_SAFE_INTEGER)) return Number(v);
  return Number(BigInt.asUintN(53, v ^ (v >> 53n)));
}

/**
 * uid/gid → name from /etc/passwd and /etc/group, read once per backup: Node has no
 * getpwuid, and a lookup per file would dominate a no-change backup. The first line for an
 * ID wins, as with getpwuid. Unknown IDs have the empty name.
 */
export class OwnerNames {
  private constructor(
    private readonly users: Map<number, string>,
    private readonly groups: Map<number, string>,
  ) {}

  static async load(passwd = '/etc/passwd', group = '/etc/group'): Promise<OwnerNames> {
    return new OwnerNames(await readIdFile(passwd), await readIdFile(group));
  }

  user(uid: number): string {
    return this.users.get(uid) ?? '';
  }

  group(gid: number): string {
    return this.groups.get(gid) ?? '';
  }
}

async function readIdFile(path: string): Promise<Map<number, string>> {
  const names = new Map<number, string>();
  const text = await readFile(path, 'utf8').catch(() => '');
  for (const line of text.split('\n')) {
    const fields = line.split(':');
    const id = Number(fields[2]);
    if (fields.length >= 3 && fields[2] !== '' && Number.isInteger(id) && !names.has(id)) {
      names.set(id, fields[0]!);
    }
  }
  return names;
}

/** An entry's metadata from its lstat; xattrs and the body by type are filled in later. */
export function entryFromStat(
  name: Buffer,
  type: EntryType,
  st: BigIntStats,
  owners: OwnerNames,
): TreeEntry {
  const uid = Number(st.uid);
  const gid = Number(st.gid);
  const entry: TreeEntry = {
    name,
    type,
    mode: Number(st.mode & 0o7777n),
    uid,
    gid,
    user: owners.user(uid),
    group: owners.group(gid),
    mtimeNs: st.mtimeNs,
    ctimeNs: st.ctimeNs,
    device: foldId(st.dev),
    inode: foldId(st.ino),
    nlink: Number(st.nlink),
    size: type === 'file' ? Number(st.size) : 0,
    xattrs: [],
  };
  if (type === 'chardev' || type === 'blockdev') entry.rdev = foldId(st.rdev);
  return entry;
}

/**
 * True when the file behind `prev` cannot have changed: same inode, size, mtime and ctime.
 * Any change to content, mode, owner, link count or xattrs moves ctime, so the parent's
 * content list and xattrs can be reused as they are.
 */
export function unchangedSince(
  prev: TreeEntry | undefined,
  type: EntryType,
  st: BigIntStats,
): prev is TreeEntry {
  return (
    prev !== undefined &&
    prev.type === type &&
    prev.ctimeNs === st.ctimeNs &&
    prev.mtimeNs === st.mtimeNs &&
    prev.inode === foldId(st.ino) &&
    (prev.type !== 'file' || prev.size === Number(st.size))
  );
}

/** Source data that could not be read: reported, counted and skipped, never fatal. */
export class SourceError extends Error {
  readonly reason: string;

  constructor(
    readonly path: Buffer,
    cause: unknown,
  ) {
    const e = cause as NodeJS.ErrnoException;
    const reason = e?.code ?? e?.message ?? String(cause);
    super(`cannot read ${displayText(path)}: ${reason}`, { cause });
    this.name = 'SourceError';
    this.reason = reason;
  }
}

/** Runs one filesystem call on `path`, turning its failure into a SourceError. */
export async function sourceCall<T>(path: Buffer, fn: () => T | Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw new SourceError(path, err);
  }
}

/*
 * Metadata calls are synchronous. On this class of machine (2-core VM) an async fs call costs
 * ~40 µs of main-thread time for the hand-off to the thread pool and back, against 2–5 µs for
 * the syscall: 100 000 async lstats took 3.0–4.7 s (16 in flight), lstatSync 0.7–1.0 s, and
 * a no-change backup is little else. The event loop gets a turn every YIELD_EVERY entries so
 * that the blob store's worker replies and pack writes keep flowing.
 */
const YIELD_EVERY = 256;

export interface WalkEntry {
  name: Buffer;
  path: Buffer;
  stat: BigIntStats;
  kind: SourceKind;
}

export interface DirListing {
  /** Sorted by name bytes, excluded entries left out. */
  entries: WalkEntry[];
  /** Entries that vanished or could not be lstat'ed. */
  failed: SourceError[];
}

/** Lists `dir` (throws SourceError when it cannot be read) and lstats what is not excluded. */
export async function listDir(dir: Buffer, excludes?: Excludes): Promise<DirListing> {
  const names = await sourceCall(dir, () => readdirSync(dir, { encoding: 'buffer' }));
  const entries: WalkEntry[] = [];
  const failed: SourceError[] = [];
  for (const [i, name] of names.entries()) {
    if (i % YIELD_EVERY === YIELD_EVERY - 1) await yieldToLoop();
    const path = childPath(dir, name);
    let stat: BigIntStats;
    try {
      stat = lstatSync(path, { bigint: true });
    } catch (err) {
      // What is excluded is not missed, though its type is unknown here.
      if (!excludes?.excludes(path, false)) failed.push(new SourceError(path, err));
      continue;
    }
    const kind = kindOf(stat);
    if (!kind || excludes?.excludes(path, kind === 'dir')) continue;
    entries.push({ name, path, stat, kind });
  }
  entries.sort((a, b) => Buffer.compare(a.name, b.name));
  return { entries, failed };
}

export function readTarget(path: Buffer): Promise<Buffer> {
  return sourceCall(path, () => readlinkSync(path, { encoding: 'buffer' }));
}
