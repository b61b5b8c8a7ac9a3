import { ByteRanges } from '../ranges.js';
import { addClearRuns } from './bitmap.js';
import type { ReadAt, UsageProbe } from './types.js';

/*
 * ext2/3/4 allocation from the block group descriptors and block bitmaps (layout: the
 * kernel's Documentation/filesystems/ext4). Metadata blocks (superblock and descriptor
 * copies, bitmaps, inode tables) are always counted as used, whatever a bitmap says, and
 * groups flagged BLOCK_UNINIT (whose bitmap on disk is not initialised) are derived from
 * that metadata alone, as the kernel's ext4_init_block_bitmap does.
 */

export const EXT_MAGIC = 0xef53;
const STATE_CLEAN = 0x1;
const STATE_ERRORS = 0x2;
const COMPAT_SPARSE_SUPER2 = 0x200;
const INCOMPAT_RECOVER = 0x4;
const INCOMPAT_JOURNAL_DEV = 0x8;
const INCOMPAT_META_BG = 0x10;
const INCOMPAT_64BIT = 0x80;
const RO_SPARSE_SUPER = 0x1;
const RO_GDT_CSUM = 0x10;
const RO_BIGALLOC = 0x200;
const RO_METADATA_CSUM = 0x400;
const BG_BLOCK_UNINIT = 0x2;
/** Groups whose bitmaps are read and turned into ranges at a time: bounds memory. */
const GROUP_BATCH = 1024;
const MAX_READ = 4 << 20;

export interface Layout {
  base: number;
  blockSize: number;
  blocks: number;
  firstData: number;
  perGroup: number;
  groups: number;
  descSize: number;
  descPerBlock: number;
  gdtBlocks: number;
  reservedGdt: number;
  inodeTableBlocks: number;
  metaBg: boolean;
  firstMetaBg: number;
  uninitHonoured: boolean;
  sparseSuper: boolean;
  backupGroups: number[] | undefined;
  inodesCount: number;
  inodesPerGroup: number;
  inodeSize: number;
  compat: number;
  incompat: number;
}

export interface Group {
  blockBitmap: number;
  inodeBitmap: number;
  inodeTable: number;
  uninit: boolean;
}

export async function probeExt(
  readAt: ReadAt,
  base: number,
  length: number,
): Promise<UsageProbe | undefined> {
  const sb = await readAt(base + 1024, 1024);
  if (sb.length < 1024 || sb.readUInt16LE(56) !== EXT_MAGIC) return undefined;
  const fs = 'ext';
  const caveat = staleBitmaps(sb);
  if (caveat) return { fs, unsupported: caveat };
  const layout = parseSuperblock(sb, base);
  if (typeof layout === 'string') return { fs, unsupported: layout };
  if (layout.blocks * layout.blockSize > length) {
    return { fs, unsupported: 'the filesystem is larger than its volume' };
  }
  const groups = await readDescriptors(readAt, layout);
  if (typeof groups === 'string') return { fs, unsupported: groups };
  const meta = metadataByGroup(layout, groups);
  const free = new ByteRanges();
  for (let first = 0; first < layout.groups; first += GROUP_BATCH) {
    const last = Math.min(first + GROUP_BATCH, layout.groups);
    const bitmaps = await readBitmaps(readAt, layout, groups, first, last);
    for (let g = first; g < last; g++) {
      const bitmap = bitmaps.get(g) ?? new Uint8Array(layout.blockSize);
      markMetadata(layout, g, bitmap, meta.get(g));
      const start = groupStart(layout, g);
      const count = Math.min(layout.perGroup, layout.blocks - start);
      addClearRuns(free, bitmap, count, base + start * layout.blockSize, layout.blockSize);
    }
  }
  return { fs, free };
}

/**
 * Why the bitmaps may be stale, if they may: both states are what a mounted filesystem shows
 * on disk (a journalled one sets needs_recovery, ext2 clears "clean").
 */
function staleBitmaps(sb: Buffer): string | undefined {
  if (sb.readUInt32LE(0x60) & INCOMPAT_RECOVER) {
    return 'its journal needs recovery (mounted, or not cleanly unmounted)';
  }
  const state = sb.readUInt16LE(58);
  if ((state & STATE_CLEAN) === 0 || state & STATE_ERRORS) {
    return 'it is not clean (mounted, or needs e2fsck)';
  }
  return undefined;
}

