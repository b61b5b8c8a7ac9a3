import { constants } from 'node:os';
import { type Attr, FsError } from './attr.js';
import {
  type FuseOperations,
  type FuseStat,
  type FuseStatfs,
  type ReadOperations,
  WRITE_OPERATIONS,
} from './binding.js';
import type { SnapshotFs } from './fs.js';
import { errorText } from './layout.js';

const { errno } = constants;
/** statvfs f_flag ST_RDONLY. */
const ST_RDONLY = 1;

const STATFS: FuseStatfs = {
  bsize: 4096,
  frsize: 4096,
  blocks: 0,
  bfree: 0,
  bavail: 0,
  files: 0,
  ffree: 0,
  favail: 0,
  fsid: 0,
  flag: ST_RDONLY,
  namemax: 255,
};

/**
 * The FUSE operations over a SnapshotFs, in fuse-native's callback style. A failure that is
 * not a plain filesystem answer (ENOENT and the like) — a damaged or unreadable repository
 * object — is answered with EIO and reported through `onError`, never dropped.
 */
export function fuseOperations(fs: SnapshotFs, onError: (message: string) => void): FuseOperations {
  /** The errno (negative) to answer a failure with. */
  const failed = (what: string, err: unknown): number => {
    if (err instanceof FsError) return -err.errno;
    onError(`${what}: ${errorText(err)}`);
    return -errno.EIO;
  };
  const reply = <T>(what: string, work: Promise<T>, cb: (err: number, v?: NoInfer<T>) => void) => {
    work.then(
      (value) => cb(0, value),
      (err: unknown) => cb(failed(what, err)),
    );
  };
  const refuse = (...args: unknown[]) => (args.at(-1) as (err: number) => void)(-errno.EROFS);
  const ops: ReadOperations = {
    getattr: (path, cb) => reply(`stat ${path}`, fs.getattr(path).then(fuseStat), cb),
    readdir: (path, cb) => reply(`list ${path}`, fs.readdir(path), cb),
    readlink: (path, cb) => reply(`readlink ${path}`, fs.readlink(path), cb),
    open: (path, flags, cb) => reply(`open ${path}`, fs.open(path, flags), cb),
    // read answers with the byte count, or a negative errno, in one argument.
    read: (path, fh, buf, len, pos, cb) => {
      fs.read(fh, buf, len, pos).then(cb, (err: unknown) => cb(failed(`read ${path}`, err)));
    },
    release: (_path, fh, cb) => {
      fs.release(fh);
      cb(0);
    },
    listxattr: (path, cb) => reply(`listxattr ${path}`, fs.listxattr(path), cb),
    // No value answers ENODATA (fuse-native's doing).
    getxattr: (path, name, _pos, cb) => reply(`getxattr ${path}`, fs.getxattr(path, name), cb),
    statfs: (_path, cb) => cb(0, STATFS),
  };
  const writes = Object.fromEntries(WRITE_OPERATIONS.map((op) => [op, refuse]));
  return { ...ops, ...writes } as FuseOperations;
}

/** fuse-native carries times in milliseconds as unsigned numbers: none before 1970. */
function fuseStat(a: Attr): FuseStat {
  const mtime = Math.max(0, a.mtimeMs);
  return {
    mode: a.mode,
    uid: a.uid,
    gid: a.gid,
    size: a.size,
    nlink: a.nlink,
    rdev: a.rdev,
    blksize: 4096,
    blocks: a.blocks,
    atime: mtime,
    mtime,
    ctime: Math.max(0, a.ctimeMs),
  };
}
