import { execFile } from 'node:child_process';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { promisify } from 'node:util';
import { isMounted, mountAt } from './mount-table.js';

/**
 * The FUSE binding: @cocalc/fuse-native, a maintained fork of fuse-native (same C code and
 * API) that compiles at install against the system's libfuse2 (Debian's libfuse-dev), where
 * fuse-native itself pulls in fuse-shared-library and its bundled libfuse and fusermount
 * binaries. Its own type declarations disagree with its code (read's callback, getxattr),
 * so the types here follow its index.js.
 */
const require = createRequire(import.meta.url);
const run = promisify(execFile);

/** What getattr reports; times in milliseconds (the binding's resolution). */
export interface FuseStat {
  mode: number;
  uid: number;
  gid: number;
  size: number;
  nlink: number;
  rdev: number;
  blksize: number;
  blocks: number;
  atime: number;
  mtime: number;
  ctime: number;
}

export interface FuseStatfs {
  bsize: number;
  frsize: number;
  blocks: number;
  bfree: number;
  bavail: number;
  files: number;
  ffree: number;
  favail: number;
  fsid: number;
  flag: number;
  namemax: number;
}

/** Callbacks take 0 or a negative errno first; read's takes the byte count or -errno. */
export interface ReadOperations {
  getattr(path: string, cb: (err: number, stat?: FuseStat) => void): void;
  readdir(path: string, cb: (err: number, names?: string[]) => void): void;
  readlink(path: string, cb: (err: number, target?: string) => void): void;
  open(path: string, flags: number, cb: (err: number, fh?: number) => void): void;
  read(path: string, fh: number, buf: Buffer, len: number, pos: number, cb: Result): void;
  release(path: string, fh: number, cb: (err: number) => void): void;
  getxattr(path: string, name: string, pos: number, cb: (err: number, v?: Buffer) => void): void;
  listxattr(path: string, cb: (err: number, names?: string[]) => void): void;
  statfs(path: string, cb: (err: number, st?: FuseStatfs) => void): void;
}

type Result = (result: number) => void;

/** Every operation that would change something; the callback is always the last argument. */
export const WRITE_OPERATIONS = [
  'write',
  'create',
  'mknod',
  'mkdir',
  'unlink',
  'rmdir',
  'rename',
  'link',
  'symlink',
  'chmod',
  'chown',
  'truncate',
  'ftruncate',
  'utimens',
  'setxattr',
  'removexattr',
] as const;

export type FuseOperations = ReadOperations &
  Record<(typeof WRITE_OPERATIONS)[number], (...args: unknown[]) => void>;

export interface FuseInstance {
  mount(cb: (err: Error | null) => void): void;
  unmount(cb: (err: Error | null) => void): void;
}

interface FuseClass {
  new (mnt: string, ops: FuseOperations, opts: { timeout: false }): FuseInstance;
  unmount(mnt: string, cb: (err: Error | null) => void): void;
}

const Fuse = require('@cocalc/fuse-native') as FuseClass;

/**
 * fuse-native unmounts with `fusermount -uz "<path>"` run through a shell, where a `$` or
 * a backquote in the path would be expanded. Its close() looks the function up on the
 * class at call time, so replacing it here covers every unmount. A mount point that is no
 * longer mounted (unmounted from outside) counts as done, so close() still releases the
 * binding's event-loop handle and the process can exit.
 */
Fuse.unmount = (mnt, cb) => {
  detach(mnt).then(
    () => cb(null),
    (err: Error) => cb(err),
  );
};

/**
 * Lazy unmount (`fusermount -u -z`, fuse3's compatible fusermount): the mount point is
 * free at once even while a program still has a file open inside it.
 */
export async function detach(mountpoint: string): Promise<void> {
  if (!(await isMounted(mountpoint))) return;
  try {
    await run('fusermount', ['-u', '-z', '--', mountpoint]);
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`fusermount -u -z ${mountpoint} failed: ${(e.stderr || e.message).trim()}`);
  }
}

/**
 * Mount options: read-only for the kernel too (`ro`: writes fail with EROFS before they
 * reach us); permission bits checked by the kernel (`default_permissions`, as restic), so
 * with `allow_other` every user sees what the modes and owners recorded in the snapshots
 * let them see, as on the original system or a read-only loop mount of an image; file
 * data kept in the page cache across opens (`kernel_cache`: snapshot files never change).
 * fuse-native has no option for `ro`, so its option string is replaced.
 */
function fuseOptions(allowOther: boolean): string {
  const other = allowOther ? ',allow_other' : '';
  return `-oro,default_permissions${other},kernel_cache,fsname=cairn,subtype=cairn`;
}

/**
 * Kernel read-ahead for the mount, in KiB. A FUSE mount starts at the kernel's default of
 * 128 KiB, which the filesystem may only lower, and libfuse 2 sends no request larger than
 * 128 KiB either: a sequential reader then has two 128 KiB reads in flight, each a round trip
 * through the binding's thread hand-offs to the event loop, and under load that round trip,
 * not the repository, bounds the speed (measured: 4 096 requests for a 512 MiB file spent
 * 0.6-1.2 s in our read handler of 4.4 s). With 1 MiB the kernel keeps 8-12 requests in
 * flight. Measured, 512 MiB read with dd bs=1M, 5 rounds at load 7-11 from other work,
 * median ratio to `restic mount` in the same round: 0.87x at 128 KiB, 0.92x at 512,
 * 0.95x at 1024, 0.80x at 2048. Random reads are not affected: the kernel reads ahead
 * only once reads are sequential, and not at all for O_DIRECT reads (a loop device's with
 * direct I/O).
 */
const READ_AHEAD_KB = 1024;

/**
 * Raises the kernel's read-ahead for the FUSE mount at `mountpoint` (see READ_AHEAD_KB)
 * through /sys/class/bdi, which only root may write: returns false, changing nothing,
 * where this process may not (reads are then slower, not wrong).
 */
export async function raiseReadAhead(mountpoint: string): Promise<boolean> {
  // The kernel keeps the smaller of this and what the filesystem answered to its INIT, and
  // fuse-native reports the mount before that answer is sent; a stat waits for it.
  await stat(mountpoint);
  const device = (await mountAt(mountpoint))?.device;
  if (!device) return false;
  try {
    await writeFile(`/sys/class/bdi/${device}/read_ahead_kb`, `${READ_AHEAD_KB}\n`);
    return true;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? '';
    if (['EACCES', 'EPERM', 'EROFS', 'ENOENT'].includes(code)) return false;
    throw err;
  }
}

export interface FuseMountOptions {
  /** Let users other than the one mounting in (FUSE's `allow_other`). */
  allowOther: boolean;
}

export function createFuse(
  mountpoint: string,
  ops: FuseOperations,
  opts: FuseMountOptions,
): FuseInstance {
  const options = fuseOptions(opts.allowOther);
  class ReadOnlyFuse extends Fuse {
    _fuseOptions(): string {
      return options;
    }
  }
  // No per-operation timeout: fuse-native's default answers a read slower than 15 s with
  // ETIMEDOUT, which a loop-mounted filesystem would take for a disk error.
  return new ReadOnlyFuse(mountpoint, ops, { timeout: false });
}

/**
 * Whether this process may mount with `allow_other`: root may; other users only where
 * /etc/fuse.conf has `user_allow_other` (fusermount refuses the mount otherwise).
 */
export async function othersAllowed(): Promise<boolean> {
  if (process.getuid?.() === 0) return true;
  const conf = await readFile('/etc/fuse.conf', 'utf8').catch(() => '');
  return /^\s*user_allow_other\s*$/m.test(conf);
}
