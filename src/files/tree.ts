import { CairnError } from '../errors.js';
import { ID_SIZE } from '../repo/blob.js';
import { ByteReader, ByteWriter } from '../repo/codec.js';

/**
 * A directory as one content-addressed tree blob: its entries sorted by name bytes, each
 * with full metadata, so an unchanged directory encodes to the same bytes (and ID) in every
 * snapshot. Names and symlink targets are raw bytes: not every name is UTF-8.
 *
 *   tree  = "CTR1" ‖ varint n ‖ n × entry
 *   entry = lbytes name ‖ u8 type ‖ varint mode ‖ varint uid ‖ varint gid
 *         ‖ lbytes user ‖ lbytes group ‖ i64 mtimeNs ‖ i64 ctimeNs
 *         ‖ varint device ‖ varint inode ‖ varint nlink ‖ varint size
 *         ‖ varint nXattrs ‖ nXattrs × (lbytes name ‖ lbytes value)
 *         ‖ body by type:
 *             file:     varint nParts ‖ nParts × (u8 kind ‖ varint length ‖ [id[32] if kind 0])
 *                       (kind 0: stored chunk, kind 1: hole of zeros)
 *             dir:      id[32] of the subtree
 *             symlink:  lbytes target
 *             chardev, blockdev: varint rdev
 *             fifo:     nothing
 */
const MAGIC = 'CTR1';

export type EntryType = 'file' | 'dir' | 'symlink' | 'fifo' | 'chardev' | 'blockdev';

const TYPE_CODES: readonly EntryType[] = ['file', 'dir', 'symlink', 'fifo', 'chardev', 'blockdev'];

/** A piece of a file's content: a stored chunk, or a hole (`id` null) read as zeros. */
export interface ContentPart {
  id: Buffer | null;
  length: number;
}

export interface Xattr {
  name: Buffer;
  value: Buffer;
}

export interface TreeEntry {
  name: Buffer;
  type: EntryType;
  /** Permission and special bits (st_mode & 0o7777). */
  mode: number;
  uid: number;
  gid: number;
  user: string;
  group: string;
  mtimeNs: bigint;
  ctimeNs: bigint;
  device: number;
  inode: number;
  nlink: number;
  /** File size in bytes (0 for other kinds). */
  size: number;
  /** Sorted by name. */
  xattrs: Xattr[];
  content?: ContentPart[];
  subtree?: Buffer;
  target?: Buffer;
  rdev?: number;
}

export interface Tree {
  entries: TreeEntry[];
}

/** Adjacent holes as one: the canonical form of a content list (zeros are zeros). */
export function mergeHoles(parts: readonly ContentPart[]): ContentPart[] {
  const out: ContentPart[] = [];
  for (const p of parts) {
    const last = out.at(-1);
    if (p.id === null && last?.id === null) {
      out[out.length - 1] = { id: null, length: last.length + p.length };
    } else {
      out.push(p);
    }
  }
  return out;
}

export function compareNames(a: Buffer, b: Buffer): number {
  return Buffer.compare(a, b);
}

export function encodeTree(tree: Tree): Buffer {
  const w = new ByteWriter(64 + tree.entries.length * 96);
  w.bytes(Buffer.from(MAGIC, 'latin1')).varint(tree.entries.length);
  let prev: Buffer | undefined;
  for (const e of tree.entries) {
    if (prev && compareNames(prev, e.name) >= 0) {
      throw new Error('tree entries must be sorted by name and unique');
    }
    prev = e.name;
    encodeEntry(w, e);
  }
  return w.finish();
}