/** The geometry of an ext superblock (1024 bytes, magic already checked), or why not. */
export function parseSuperblock(sb: Buffer, base: number): Layout | string {
  const compat = sb.readUInt32LE(0x5c);
  const incompat = sb.readUInt32LE(0x60);
  const ro = sb.readUInt32LE(0x64);
  if (incompat & INCOMPAT_JOURNAL_DEV) return 'it is an external journal device';
  if (ro & RO_BIGALLOC) return 'bigalloc (cluster bitmaps) is not supported';
  const logBlock = sb.readUInt32LE(24);
  if (logBlock > 6) return `absurd block size 2^${10 + logBlock}`;
  const blockSize = 1024 << logBlock;
  const is64 = (incompat & INCOMPAT_64BIT) !== 0;
  const blocks = sb.readUInt32LE(4) + (is64 ? sb.readUInt32LE(0x150) * 2 ** 32 : 0);
  const firstData = sb.readUInt32LE(20);
  const perGroup = sb.readUInt32LE(32);
  if (perGroup === 0 || perGroup > blockSize * 8 || perGroup % 8 !== 0) {
    return `absurd blocks per group ${perGroup}`;
  }
  if (firstData >= blocks) return 'no blocks';
  const descSize = is64 ? sb.readUInt16LE(0xfe) : 32;
  if (descSize < 32 || descSize > blockSize || (descSize & (descSize - 1)) !== 0) {
    return `absurd descriptor size ${descSize}`;
  }
  const groups = Math.ceil((blocks - firstData) / perGroup);
  const descPerBlock = blockSize / descSize;
  const revLevel = sb.readUInt32LE(0x4c);
  const inodeSize = revLevel >= 1 ? sb.readUInt16LE(0x58) : 128;
  return {
    base,
    blockSize,
    blocks,
    firstData,
    perGroup,
    groups,
    descSize,
    descPerBlock,
    gdtBlocks: Math.ceil(groups / descPerBlock),
    reservedGdt: sb.readUInt16LE(0xce),
    inodeTableBlocks: Math.ceil((sb.readUInt32LE(40) * inodeSize) / blockSize),
    metaBg: (incompat & INCOMPAT_META_BG) !== 0,
    firstMetaBg: sb.readUInt32LE(0x104),
    // The kernel honours BLOCK_UNINIT only when descriptors carry checksums.
    uninitHonoured: (ro & (RO_GDT_CSUM | RO_METADATA_CSUM)) !== 0,
    sparseSuper: (ro & RO_SPARSE_SUPER) !== 0,
    backupGroups:
      compat & COMPAT_SPARSE_SUPER2 ? [sb.readUInt32LE(0x24c), sb.readUInt32LE(0x250)] : undefined,
    inodesCount: sb.readUInt32LE(0),
    inodesPerGroup: sb.readUInt32LE(40),
    inodeSize,
    compat,
    incompat,
  };
}

const groupStart = (l: Layout, g: number) => l.firstData + g * l.perGroup;

function isPowerOf(n: number, b: number): boolean {
  let x = b;
  while (x < n) x *= b;
  return x === n;
}

function hasSuper(l: Layout, g: number): boolean {
  if (g === 0) return true;
  if (l.backupGroups) return l.backupGroups.includes(g);
  if (!l.sparseSuper || g === 1) return true;
  return isPowerOf(g, 3) || isPowerOf(g, 5) || isPowerOf(g, 7);
}

/** Superblock and descriptor blocks at the start of group g (ext4_num_base_meta_blocks). */
function baseMetaBlocks(l: Layout, g: number): number {
  const sup = hasSuper(l, g) ? 1 : 0;
  if (!l.metaBg || g < l.firstMetaBg * l.descPerBlock) {
    return sup ? sup + (l.metaBg ? l.firstMetaBg : l.gdtBlocks) + l.reservedGdt : 0;
  }
  const first = g - (g % l.descPerBlock);
  const gdt = g === first || g === first + 1 || g === first + l.descPerBlock - 1 ? 1 : 0;
  return sup + gdt;
}

function descriptorBlock(l: Layout, b: number): number {
  if (!l.metaBg || b < l.firstMetaBg) return l.firstData + 1 + b;
  const g = b * l.descPerBlock;
  return groupStart(l, g) + (hasSuper(l, g) ? 1 : 0);
}

