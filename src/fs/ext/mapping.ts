import { damaged } from '../source.js';
import type { Extent } from '../types.js';

/*
 * Where an ext file's blocks are: an extent tree (ext4) or the classic block map (12 direct
 * pointers, then single, double and triple indirect blocks). Both give extents in logical
 * order; gaps are holes. Hostile trees are bounded: logical blocks must grow, no tree block
 * is visited twice, and a file may not map more blocks than the filesystem has.
 */

export interface BlockDevice {
  blockSize: number;
  /** Blocks in the filesystem: every block number must be below it. */
  blocks: number;
  readBlock(block: number, what: string): Promise<Buffer>;
}

const EXTENT_MAGIC = 0xf30a;
/** The kernel's EXT4_MAX_EXTENT_DEPTH. */
const MAX_DEPTH = 5;
/** An extent longer than this is unwritten (preallocated): it reads as zeros. */
const MAX_INIT_LEN = 32768;

interface Cursor {
  dev: BlockDevice;
  inode: number;
  /** Next logical block expected. */
  next: number;
  /** Logical blocks wanted: the file's size in blocks. */
  limit: number;
  /** Data blocks mapped so far. */
  mapped: number;
  seen: Set<number>;
}

function cursor(dev: BlockDevice, inode: number, limit: number): Cursor {
  return { dev, inode, next: 0, limit, mapped: 0, seen: new Set() };
}

/** The blocks [logical, logical + count) at `physical` (0: a hole), in order. */
function place(c: Cursor, logical: number, count: number, physical: number): Extent[] {
  if (logical < c.next) throw damaged(`inode ${c.inode}: block map goes backwards`);
  const out: Extent[] = [];
  const bs = c.dev.blockSize;
  if (logical > c.next) out.push({ kind: 'hole', length: (logical - c.next) * bs });
  const n = Math.min(count, c.limit - logical);
  if (physical === 0) out.push({ kind: 'hole', length: n * bs });
  else {
    if (physical + n > c.dev.blocks) {
      throw damaged(`inode ${c.inode}: block ${physical} is outside the filesystem`);
    }
    c.mapped += n;
    if (c.mapped > c.dev.blocks) throw damaged(`inode ${c.inode} maps more blocks than exist`);
    out.push({ kind: 'data', offset: physical * bs, length: n * bs });
  }
  c.next = logical + n;
  return out;
}

async function treeBlock(c: Cursor, block: number, what: string): Promise<Buffer> {
  if (block === 0 || block >= c.dev.blocks || c.seen.has(block)) {
    throw damaged(`inode ${c.inode}: ${what} block ${block} is invalid or repeated`);
  }
  c.seen.add(block);
  return c.dev.readBlock(block, `inode ${c.inode} ${what} block`);
}

export async function* extentTree(
  dev: BlockDevice,
  inode: number,
  root: Buffer,
  limit: number,
): AsyncGenerator<Extent> {
  yield* extentNode(cursor(dev, inode, limit), root, undefined);
}

async function* extentNode(c: Cursor, node: Buffer, depth?: number): AsyncGenerator<Extent> {
  const count = node.readUInt16LE(2);
  const max = node.readUInt16LE(4);
  const d = node.readUInt16LE(6);
  const valid =
    node.readUInt16LE(0) === EXTENT_MAGIC &&
    count <= max &&
    12 + max * 12 <= node.length &&
    d <= MAX_DEPTH &&
    (depth === undefined || d === depth);
  if (!valid) throw damaged(`inode ${c.inode}: damaged extent tree node`);
  for (let i = 0; i < count && c.next < c.limit; i++) {
    const e = 12 + i * 12;
    const logical = node.readUInt32LE(e);
    if (d > 0) {
      const child = node.readUInt32LE(e + 4) + node.readUInt16LE(e + 8) * 2 ** 32;
      if (logical >= c.limit) return;
      yield* extentNode(c, await treeBlock(c, child, 'extent'), d - 1);
      continue;
    }
    const raw = node.readUInt16LE(e + 4);
    const length = raw > MAX_INIT_LEN ? raw - MAX_INIT_LEN : raw;
    if (length === 0) throw damaged(`inode ${c.inode}: empty extent`);
    if (logical >= c.limit) return;
    const start = node.readUInt32LE(e + 8) + node.readUInt16LE(e + 6) * 2 ** 32;
    if (start === 0) throw damaged(`inode ${c.inode}: extent at block 0`);
    // Unwritten extents are placed as holes: what they hold on disk is stale.
    yield* place(c, logical, length, raw > MAX_INIT_LEN ? 0 : start);
  }
}

export async function* blockMap(
  dev: BlockDevice,
  inode: number,
  iblock: Buffer,
  limit: number,
): AsyncGenerator<Extent> {
  const c = cursor(dev, inode, limit);
  yield* pointers(c, iblock.subarray(0, 48), 0);
  const per = dev.blockSize / 4;
  for (let level = 1; level <= 3 && c.next < c.limit; level++) {
    yield* indirect(c, iblock.readUInt32LE(44 + level * 4), level, per ** level);
  }
}

/** A block of pointers to data blocks (`level` 0) or to indirect blocks of `level`. */
async function* pointers(c: Cursor, block: Buffer, level: number): AsyncGenerator<Extent> {
  const per = c.dev.blockSize / 4;
  if (level > 0) {
    for (let at = 0; at < block.length && c.next < c.limit; at += 4) {
      yield* indirect(c, block.readUInt32LE(at), level, per ** level);
    }
    return;
  }
  // Data pointers: runs of consecutive blocks are placed as one extent.
  for (let at = 0; at < block.length && c.next < c.limit; ) {
    const first = block.readUInt32LE(at);
    let n = 1;
    while (at + n * 4 < block.length) {
      const p = block.readUInt32LE(at + n * 4);
      if (first === 0 ? p !== 0 : p !== first + n) break;
      n++;
    }
    yield* place(c, c.next, n, first);
    at += n * 4;
  }
}

async function* indirect(c: Cursor, ptr: number, level: number, span: number) {
  if (ptr === 0) {
    yield* place(c, c.next, span, 0);
    return;
  }
  yield* pointers(c, await treeBlock(c, ptr, 'indirect'), level - 1);
}