function encodeEntry(w: ByteWriter, e: TreeEntry): void {
  w.lbytes(e.name).u8(TYPE_CODES.indexOf(e.type)).varint(e.mode).varint(e.uid).varint(e.gid);
  w.lbytes(Buffer.from(e.user)).lbytes(Buffer.from(e.group)).i64(e.mtimeNs).i64(e.ctimeNs);
  w.varint(e.device).varint(e.inode).varint(e.nlink).varint(e.size).varint(e.xattrs.length);
  for (const x of e.xattrs) w.lbytes(x.name).lbytes(x.value);
  switch (e.type) {
    case 'file': {
      const parts = e.content ?? [];
      w.varint(parts.length);
      for (const p of parts) {
        w.u8(p.id ? 0 : 1).varint(p.length);
        if (p.id) w.bytes(p.id);
      }
      break;
    }
    case 'dir':
      w.bytes(e.subtree!);
      break;
    case 'symlink':
      w.lbytes(e.target!);
      break;
    case 'chardev':
    case 'blockdev':
      w.varint(e.rdev ?? 0);
      break;
    case 'fifo':
      break;
  }
}

/**
 * Decodes and validates a tree from an untrusted repository: names must be single path
 * components (no `/`, NUL, `.` or `..`), sorted and unique; file part lengths must add up
 * to the declared size.
 */
export function decodeTree(bytes: Buffer, what = 'tree'): Tree {
  const r = new ByteReader(bytes, what);
  r.magic(MAGIC);
  const n = r.varint();
  if (n > r.remaining) throw new CairnError(`${what} is damaged: entry count`, 'Damaged');
  const entries: TreeEntry[] = [];
  let prev: Buffer | undefined;
  for (let i = 0; i < n; i++) {
    const e = decodeEntry(r, what);
    if (!isSafeName(e.name) || (prev && compareNames(prev, e.name) >= 0)) {
      throw new CairnError(`${what} is damaged: bad or unsorted entry name`, 'Damaged');
    }
    prev = e.name;
    entries.push(e);
  }
  r.end();
  return { entries };
}

function decodeEntry(r: ByteReader, what: string): TreeEntry {
  const name = Buffer.from(r.lbytes());
  const type = TYPE_CODES[r.u8()];
  if (!type) throw new CairnError(`${what} is damaged: unknown entry type`, 'Damaged');
  const e: TreeEntry = {
    name,
    type,
    mode: r.varint(),
    uid: r.varint(),
    gid: r.varint(),
    user: r.lbytes().toString('utf8'),
    group: r.lbytes().toString('utf8'),
    mtimeNs: r.i64(),
    ctimeNs: r.i64(),
    device: r.varint(),
    inode: r.varint(),
    nlink: r.varint(),
    size: r.varint(),
    xattrs: [],
  };
  const nx = r.varint();
  if (nx > r.remaining) throw new CairnError(`${what} is damaged: xattr count`, 'Damaged');
  for (let i = 0; i < nx; i++) {
    e.xattrs.push({ name: Buffer.from(r.lbytes()), value: Buffer.from(r.lbytes()) });
  }
  switch (type) {
    case 'file':
      e.content = decodeParts(r, what, e.size);
      break;
    case 'dir':
      e.subtree = Buffer.from(r.bytes(ID_SIZE));
      break;
    case 'symlink':
      e.target = Buffer.from(r.lbytes());
      break;
    case 'chardev':
    case 'blockdev':
      e.rdev = r.varint();
      break;
    case 'fifo':
      break;
  }
  return e;
}

function decodeParts(r: ByteReader, what: string, size: number): ContentPart[] {
  const n = r.varint();
  if (n > r.remaining) throw new CairnError(`${what} is damaged: part count`, 'Damaged');
  const parts: ContentPart[] = [];
  let total = 0;
  for (let i = 0; i < n; i++) {
    const kind = r.u8();
    const length = r.varint();
    if (kind > 1) throw new CairnError(`${what} is damaged: bad content part`, 'Damaged');
    parts.push({ id: kind === 0 ? Buffer.from(r.bytes(ID_SIZE)) : null, length });
    total += length;
  }
  if (total !== size) {
    throw new CairnError(
      `${what} is damaged: content lengths do not add up to the size`,
      'Damaged',
    );
  }
  return parts;
}

/** One path component: not empty, not `.` or `..`, no `/` and no NUL. */
export function isSafeName(name: Buffer): boolean {
  if (name.length === 0 || name.includes(0x2f) || name.includes(0)) return false;
  return !(name.length <= 2 && name.every((b) => b === 0x2e));
}