/** Every group's descriptor, validated to keep its metadata inside the filesystem. */
export async function readDescriptors(readAt: ReadAt, l: Layout): Promise<Group[] | string> {
  const out: Group[] = [];
  const hi64 = l.descSize >= 64;
  for (let b = 0; b < l.gdtBlocks; b++) {
    const block = descriptorBlock(l, b);
    const buf = await readAt(l.base + block * l.blockSize, l.blockSize);
    if (buf.length < l.blockSize) return `descriptor block ${block} is missing`;
    for (let i = 0; i < l.descPerBlock && out.length < l.groups; i++) {
      const d = buf.subarray(i * l.descSize, (i + 1) * l.descSize);
      const u64 = (lo: number, hi: number) =>
        d.readUInt32LE(lo) + (hi64 ? d.readUInt32LE(hi) * 2 ** 32 : 0);
      const g: Group = {
        blockBitmap: u64(0, 0x20),
        inodeBitmap: u64(4, 0x24),
        inodeTable: u64(8, 0x28),
        uninit: l.uninitHonoured && (d.readUInt16LE(0x12) & BG_BLOCK_UNINIT) !== 0,
      };
      const end = g.inodeTable + l.inodeTableBlocks;
      if (g.blockBitmap >= l.blocks || g.inodeBitmap >= l.blocks || end > l.blocks) {
        return `group ${out.length} has metadata outside the filesystem`;
      }
      out.push(g);
    }
  }
  return out;
}

/** Every group's bitmaps and inode table, filed under the group whose blocks they occupy
 * (with flex_bg they cluster in the first group of each flex group). */
function metadataByGroup(l: Layout, groups: Group[]): Map<number, [number, number][]> {
  const out = new Map<number, [number, number][]>();
  const file = (start: number, end: number) => {
    for (let b = start; b < end; ) {
      const g = Math.floor((b - l.firstData) / l.perGroup);
      const stop = Math.min(end, groupStart(l, g + 1));
      const list = out.get(g) ?? [];
      list.push([b, stop]);
      out.set(g, list);
      b = stop;
    }
  };
  for (const g of groups) {
    file(g.blockBitmap, g.blockBitmap + 1);
    file(g.inodeBitmap, g.inodeBitmap + 1);
    file(g.inodeTable, g.inodeTable + l.inodeTableBlocks);
  }
  return out;
}

function markMetadata(l: Layout, g: number, bitmap: Uint8Array, meta = [] as [number, number][]) {
  const start = groupStart(l, g);
  const set = (from: number, to: number) => {
    for (let i = from; i < to; i++) bitmap[i >> 3]! |= 1 << (i & 7);
  };
  set(0, Math.min(baseMetaBlocks(l, g), l.perGroup));
  for (const [s, e] of meta) set(s - start, e - start);
}

/** Block bitmaps of groups [first, last) that are initialised, read in coalesced runs. */
async function readBitmaps(
  readAt: ReadAt,
  l: Layout,
  groups: Group[],
  first: number,
  last: number,
): Promise<Map<number, Uint8Array>> {
  const wanted: { g: number; block: number }[] = [];
  for (let g = first; g < last; g++) {
    if (!groups[g]!.uninit) wanted.push({ g, block: groups[g]!.blockBitmap });
  }
  wanted.sort((a, b) => a.block - b.block);
  const out = new Map<number, Uint8Array>();
  for (let i = 0; i < wanted.length; ) {
    let j = i + 1;
    while (
      j < wanted.length &&
      wanted[j]!.block === wanted[j - 1]!.block + 1 &&
      (j - i + 1) * l.blockSize <= MAX_READ
    ) {
      j++;
    }
    const from = wanted[i]!.block;
    const buf = await readAt(l.base + from * l.blockSize, (j - i) * l.blockSize);
    for (let k = i; k < j; k++) {
      const off = (wanted[k]!.block - from) * l.blockSize;
      // A copy: metadata bits are OR-ed in, and a short read leaves the bitmap all-used.
      const bitmap = new Uint8Array(l.blockSize).fill(0xff);
      bitmap.set(buf.subarray(off, off + l.blockSize));
      out.set(wanted[k]!.g, bitmap);
    }
    i = j;
  }
  return out;
}
