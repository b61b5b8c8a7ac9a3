import { constants } from 'node:fs';
import type { EntryType, TreeEntry } from '../files/tree.js';
import type { FsStat } from '../fs/index.js';

/** An error a filesystem call answers with: `errno` as the kernel knows it (positive). */
export class FsError extends Error {
  constructor(readonly errno: number) {
    super(`errno ${errno}`);
  }
}

/** What stat shows of a node. */
export interface Attr {
  /** File type and permission bits, as st_mode. */
  mode: number;
  uid: number;
  gid: number;
  size: number;
  nlink: number;
  mtimeMs: number;
  ctimeMs: number;
  rdev: number;
  /** 512-byte blocks stored: holes take none. */
  blocks: number;
}

const TYPE_BITS: Record<EntryType, number> = {
  file: constants.S_IFREG,
  dir: constants.S_IFDIR,
  symlink: constants.S_IFLNK,
  fifo: constants.S_IFIFO,
  chardev: constants.S_IFCHR,
  blockdev: constants.S_IFBLK,
};

/** An entry of a file snapshot's tree. */
export function entryAttr(e: TreeEntry): Attr {
  const stored = (e.content ?? []).reduce((n, p) => n + (p.id ? p.length : 0), 0);
  return {
    mode: TYPE_BITS[e.type] | e.mode,
    uid: e.uid,
    gid: e.gid,
    size: e.type === 'symlink' ? e.target!.length : e.size,
    nlink: Math.max(1, e.nlink),
    mtimeMs: Number(e.mtimeNs / 1_000_000n),
    ctimeMs: Number(e.ctimeNs / 1_000_000n),
    rdev: e.rdev ?? 0,
    blocks: Math.ceil(stored / 512),
  };
}

/**
 * An entry of a filesystem inside an image, as that filesystem records it. Blocks are
 * counted from the size: the stored count would mean reading every file's extent map to
 * answer a stat.
 */
export function fsAttr(st: FsStat): Attr {
  return {
    mode: TYPE_BITS[st.type] | st.mode,
    uid: st.uid,
    gid: st.gid,
    size: st.size,
    nlink: Math.max(1, st.nlink),
    mtimeMs: Number(st.mtimeNs / 1_000_000n),
    ctimeMs: Number(st.ctimeNs / 1_000_000n),
    rdev: st.rdev ?? 0,
    blocks: Math.ceil(st.size / 512),
  };
}
