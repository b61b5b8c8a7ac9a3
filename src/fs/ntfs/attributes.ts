import { decodeRuns } from '../../image/used-blocks/ntfs.js';
import { damaged } from '../source.js';
import type { Extent } from '../types.js';

/*
 * NTFS MFT records and their attributes (layout as documented by the Linux-NTFS project's
 * "NTFS Documentation" and ntfs-3g's layout.h). A record is `FILE`, update sequence,
 * header, then attributes until the 0xFFFFFFFF end marker; an attribute keeps its value in
 * the record (resident) or in clusters described by a run list (non-resident).
 */

export const AT_STANDARD_INFORMATION = 0x10;
export const AT_ATTRIBUTE_LIST = 0x20;
export const AT_FILE_NAME = 0x30;
export const AT_DATA = 0x80;
export const AT_INDEX_ROOT = 0x90;
export const AT_INDEX_ALLOCATION = 0xa0;
export const AT_REPARSE_POINT = 0xc0;
const AT_END = 0xffffffff;
/** Attribute flags: any compression method, encrypted (EFS). */
export const ATTR_COMPRESSED = 0x00ff;
export const ATTR_ENCRYPTED = 0x4000;
export const RECORD_IN_USE = 0x1;
export const RECORD_IS_DIR = 0x2;
/** 100 ns intervals between 1601-01-01 and 1970-01-01, the Unix epoch. */
const EPOCH_1601 = 116_444_736_000_000_000n;

export interface Attr {
  type: number;
  name: string;
  flags: number;
  /** The record the attribute was found in (for messages). */
  record: number;
  /** A resident attribute's value. */
  value?: Buffer;
  /** Non-resident: the VCNs this piece covers, its runs, and (first piece) the sizes. */
  startVcn: number;
  lastVcn: number;
  runs: Extent[];
  dataSize: number;
  initSize: number;
}

export interface RecordHeader {
  flags: number;
  sequence: number;
  /** The base record when this is an extension record, else 0. */
  base: number;
}

export function recordHeader(rec: Buffer): RecordHeader {
  return {
    flags: rec.readUInt16LE(0x16),
    sequence: rec.readUInt16LE(0x10),
    base: rec.readUIntLE(0x20, 6),
  };
}

/** The attributes of one record (fixups applied), every offset and length checked. */
export function parseAttributes(
  rec: Buffer,
  record: number,
  clusters: number,
  clusterSize: number,
): Attr[] {
  const what = `MFT record ${record}`;
  const used = Math.min(rec.readUInt32LE(0x18), rec.length);
  const out: Attr[] = [];
  for (let at = rec.readUInt16LE(0x14); ; ) {
    if (at + 4 > used) throw damaged(`${what}: attributes run past the record`);
    const type = rec.readUInt32LE(at);
    if (type === AT_END) return out;
    const len = at + 8 <= used ? rec.readUInt32LE(at + 4) : 0;
    if (len < 0x18 || len % 8 !== 0 || at + len > used) throw damaged(`${what}: damaged attribute`);
    out.push(parseAttribute(rec.subarray(at, at + len), record, clusters, clusterSize));
    at += len;
  }
}

function parseAttribute(a: Buffer, record: number, clusters: number, clusterSize: number): Attr {
  const bad = () =>
    damaged(`MFT record ${record}: damaged attribute 0x${a.readUInt32LE(0).toString(16)}`);
  const nameLen = a[9]!;
  const nameAt = a.readUInt16LE(10);
  if (nameAt + nameLen * 2 > a.length) throw bad();
  const base = {
    type: a.readUInt32LE(0),
    name: a.toString('utf16le', nameAt, nameAt + nameLen * 2),
    flags: a.readUInt16LE(12),
    record,
  };
  if (a[8] === 0) {
    const size = a.readUInt32LE(0x10);
    const at = a.readUInt16LE(0x14);
    if (at + size > a.length) throw bad();
    const value = a.subarray(at, at + size);
    return { ...base, value, startVcn: 0, lastVcn: -1, runs: [], dataSize: size, initSize: size };
  }
  if (a.length < 0x40) throw bad();
  const num = (at: number) => Number(a.readBigInt64LE(at));
  const startVcn = num(0x10);
  const lastVcn = num(0x18);
  const dataSize = num(0x30);
  const initSize = num(0x38);
  const sane = (n: number) => Number.isSafeInteger(n) && n >= 0;
  if (!sane(startVcn) || lastVcn < startVcn - 1 || !sane(lastVcn + 1)) throw bad();
  // Sizes are kept only in the first piece of an attribute.
  if (startVcn === 0 && !(sane(dataSize) && sane(initSize) && initSize <= dataSize)) throw bad();
  const runsAt = a.readUInt16LE(0x20);
  if (runsAt < 0x40 || runsAt > a.length) throw bad();
  const runs: Extent[] = [];
  let vcns = 0;
  for (const r of decodeRuns(a.subarray(runsAt))) {
    if (!(Number.isSafeInteger(r.length) && r.length > 0)) throw bad();
    if (r.lcn !== null && (r.lcn < 0 || r.lcn + r.length > clusters)) throw bad();
    const length = r.length * clusterSize;
    runs.push(
      r.lcn === null
        ? { kind: 'hole', length }
        : { kind: 'data', offset: r.lcn * clusterSize, length },
    );
    vcns += r.length;
  }
  if (vcns !== lastVcn - startVcn + 1) throw bad();
  return { ...base, startVcn, lastVcn, runs, dataSize, initSize };
}

/**
 * The content of the attribute (type, name) from its pieces: a resident value, or the
 * runs of every piece in VCN order, cut to its size, with the bytes past the initialized
 * size (never written) as zeros. Undefined when the attribute is absent.
 */
export function attributeExtents(
  attrs: Attr[],
  type: number,
  name = '',
): { size: number; flags: number; extents: Extent[] } | undefined {
  const parts = attrs
    .filter((a) => a.type === type && a.name === name)
    .sort((a, b) => a.startVcn - b.startVcn);
  const first = parts[0];
  if (!first) return undefined;
  const what = `MFT record ${first.record}: attribute 0x${type.toString(16)}`;
  if (first.value) {
    if (parts.length > 1) throw damaged(`${what} is both resident and not`);
    return {
      size: first.value.length,
      flags: first.flags,
      extents: [{ kind: 'inline', length: first.value.length, data: first.value }],
    };
  }
  const extents: Extent[] = [];
  let vcn = 0;
  for (const p of parts) {
    if (p.value || p.startVcn !== vcn) {
      throw damaged(`${what}: its pieces do not follow each other`);
    }
    extents.push(...p.runs);
    vcn = p.lastVcn + 1;
  }
  return {
    size: first.dataSize,
    flags: first.flags,
    extents: initialized(extents, first.initSize, first.dataSize, what),
  };
}

function initialized(extents: Extent[], init: number, size: number, what: string): Extent[] {
  const out: Extent[] = [];
  let pos = 0;
  for (const e of extents) {
    if (pos >= size) break;
    const length = Math.min(e.length, size - pos);
    const data = e.kind === 'data' ? Math.max(0, Math.min(length, init - pos)) : 0;
    if (data > 0 && e.kind === 'data') out.push({ kind: 'data', offset: e.offset, length: data });
    if (length > data) out.push({ kind: 'hole', length: length - data });
    pos += length;
  }
  if (pos < size) throw damaged(`${what}: runs end ${size - pos} bytes before its size`);
  return out;
}

export function ntfsTimeNs(value: Buffer, at: number): bigint {
  return (value.readBigUInt64LE(at) - EPOCH_1601) * 100n;
}
