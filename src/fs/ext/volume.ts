import { CairnError } from '../../errors.js';
import {
  EXT_MAGIC,
  type Group,
  type Layout,
  parseSuperblock,
  readDescriptors,
} from '../../image/used-blocks/ext.js';
import {
  damaged,
  fitExtents,
  mergeExtents,
  readAtOf,
  readContent,
  readExact,
  UnreadableFilesystem,
} from '../source.js';
import type {
  ByteSource,
  Extent,
  FsDirent,
  FsNode,
  FsStat,
  Volume,
  VolumeOptions,
} from '../types.js';
import { dirRecords, FT_SOCKET } from './dir.js';
import {
  deviceNumber,
  type ExtInode,
  FL_ENCRYPT,
  FL_EXTENTS,
  FL_INLINE_DATA,
  inlineDataTail,
  isFastSymlink,
  parseInode,
} from './inode.js';
import { type BlockDevice, blockMap, extentTree } from './mapping.js';

/* ext2/3/4 read-only (layout: the kernel's Documentation/filesystems/ext4). */

const ROOT_INODE = 2;
const COMPAT_HAS_JOURNAL = 0x4;
const INCOMPAT_FILETYPE = 0x2;
const INCOMPAT_RECOVER = 0x4;
/** Features that change how files are found or read and that we do not implement:
 * compression (0x1), journal device (0x8), dirdata (0x1000). */
const INCOMPAT_UNSUPPORTED = 0x1 | 0x8 | 0x1000;
/** Every incompat feature the kernel knows; an unknown one means we cannot know the layout. */
const INCOMPAT_KNOWN = 0x3ffff;
/** Features only ext4 has: extents, 64bit, flex_bg, inline_data, and their kin. */
const INCOMPAT_EXT4 = 0x40 | 0x80 | 0x200 | 0x400 | 0x2000 | 0x4000 | 0x8000 | 0x10000 | 0x20000;
/** Directory bytes read at a time. */
const DIR_READ = 1 << 20;

/** The ext filesystem in `source`, undefined when there is none, Damaged when unreadable. */
export async function openExt(
  source: ByteSource,
  opts: VolumeOptions = {},
): Promise<ExtVolume | undefined> {
  const readAt = readAtOf(source);
  const sb = await readAt(1024, 1024);
  if (sb.length < 1024 || sb.readUInt16LE(56) !== EXT_MAGIC) return undefined;
  const layout = parseSuperblock(sb, 0);
  if (typeof layout === 'string') throw unreadable(layout);
  const problem = checkLayout(layout, source.size);
  if (problem) throw unreadable(problem);
  const groups = await readDescriptors(readAt, layout);
  if (typeof groups === 'string') throw unreadable(groups);
  return new ExtVolume(source, layout, groups, opts);
}

function unreadable(why: string): CairnError {
  return new UnreadableFilesystem('ext', why);
}

function checkLayout(l: Layout, size: number): string | undefined {
  const unknown = l.incompat & (~INCOMPAT_KNOWN | INCOMPAT_UNSUPPORTED);
  if (unknown) return `unsupported incompatible features 0x${unknown.toString(16)}`;
  if (l.blocks * l.blockSize > size) return 'the filesystem is larger than its volume';
  const is = l.inodeSize;
  if (is < 128 || is > l.blockSize || (is & (is - 1)) !== 0) return `absurd inode size ${is}`;
  if (l.inodesPerGroup === 0 || l.inodesPerGroup > l.blockSize * 8) {
    return `absurd inodes per group ${l.inodesPerGroup}`;
  }
  if (l.inodesCount > l.groups * l.inodesPerGroup) return 'more inodes than groups hold';
  return undefined;
}

export class ExtVolume implements Volume, BlockDevice {
  readonly type: 'ext2' | 'ext3' | 'ext4';
  readonly origin: number;
  readonly device: number;
  readonly notes: string[] = [];
  readonly blockSize: number;
  readonly blocks: number;
  readonly fileTypes: boolean;

  constructor(
    readonly source: ByteSource,
    private readonly layout: Layout,
    private readonly groups: Group[],
    opts: VolumeOptions,
  ) {
    this.origin = opts.origin ?? 0;
    this.device = opts.device ?? 0;
    this.blockSize = layout.blockSize;
    this.blocks = layout.blocks;
    this.fileTypes = (layout.incompat & INCOMPAT_FILETYPE) !== 0;
    this.type =
      layout.incompat & INCOMPAT_EXT4
        ? 'ext4'
        : layout.compat & COMPAT_HAS_JOURNAL
          ? 'ext3'
          : 'ext2';
    if (layout.incompat & INCOMPAT_RECOVER) {
      this.notes.push('its journal needs recovery: the latest changes may be missing');
    }
  }

  async root(): Promise<FsNode> {
    const node = await this.node(ROOT_INODE);
    if (node?.stat.type !== 'dir') throw damaged('ext root inode is not a directory');
    return node;
  }

  async readBlock(block: number, what: string): Promise<Buffer> {
    if (block >= this.blocks) throw damaged(`${what} ${block} is outside the filesystem`);
    return readExact(this.source, block * this.blockSize, this.blockSize, what);
  }

