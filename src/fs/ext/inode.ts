import type { EntryType } from '../../files/tree.js';
import { damaged } from '../source.js';

/*
 * ext2/3/4 inodes (the kernel's Documentation/filesystems/ext4/inodes.rst). The first 128
 * bytes are the classic inode; larger inodes carry `i_extra_isize` bytes of extra fields
 * (nanoseconds, epoch bits) and then in-inode extended attributes.
 */

export const FL_ENCRYPT = 0x800;
export const FL_EXTENTS = 0x80000;
export const FL_INLINE_DATA = 0x10000000;
/** i_block: 15 little-endian words (block pointers, an extent tree root, or inline bytes). */
export const IBLOCK_SIZE = 60;
const XATTR_MAGIC = 0xea020000;
const XATTR_INDEX_SYSTEM = 7;

export interface ExtInode {
  number: number;
  /** st_mode with the file type bits. */
  mode: number;
  type: EntryType | 'socket';
  uid: number;
  gid: number;
  size: number;
  nlink: number;
  flags: number;
  /** 512-byte units (what the fast-symlink test compares). */
  blocks: number;
  fileAcl: number;
  mtimeNs: bigint;
  ctimeNs: bigint;
  iblock: Buffer;
  /** The in-inode extended attribute area (may be empty). */
  xattrs: Buffer;
}

const TYPES: Record<number, EntryType | 'socket'> = {
  1: 'fifo',
  2: 'chardev',
  4: 'dir',
  6: 'blockdev',
  8: 'file',
  10: 'symlink',
  12: 'socket',
};

export function parseInode(raw: Buffer, number: number): ExtInode {
  const mode = raw.readUInt16LE(0);
  const type = TYPES[mode >> 12];
  if (!type) throw damaged(`inode ${number} has an invalid mode ${mode.toString(8)}`);
  const size = raw.readUInt32LE(4) + raw.readUInt32LE(0x6c) * 2 ** 32;
  if (!Number.isSafeInteger(size)) throw damaged(`inode ${number} has an absurd size`);
  const extra = raw.length > 128 ? raw.readUInt16LE(0x80) : 0;
  if (raw.length > 128 && (extra < 4 || 128 + extra > raw.length || extra % 4 !== 0)) {
    throw damaged(`inode ${number} has an invalid extra size ${extra}`);
  }
  return {
    number,
    mode,
    type,
    uid: raw.readUInt16LE(2) + raw.readUInt16LE(0x78) * 0x10000,
    gid: raw.readUInt16LE(0x18) + raw.readUInt16LE(0x7a) * 0x10000,
    size,
    nlink: raw.readUInt16LE(0x1a),
    flags: raw.readUInt32LE(0x20),
    blocks: raw.readUInt32LE(0x1c) + raw.readUInt16LE(0x74) * 2 ** 32,
    fileAcl: raw.readUInt32LE(0x68) + raw.readUInt16LE(0x76) * 2 ** 32,
    mtimeNs: timeNs(raw, 0x10, 0x88, extra),
    ctimeNs: timeNs(raw, 0x0c, 0x84, extra),
    iblock: raw.subarray(0x28, 0x28 + IBLOCK_SIZE),
    xattrs: raw.length > 128 ? raw.subarray(128 + extra) : Buffer.alloc(0),
  };
}

/**
 * Seconds are a signed 32-bit word; when the extra field is present (inside i_extra_isize),
 * its low 2 bits extend the seconds past 2038 and the other 30 are nanoseconds.
 */
function timeNs(raw: Buffer, at: number, extraAt: number, extraSize: number): bigint {
  let secs = BigInt(raw.readInt32LE(at));
  let nsec = 0n;
  if (extraAt + 4 <= 128 + extraSize) {
    const x = raw.readUInt32LE(extraAt);
    secs += BigInt(x & 3) << 32n;
    nsec = BigInt(x >>> 2);
    if (nsec > 999_999_999n) nsec = 0n;
  }
  return secs * 1_000_000_000n + nsec;
}

/**
 * Linux dev_t (glibc's encoding) from a device inode: the old 16-bit form in i_block[0],
 * or when that is 0 the new form in i_block[1] (major << 8, minor split around it).
 */
export function deviceNumber(ino: ExtInode): number {
  const old = ino.iblock.readUInt32LE(0);
  let major: number;
  let minor: number;
  if (old !== 0) {
    major = (old >> 8) & 0xff;
    minor = old & 0xff;
  } else {
    const v = ino.iblock.readUInt32LE(4);
    major = (v & 0xfff00) >> 8;
    minor = (v & 0xff) | ((v >>> 12) & 0xfff00);
  }
  // Both forms keep major below 2^12, so glibc's dev_t fits 32 bits here.
  return major * 0x100 + (minor & 0xff) + (minor >>> 8) * 0x100000;
}

/**
 * A symlink whose target sits in i_block: the kernel's test (ext4_inode_is_fast_symlink) is
 * that it owns no blocks besides an extended attribute block.
 */
export function isFastSymlink(ino: ExtInode, blockSize: number): boolean {
  if (ino.flags & FL_INLINE_DATA) return false;
  const eaBlocks = ino.fileAcl ? blockSize / 512 : 0;
  return ino.blocks - eaBlocks === 0;
}

/**
 * The value of the in-inode `system.data` attribute: inline data past i_block's 60 bytes.
 * Entries are 16 bytes plus the name padded to 4; value offsets count from the first entry.
 */
export function inlineDataTail(ino: ExtInode): Buffer {
  const x = ino.xattrs;
  if (x.length < 4 || x.readUInt32LE(0) !== XATTR_MAGIC) return Buffer.alloc(0);
  const entries = x.subarray(4);
  for (let at = 0; at + 16 <= entries.length; ) {
    if (entries.readUInt32LE(at) === 0) break;
    const nameLen = entries[at]!;
    const name = entries.subarray(at + 16, at + 16 + nameLen);
    if (entries[at + 1] === XATTR_INDEX_SYSTEM && name.toString('latin1') === 'data') {
      const offs = entries.readUInt16LE(at + 2);
      const size = entries.readUInt32LE(at + 8);
      if (entries.readUInt32LE(at + 4) !== 0 || offs + size > entries.length) {
        throw damaged(`inode ${ino.number}: inline data attribute out of bounds`);
      }
      return entries.subarray(offs, offs + size);
    }
    at += (16 + nameLen + 3) & ~3;
  }
  return Buffer.alloc(0);
}
