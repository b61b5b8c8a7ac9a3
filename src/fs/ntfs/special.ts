import type { EntryType } from '../../files/tree.js';
import { damaged, ExtentMap } from '../source.js';
import type { Extent } from '../types.js';
import type { Attr } from './attributes.js';
import type { NtfsVolume } from './volume.js';

/*
 * What an NTFS file is besides a plain file or directory. Symlinks made by Windows are
 * reparse points (tag SYMLINK or MOUNT_POINT, with a UTF-16 target); ntfs-3g makes
 * symlinks, FIFOs, sockets and device nodes the Interix way: a file with the SYSTEM
 * attribute whose content is `IntxLNK\1` + UTF-16 target, `IntxCHR\0`/`IntxBLK\0` + u64
 * major + u64 minor, or 0 bytes (FIFO) or 1 byte (socket).
 */

const FILE_SYSTEM = 0x4;
const FILE_REPARSE = 0x400;
const TAG_SYMLINK = 0xa000000c;
const TAG_MOUNT_POINT = 0xa0000003;
/** Windows' "compact" (WOF) keeps the data compressed elsewhere. */
const TAG_WOF = 0x80000017;
/** The longest Interix content worth reading: a 4096-unit target. */
const INTERIX_MAX = 8 + 2 * 4096;

export interface Special {
  type: EntryType | 'socket';
  target?: Buffer;
  rdev?: number;
  unreadable?: string;
}

type Data = { size: number; flags: number; extents: Extent[] } | undefined;

export async function specialFile(
  v: NtfsVolume,
  record: number,
  fileAttrs: number,
  isDir: boolean,
  data: Data,
  reparse: Attr | undefined,
): Promise<Special | undefined> {
  if (fileAttrs & FILE_REPARSE && reparse?.value && reparse.value.length >= 8) {
    const tag = reparse.value.readUInt32LE(0);
    if (tag === TAG_SYMLINK || tag === TAG_MOUNT_POINT) {
      return { type: 'symlink', target: reparseTarget(reparse.value, tag, record) };
    }
    if (isDir) return undefined;
    const why = tag === TAG_WOF ? 'compressed' : `a reparse point (tag 0x${tag.toString(16)})`;
    return { type: 'file', unreadable: why };
  }
  if (isDir || !(fileAttrs & FILE_SYSTEM) || !data || data.size > INTERIX_MAX) return undefined;
  if (data.size === 0) return { type: 'fifo' };
  if (data.size === 1) return { type: 'socket' };
  const bytes = await new ExtentMap(v.source, data.extents).read(
    0,
    data.size,
    `MFT record ${record}`,
  );
  const magic = bytes.toString('latin1', 0, 8);
  if (magic === 'IntxLNK\x01') {
    return { type: 'symlink', target: utf8(bytes.subarray(8)) };
  }
  if ((magic === 'IntxCHR\0' || magic === 'IntxBLK\0') && bytes.length >= 24) {
    const rdev = makedev(bytes.readBigUInt64LE(8), bytes.readBigUInt64LE(16));
    return { type: magic === 'IntxCHR\0' ? 'chardev' : 'blockdev', rdev };
  }
  return undefined;
}

/**
 * A SYMLINK or MOUNT_POINT reparse buffer: tag u32, length u16, reserved u16, then
 * substitute-name offset/length and print-name offset/length (u16 each, bytes into the
 * path buffer), SYMLINK's u32 flags, and the path buffer. The print name is what a person
 * gave; absolute targets keep their Windows form with `/` separators.
 */
function reparseTarget(v: Buffer, tag: number, record: number): Buffer {
  const pathsAt = tag === TAG_SYMLINK ? 20 : 16;
  if (v.length < pathsAt) throw damaged(`MFT record ${record}: damaged reparse point`);
  const paths = v.subarray(pathsAt);
  const pick = (at: number) => {
    const off = v.readUInt16LE(at);
    const len = v.readUInt16LE(at + 2);
    if (off + len > paths.length) throw damaged(`MFT record ${record}: damaged reparse point`);
    return paths.toString('utf16le', off, off + len);
  };
  const target = pick(12) || pick(8).replace(/^\\\?\?\\/, '');
  if (!target) throw damaged(`MFT record ${record}: symlink without a target`);
  return Buffer.from(target.replace(/\\/g, '/'), 'utf8');
}

function utf8(utf16: Buffer): Buffer {
  return Buffer.from(utf16.toString('utf16le', 0, utf16.length & ~1), 'utf8');
}

/** glibc's dev_t encoding of a major and minor number (folded into a safe integer). */
function makedev(major: bigint, minor: bigint): number {
  const dev =
    ((major & 0xfffn) << 8n) |
    ((major & ~0xfffn) << 32n) |
    (minor & 0xffn) |
    ((minor & ~0xffn) << 12n);
  return Number(BigInt.asUintN(53, dev));
}