  async inode(n: number): Promise<ExtInode> {
    const l = this.layout;
    if (!(Number.isInteger(n) && n >= 1 && n <= l.inodesCount)) {
      throw damaged(`inode number ${n} is out of range`);
    }
    const group = this.groups[Math.floor((n - 1) / l.inodesPerGroup)]!;
    const at = group.inodeTable * l.blockSize + ((n - 1) % l.inodesPerGroup) * l.inodeSize;
    return parseInode(await readExact(this.source, at, l.inodeSize, `inode ${n}`), n);
  }

  /** The node of inode `n`; undefined for a socket (never stored). */
  async node(n: number): Promise<ExtNode | undefined> {
    const ino = await this.inode(n);
    return ino.type === 'socket' ? undefined : new ExtNode(this, ino);
  }
}

class ExtNode implements FsNode {
  readonly stat: FsStat;

  constructor(
    readonly volume: ExtVolume,
    private readonly ino: ExtInode,
  ) {
    const type = ino.type as FsStat['type'];
    this.stat = {
      type,
      mode: ino.mode & 0o7777,
      uid: ino.uid,
      gid: ino.gid,
      size: type === 'file' || type === 'symlink' ? ino.size : 0,
      mtimeNs: ino.mtimeNs,
      ctimeNs: ino.ctimeNs,
      inode: ino.number,
      nlink: ino.nlink,
      device: volume.device,
      ...(type === 'chardev' || type === 'blockdev' ? { rdev: deviceNumber(ino) } : {}),
      ...(ino.flags & FL_ENCRYPT ? { unreadable: 'encrypted' } : {}),
    };
  }

  /** The inode's bytes (file content, directory blocks or a slow symlink's target). */
  extents(): AsyncGenerator<Extent> {
    const ino = this.ino;
    // Blocks past the last mapped one were never written: zeros, unless the data is inline.
    const tailIsHole = !(ino.flags & FL_INLINE_DATA);
    return fitExtents(mergeExtents(this.mapping()), ino.size, tailIsHole, `inode ${ino.number}`);
  }

  private async *mapping(): AsyncGenerator<Extent> {
    const { ino, volume: v } = this;
    if (ino.flags & FL_INLINE_DATA) {
      const data = Buffer.concat([ino.iblock, inlineDataTail(ino)]);
      yield { kind: 'inline', length: data.length, data };
      return;
    }
    const limit = Math.ceil(ino.size / v.blockSize);
    if (ino.flags & FL_EXTENTS) yield* extentTree(v, ino.number, ino.iblock, limit);
    else yield* blockMap(v, ino.number, ino.iblock, limit);
  }

  async *entries(): AsyncGenerator<FsDirent> {
    const { ino, volume: v } = this;
    if (this.stat.type !== 'dir') throw new CairnError(`inode ${ino.number} is not a directory`);
    if (this.stat.unreadable) throw damaged(`directory inode ${ino.number} is encrypted`);
    const what = `directory inode ${ino.number}`;
    for await (const region of this.dirRegions()) {
      for (const d of dirRecords(region, v.fileTypes, what)) {
        if (d.fileType === FT_SOCKET && v.fileTypes) continue;
        yield { name: Buffer.from(d.name), load: () => v.node(d.inode) };
      }
    }
  }

  /**
   * A directory's blocks; an inline directory is two regions: i_block after its 4-byte
   * parent inode number, and the system.data attribute.
   */
  private async *dirRegions(): AsyncGenerator<Buffer> {
    const { ino, volume: v } = this;
    if (ino.flags & FL_INLINE_DATA) {
      yield ino.iblock.subarray(4);
      yield inlineDataTail(ino);
      return;
    }
    const bs = v.blockSize;
    for await (const e of this.extents()) {
      if (e.kind !== 'data') continue;
      for (let done = 0; done < e.length; done += DIR_READ) {
        const n = Math.min(DIR_READ, e.length - done);
        const buf = await readExact(v.source, e.offset + done, n, `directory inode ${ino.number}`);
        for (let at = 0; at + bs <= buf.length; at += bs) yield buf.subarray(at, at + bs);
      }
    }
  }

  async readlink(): Promise<Buffer> {
    const { ino, volume: v } = this;
    if (this.stat.type !== 'symlink') throw new CairnError(`inode ${ino.number} is not a symlink`);
    if (this.stat.unreadable) throw damaged(`symlink inode ${ino.number} is encrypted`);
    if (ino.size > v.blockSize || ino.size === 0) {
      throw damaged(`symlink inode ${ino.number} has size ${ino.size}`);
    }
    if (isFastSymlink(ino, v.blockSize)) {
      if (ino.size >= ino.iblock.length) throw damaged(`symlink inode ${ino.number} overflows`);
      return Buffer.from(ino.iblock.subarray(0, ino.size));
    }
    const parts: Buffer[] = [];
    for await (const p of readContent(v.source, this.extents())) parts.push(p.data);
    return Buffer.concat(parts);
  }
}
