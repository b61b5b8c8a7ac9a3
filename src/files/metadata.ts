import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  constants,
  fchmodSync,
  fchownSync,
  futimesSync,
  lstatSync,
  readFileSync,
  unlinkSync,
} from 'node:fs';
import { chmod, chown, lstat, mkdir, open, rename, unlink, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { setAttributeSync } from 'fs-xattr';
import { CairnError } from '../errors.js';
import type { TreeEntry, Xattr } from './tree.js';

/**
 * Creating entries on restore without following what is in the way, and applying a tree
 * entry's metadata to them, with Linux semantics.
 *
 * Everything goes through a descriptor opened without following symlinks: a regular file's
 * own handle, or for other types an `O_PATH | O_NOFOLLOW` descriptor used through its
 * `/proc/self/fd/N` name. That name is what lets us use fs-xattr (string paths only) for names
 * that are not UTF-8, and it pins the inode: a symlink planted at the path after we created
 * the entry cannot redirect chown/chmod/utimes elsewhere. Through that name, chown, utimes and
 * setxattr act on a symlink itself (measured on Linux 6.x), so symlinks get their owner,
 * times and xattrs too; their mode does not exist on Linux.
 */
const O_PATH = 0o10000000; // Linux's value on x86, arm and most other architectures.
const run = promisify(execFile);
/** Directories are made private while restore fills them; their mode is applied last. */
const DIR_MODE = 0o700;

export interface MetadataOptions {
  /**
   * Restore owners, and xattrs in the privileged `trusted.`/`security.` namespaces. Only root
   * may give files away or set those; an ordinary user restores their own copy instead.
   */
  privileged: boolean;
  /** Who we are and our umask: what a newly created file gets without asking. */
  uid?: number;
  gid?: number;
  umask?: number;
}

export function defaultMetadataOptions(): MetadataOptions {
  return {
    privileged: process.getuid?.() === 0,
    uid: process.geteuid?.(),
    gid: process.getegid?.(),
    umask: readUmask(),
  };
}

/**
 * The umask from /proc (Linux ≥ 4.7). process.umask() would set it to 0 for a moment, a race
 * with every thread creating files meanwhile.
 */
function readUmask(): number | undefined {
  try {
    const m = /^Umask:\s*([0-7]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'));
    return m ? Number.parseInt(m[1]!, 8) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Open flags for a regular file to restore: created, never over what is there nor through a
 * symlink (see `replacing`); verifying reads it back.
 */
export function createFlags(verify: boolean): number {
  const access = verify ? constants.O_RDWR : constants.O_WRONLY;
  return access | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;
}

/** A new file is created with its final permission bits, so fchmod is mostly not needed. */
export function creationMode(entry: Pick<TreeEntry, 'mode'>): number {
  return entry.mode & 0o777;
}

/**
 * utimes takes seconds as a double and libuv truncates it to whole microseconds, so restored
 * times are exact to the microsecond and the nanoseconds are lost. The double names the
 * middle of the microsecond: its rounding error (≤ 0.12 µs for dates before 2038, ≤ 0.24 µs
 * before 2106) then cannot push the truncation into a neighbour (measured: 1 time in 13 was
 * 1 µs off without it). A string, not a number: Node replaces negative numbers (times before
 * 1970) by the current time, but passes numeric strings through.
 */
export function utimesArg(ns: bigint): string {
  const us = ns / 1000n;
  const half = us < 0n ? -0.5 : 0.5;
  return String(Number(us / 1_000_000n) + (Number(us % 1_000_000n) + half) / 1e6);
}

/** What `applyFileMetadata` needs of a tree entry. */
export type FileMetadata = Pick<TreeEntry, 'mode' | 'uid' | 'gid' | 'mtimeNs' | 'xattrs'>;

/**
 * Metadata of a regular file just created (with `creationMode`) through its open descriptor:
 * owner and mode only where creation did not already give them (`groupInherited`: its
 * directory is setgid, so the group is not ours), xattrs, then times. The system calls are
 * synchronous: see restoreFile in restorer.ts for why.
 */
export function applyFileMetadata(
  fd: number,
  entry: FileMetadata,
  opts: MetadataOptions,
  groupInherited: boolean,
): void {
  const ours = entry.uid === opts.uid && entry.gid === opts.gid && !groupInherited;
  // chown before chmod: chown clears the setuid and setgid bits.
  if (opts.privileged && !ours) fchownSync(fd, entry.uid, entry.gid);
  const special = entry.mode & 0o7000;
  if (special || opts.umask === undefined || entry.mode & opts.umask) fchmodSync(fd, entry.mode);
  if (entry.xattrs.length > 0) setXattrs(`/proc/self/fd/${fd}`, entry.xattrs, opts);
  const t = utimesArg(entry.mtimeNs);
  futimesSync(fd, t, t);
}

/** Metadata of a directory, symlink, FIFO or device node (atime is set to mtime). */
export async function applyPathMetadata(
  path: Buffer,
  entry: TreeEntry,
  opts: MetadataOptions,
): Promise<void> {
  const fh = await open(path, O_PATH | constants.O_NOFOLLOW);
  try {
    const proc = `/proc/self/fd/${fh.fd}`;
    if (opts.privileged) await chown(proc, entry.uid, entry.gid);
    if (entry.type !== 'symlink') await chmod(proc, entry.mode);
    setXattrs(proc, entry.xattrs, opts);
    const t = utimesArg(entry.mtimeNs);
    await utimes(proc, t, t);
  } finally {
    await fh.close();
  }
}

/** Synchronous: a few small system calls, cheaper than a trip through the thread pool. */
function setXattrs(proc: string, xattrs: Xattr[], opts: MetadataOptions): void {
  for (const x of xattrs) {
    const name = x.name.toString('utf8');
    if (!opts.privileged && /^(trusted|security)\./.test(name)) continue;
    if (!Buffer.from(name).equals(x.name)) {
      throw new CairnError(`xattr name ${JSON.stringify(name)} is not UTF-8 and cannot be set`);
    }
    setAttributeSync(proc, name, x.value);
  }
}

/**
 * Creates a FIFO or device node at `path` with the `mkfifo`/`mknod` commands (Node has no
 * binding). They are created under a random ASCII name in `scratchDir` (on the same
 * filesystem) and renamed into place: a command line cannot carry a name that is not UTF-8,
 * and rename(2) replaces a planted symlink instead of following it.
 */
export async function makeNode(path: Buffer, entry: TreeEntry, scratchDir: string): Promise<void> {
  const temp = join(scratchDir, `.cairn-node-${randomBytes(8).toString('hex')}`);
  const args =
    entry.type === 'fifo'
      ? ['mkfifo', '-m', '600', '--', temp]
      : [
          'mknod',
          '-m',
          '600',
          '--',
          temp,
          entry.type === 'chardev' ? 'c' : 'b',
          ...devNumbers(entry),
        ];
  try {
    await run(args[0]!, args.slice(1));
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new CairnError(`${args[0]} failed: ${(e.stderr || e.message).trim()}`);
  }
  try {
    await rename(temp, path);
  } catch (err) {
    await unlink(temp).catch(() => undefined);
    throw err;
  }
}

/** Major and minor numbers from a Linux dev_t (glibc's gnu_dev_major/minor encoding). */
function devNumbers(entry: TreeEntry): [string, string] {
  const dev = BigInt(entry.rdev ?? 0);
  const major = ((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn);
  const minor = (dev & 0xffn) | ((dev >> 12n) & ~0xffn);
  return [String(major), String(minor)];
}

/**
 * Runs a create-like operation; if something is in the way, removes it (unless it is a
 * directory) and tries once more. A symlink in the way is removed, never followed.
 */
export async function replacing<T>(dest: Buffer, create: () => Promise<T>): Promise<T> {
  try {
    return await create();
  } catch (err) {
    clearTheWay(dest, err);
  }
  return create();
}

/** `replacing` for a synchronous create, as on the restore workers. */
export function replacingSync<T>(dest: Buffer, create: () => T): T {
  try {
    return create();
  } catch (err) {
    clearTheWay(dest, err);
  }
  return create();
}

/** After a create failed with `err`: removes what is in the way, or rethrows. */
function clearTheWay(dest: Buffer, err: unknown): void {
  if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  if (lstatSync(dest).isDirectory()) {
    throw new CairnError('a directory is in the way: remove it to restore this entry');
  }
  unlinkSync(dest);
}

/**
 * mkdir that reuses an existing directory but replaces anything else, a symlink included.
 * Resolves to whether the directory is setgid (a new one inherits that from its parent), as
 * files created in it then get its group rather than ours.
 */
export async function mkdirNoFollow(dest: Buffer, parentSetgid: boolean): Promise<boolean> {
  try {
    await mkdir(dest, DIR_MODE);
    return parentSetgid;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  const st = await lstat(dest);
  if (st.isDirectory()) return (st.mode & 0o2000) !== 0;
  await unlink(dest);
  await mkdir(dest, DIR_MODE);
  return parentSetgid;
}
