import type { EntryType } from '../files/tree.js';

/**
 * Random access to bytes: an image snapshot (`ImageReader`), a partition (a window onto
 * one), a file or a buffer. `read` returns fewer bytes only past the end.
 */
export interface ByteSource {
  readonly size: number;
  read(offset: number, length: number): Promise<Buffer>;
}

export type FsType = 'ext2' | 'ext3' | 'ext4' | 'fat12' | 'fat16' | 'fat32' | 'ntfs';

/** What a filesystem records about one entry, in the terms of a file snapshot's tree. */
export interface FsStat {
  type: EntryType;
  /** Permission and special bits (st_mode & 0o7777); FAT and NTFS get fixed defaults. */
  mode: number;
  uid: number;
  gid: number;
  /** Bytes of a file, or of a symlink's target; 0 for directories and devices. */
  size: number;
  mtimeNs: bigint;
  ctimeNs: bigint;
  /** Inode number (ext), MFT record number (NTFS) or first cluster (FAT). */
  inode: number;
  nlink: number;
  /** The partition number holding the entry (0 for an image that is one volume). */
  device: number;
  rdev?: number;
  /** Set when the content cannot be read as stored (e.g. `compressed`, `encrypted`). */
  unreadable?: string;
}

/**
 * A piece of a file's content, in order: bytes stored at `offset` of the volume (or, from
 * the public API, of the image), a hole of zeros, or bytes kept inside the filesystem's
 * metadata (ext inline data, NTFS resident data) given as they are.
 */
export type Extent =
  | { kind: 'data'; offset: number; length: number }
  | { kind: 'hole'; length: number }
  | { kind: 'inline'; length: number; data: Buffer };

/** One node of a filesystem (a file, directory, symlink or special file). */
export interface FsNode {
  readonly stat: FsStat;
  /** The volume whose bytes `extents` refer to. */
  readonly volume: Volume;
  /** A directory's entries in on-disk order, without `.` and `..`. */
  entries(): AsyncGenerator<FsDirent>;
  /** A file's content, covering exactly `stat.size` bytes, in volume offsets. */
  extents(): AsyncGenerator<Extent>;
  /** A symlink's target. */
  readlink(): Promise<Buffer>;
}

export interface FsDirent {
  name: Buffer;
  /**
   * Loads the entry's node (directories list names without reading every inode); undefined
   * for what a snapshot does not store (sockets).
   */
  load(): Promise<FsNode | undefined>;
}

/** One opened filesystem: its bytes, where they sit in the image, and its root. */
export interface Volume {
  readonly type: FsType | 'disk';
  readonly source: ByteSource;
  /** Offset of `source` in the image: added to extents so they name image bytes. */
  readonly origin: number;
  /** Facts worth telling the user (e.g. a journal that needs recovery). */
  readonly notes: string[];
  root(): Promise<FsNode>;
}

/** Where a volume sits in an image and how it is identified. */
export interface VolumeOptions {
  /** Offset of the source in the image (default 0). */
  origin?: number;
  /** Partition number recorded as every entry's `device` (default 0). */
  device?: number;
}
