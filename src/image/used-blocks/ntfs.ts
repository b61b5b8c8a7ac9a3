import { ByteRanges } from '../ranges.js';
import { addClearRuns } from './bitmap.js';
import type { ReadAt, UsageProbe } from './types.js';

/*
 * NTFS allocation from $Bitmap (MFT record 6): its unnamed $DATA attribute is one bit per
 * cluster. The record is read through its update sequence fixups, which NTFS applies per
 * 512-byte stride whatever the sector size.
 */

const BITMAP_RECORD = 6;
const ATTR_DATA = 0x80;
const ATTR_END = 0xffffffff;
const FIXUP_STRIDE = 512;
const BITMAP_READ = 4 << 20;

export interface NtfsLayout {
  clusterSize: number;
  clusters: number;
  mftOffset: number;
  recordSize: number;
  /** Size of a directory index block (INDX). */
  indexBlockSize: number;
}

/** A contiguous run of an attribute's clusters on disk; `lcn` null for a sparse run. */
export interface Run {
  lcn: number | null;
  length: number;
}

export async function probeNtfs(
  readAt: ReadAt,
  base: number,
  length: number,
): Promise<UsageProbe | undefined> {
  const bs = await readAt(base, 512);
  const l = bs.length === 512 ? parseNtfsBootSector(bs) : undefined;
  if (!l) return undefined;
  const fs = 'ntfs';
  if (l.clusters * l.clusterSize > length) {
    return { fs, unsupported: 'the filesystem is larger than its volume' };
  }
  const record = await readAt(base + l.mftOffset + BITMAP_RECORD * l.recordSize, l.recordSize);
  const data = record.length === l.recordSize ? bitmapAttribute(record) : undefined;
  if (!data) return { fs, unsupported: '$Bitmap record is unreadable' };
  const free = new ByteRanges();
  const bitsWanted = l.clusters;
  if ('resident' in data) {
    const bits = Math.min(bitsWanted, data.resident.length * 8);
    addClearRuns(free, data.resident, bits, base, l.clusterSize);
    return { fs, free };
  }
  let bit = 0;
  for (const run of data.runs) {
    const runBytes = run.length * l.clusterSize;
    for (let off = 0; off < runBytes && bit < bitsWanted; off += BITMAP_READ) {
      const n = Math.min(BITMAP_READ, runBytes - off, Math.ceil((bitsWanted - bit) / 8));
      if (run.lcn === null) return { fs, unsupported: '$Bitmap is sparse' };
      const bytes = await readAt(base + run.lcn * l.clusterSize + off, n);
      if (bytes.length < n) return { fs, unsupported: '$Bitmap extends past the volume' };
      const bits = Math.min(n * 8, bitsWanted - bit);
      addClearRuns(free, bytes, bits, base + bit * l.clusterSize, l.clusterSize);
      bit += bits;
    }
  }
  return { fs, free };
}

/** The layout an NTFS boot sector describes, or undefined when it is not one. */
export function parseNtfsBootSector(bs: Buffer): NtfsLayout | undefined {
  if (bs.toString('latin1', 3, 11) !== 'NTFS    ' || bs[510] !== 0x55 || bs[511] !== 0xaa) {
    return undefined;
  }
  const bytesPerSector = bs.readUInt16LE(11);
  const spcByte = bs[13]!;
  // Values above 0x80 encode 2^(256 - value) sectors per cluster (clusters over 64 KiB).
  const perCluster = spcByte > 0x80 ? 2 ** (256 - spcByte) : spcByte;
  if (![512, 1024, 2048, 4096].includes(bytesPerSector) || perCluster === 0) return undefined;
  const clusterSize = bytesPerSector * perCluster;
  const totalSectors = Number(bs.readBigUInt64LE(0x28));
  const mftLcn = Number(bs.readBigUInt64LE(0x30));
  // Both sizes: negative values mean 2^-value bytes, positive ones a count of clusters.
  const sized = (v: number) => (v < 0 ? 2 ** -v : v * clusterSize);
  const recordSize = sized(bs.readInt8(0x40));
  const indexBlockSize = sized(bs.readInt8(0x44));
  if (recordSize < 512 || recordSize > 65536) return undefined;
  const clusters = Math.floor(totalSectors / perCluster);
  if (mftLcn >= clusters) return undefined;
  return { clusterSize, clusters, mftOffset: mftLcn * clusterSize, recordSize, indexBlockSize };
}

/** The unnamed $DATA attribute of a FILE record: its value, or its runs on disk. */
function bitmapAttribute(rec: Buffer): { resident: Buffer } | { runs: Run[] } | undefined {
  if (rec.toString('latin1', 0, 4) !== 'FILE' || !applyFixups(rec)) return undefined;
  let at = rec.readUInt16LE(0x14);
  while (at + 16 <= rec.length) {
    const type = rec.readUInt32LE(at);
    const len = rec.readUInt32LE(at + 4);
    if (type === ATTR_END || len < 16 || at + len > rec.length) return undefined;
    if (type === ATTR_DATA && rec[at + 9] === 0) {
      const attr = rec.subarray(at, at + len);
      if (attr[8] === 0) {
        const valueAt = attr.readUInt16LE(0x14);
        return { resident: attr.subarray(valueAt, valueAt + attr.readUInt32LE(0x10)) };
      }
      return { runs: decodeRuns(attr.subarray(attr.readUInt16LE(0x20))) };
    }
    at += len;
  }
  return undefined;
}

/** Applies a FILE or INDX record's update sequence in place; false when a sector is torn. */
export function applyFixups(rec: Buffer): boolean {
  const usaAt = rec.readUInt16LE(4);
  const count = rec.readUInt16LE(6);
  if (count < 1 || usaAt + count * 2 > rec.length || (count - 1) * FIXUP_STRIDE > rec.length) {
    return false;
  }
  const usn = rec.readUInt16LE(usaAt);
  for (let i = 1; i < count; i++) {
    const end = i * FIXUP_STRIDE - 2;
    if (rec.readUInt16LE(end) !== usn) return false;
    rec.writeUInt16LE(rec.readUInt16LE(usaAt + i * 2), end);
  }
  return true;
}

/** Mapping pairs: a header byte (offset size << 4 | length size), the length, then the
 * LCN as a signed delta from the previous run's; no offset bytes mean a sparse run. */
export function decodeRuns(buf: Buffer): Run[] {
  const runs: Run[] = [];
  let at = 0;
  let lcn = 0;
  while (at < buf.length && buf[at] !== 0) {
    const lenSize = buf[at]! & 0xf;
    const offSize = buf[at]! >> 4;
    at++;
    if (lenSize === 0 || lenSize > 8 || offSize > 8 || at + lenSize + offSize > buf.length) break;
    const length = Number(readLe(buf, at, lenSize, false));
    at += lenSize;
    if (offSize === 0) runs.push({ lcn: null, length });
    else {
      lcn += Number(readLe(buf, at, offSize, true));
      runs.push({ lcn, length });
    }
    at += offSize;
  }
  return runs;
}

function readLe(buf: Buffer, at: number, size: number, signed: boolean): bigint {
  let v = 0n;
  for (let i = size - 1; i >= 0; i--) v = (v << 8n) | BigInt(buf[at + i]!);
  if (signed && buf[at + size - 1]! & 0x80) v -= 1n << BigInt(size * 8);
  return v;
}
