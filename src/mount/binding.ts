import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { promisify } from 'node:util';
import { isMounted } from './mount-table.js';

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
