import { applyFixups } from '../../image/used-blocks/ntfs.js';
import { damaged, ExtentMap } from '../source.js';
import { AT_INDEX_ALLOCATION, AT_INDEX_ROOT, attributeExtents } from './attributes.js';
import type { Mft, MftFile } from './mft.js';

/*
 * A directory is the B-tree index `$I30` of its $FILE_NAME keys: the root node in
 * $INDEX_ROOT, the other nodes in INDX blocks of $INDEX_ALLOCATION. Each node is a header
 * (entries offset, length) and entries: file reference, lengths, flags (1: has a child
 * node, whose VCN ends the entry; 2: last entry, no key), then the key. Every node reached
 * from the root is read (stale blocks the tree no longer reaches are not), each once.
 */

const I30 = '$I30';
const ENTRY_HAS_CHILD = 1;
const ENTRY_LAST = 2;
/** $FILE_NAME: name length (UTF-16 units) at 0x40, namespace at 0x41, name at 0x42. */
const FN_NAME = 0x42;
const NAMESPACE_DOS = 2;
/** Records below 16 are the metadata files ($MFT, $Bitmap, …, and `.`): not listed. */
const FIRST_USER_RECORD = 16;

export interface IndexName {
  record: number;
  sequence: number;
  name: Buffer;
}

export async function* directoryNames(mft: Mft, dir: MftFile): AsyncGenerator<IndexName> {
  const what = `directory record ${dir.number}`;
  const root = dir.attrs.find((a) => a.type === AT_INDEX_ROOT && a.name === I30)?.value;
  if (!root || root.length < 0x20) throw damaged(`${what} has no $I30 index root`);
  const blockSize = root.readUInt32LE(8);
  if (blockSize < 512 || blockSize > 65536 || (blockSize & (blockSize - 1)) !== 0) {
    throw damaged(`${what}: absurd index block size ${blockSize}`);
  }
  const top = parseNode(root, 0x10, what);
  yield* top.names;
  if (top.children.length === 0) return;
  const alloc = attributeExtents(dir.attrs, AT_INDEX_ALLOCATION, I30);
  if (!alloc) throw damaged(`${what} has index nodes but no $INDEX_ALLOCATION`);
  const blocks = new ExtentMap(mft.source, alloc.extents);
  // VCNs count clusters, or 512-byte units when clusters are larger than index blocks.
  const cluster = mft.layout.clusterSize;
  const unit = cluster <= blockSize ? cluster : 512;
  const queue = [...top.children];
  const seen = new Set<number>();
  while (queue.length > 0) {
    const vcn = queue.shift()!;
    if (seen.has(vcn)) throw damaged(`${what}: index node ${vcn} is reached twice`);
    seen.add(vcn);
    const block = await blocks.read(vcn * unit, blockSize, `${what} index node ${vcn}`);
    if (block.toString('latin1', 0, 4) !== 'INDX' || !applyFixups(block)) {
      throw damaged(`${what}: index node ${vcn} is damaged`);
    }
    const node = parseNode(block, 0x18, what);
    yield* node.names;
    queue.push(...node.children);
  }
}

/** The names and child VCNs of the node whose header is at `headerAt` in `buf`. */
function parseNode(buf: Buffer, headerAt: number, what: string) {
  const bad = () => damaged(`${what}: damaged index node`);
  if (headerAt + 16 > buf.length) throw bad();
  const start = headerAt + buf.readUInt32LE(headerAt);
  const end = headerAt + buf.readUInt32LE(headerAt + 4);
  if (start < headerAt + 16 || start > end || end > buf.length) throw bad();
  const names: IndexName[] = [];
  const children: number[] = [];
  for (let at = start; ; ) {
    if (at + 16 > end) throw bad();
    const len = buf.readUInt16LE(at + 8);
    const keyLen = buf.readUInt16LE(at + 10);
    const flags = buf.readUInt16LE(at + 12);
    if (len < 16 || len % 8 !== 0 || at + len > end || 16 + keyLen > len) throw bad();
    if (flags & ENTRY_HAS_CHILD) {
      if (len < 24 + keyLen) throw bad();
      const vcn = Number(buf.readBigUInt64LE(at + len - 8));
      if (!Number.isSafeInteger(vcn)) throw bad();
      children.push(vcn);
    }
    if (flags & ENTRY_LAST) break;
    const name = fileName(buf.subarray(at + 16, at + 16 + keyLen), bad);
    const record = buf.readUIntLE(at, 6);
    if (name && record >= FIRST_USER_RECORD) {
      names.push({ record, sequence: buf.readUInt16LE(at + 6), name });
    }
    at += len;
  }
  return { names, children };
}

/** A $FILE_NAME key's name as UTF-8; undefined for a DOS 8.3 alias of a long name. */
function fileName(key: Buffer, bad: () => Error): Buffer | undefined {
  if (key.length < FN_NAME) throw bad();
  const units = key[0x40]!;
  if (FN_NAME + units * 2 > key.length) throw bad();
  if (key[0x41] === NAMESPACE_DOS) return undefined;
  return Buffer.from(key.toString('utf16le', FN_NAME, FN_NAME + units * 2), 'utf8');
}
