import { crc32 } from 'node:zlib';

/** One partition of a whole-disk image, as recorded in a snapshot's `extra.partitions`. */
export interface Partition {
  /** 1-based: MBR primaries 1–4, logicals from 5; GPT entry index + 1. */
  number: number;
  /** MBR type byte as `0x83`, or the GPT type GUID in lower-case text form. */
  type: string;
  /** Byte offset in the image. */
  start: number;
  size: number;
  /** GPT partition name. */
  label?: string;
}

export interface PartitionTable {
  scheme: 'mbr' | 'gpt';
  partitions: Partition[];
}

/** Positional reads of the image; shorter results mean "not available". */
export type ReadAt = (offset: number, length: number) => Promise<Buffer>;

const EXTENDED_TYPES = new Set([0x05, 0x0f, 0x85]);
const PROTECTIVE = 0xee;
/** Logical partitions followed before assuming an EBR loop: more than any real disk has. */
const MAX_LOGICAL = 128;
const GPT_MAX_ENTRIES = 1024;

/**
 * Finds an MBR or GPT partition table at the start of a disk image. `size` (when known)
 * bounds partitions; a table with entries outside the disk or overlapping each other is
 * not one (a filesystem boot sector also ends in 55 AA).
 */
export async function readPartitionTable(
  readAt: ReadAt,
  size: number | undefined,
  sectorSize = 512,
): Promise<PartitionTable | undefined> {
  const mbr = await readAt(0, 512);
  if (mbr.length < 512 || mbr[510] !== 0x55 || mbr[511] !== 0xaa) return undefined;
  if (looksLikeBootSector(mbr)) return undefined;
  const primaries = mbrEntries(mbr, 0, sectorSize);
  if (!primaries || primaries.length === 0) return undefined;
  if (primaries.some((p) => p.typeByte === PROTECTIVE)) {
    for (const sector of new Set([sectorSize, 512, 4096])) {
      const gpt = await readGpt(readAt, sector, size);
      if (gpt) return { scheme: 'gpt', partitions: gpt };
    }
    return undefined;
  }
  const partitions: Partition[] = [];
  for (const p of primaries) {
    partitions.push(toPartition(p));
    if (EXTENDED_TYPES.has(p.typeByte)) {
      partitions.push(...(await logicals(readAt, p, sectorSize)));
    }
  }
  if (!plausible(partitions, size)) return undefined;
  return { scheme: 'mbr', partitions };
}

interface MbrEntry {
  index: number;
  typeByte: number;
  start: number;
  size: number;
}

/**
 * Non-empty entries of a boot record at LBA `base`, or undefined when a status byte is
 * invalid. MBR addresses are in logical sectors: 512 bytes, or 4096 on 4Kn disks.
 */
function mbrEntries(sector: Buffer, base: number, unit: number): MbrEntry[] | undefined {
  const out: MbrEntry[] = [];
  for (let i = 0; i < 4; i++) {
    const e = 446 + i * 16;
    const status = sector[e]!;
    if (status !== 0 && status !== 0x80) return undefined;
    const typeByte = sector[e + 4]!;
    const lba = sector.readUInt32LE(e + 8);
    const sectors = sector.readUInt32LE(e + 12);
    if (typeByte === 0 || sectors === 0) continue;
    out.push({ index: i, typeByte, start: (base + lba) * unit, size: sectors * unit });
  }
  return out;
}

function toPartition(e: MbrEntry, number = e.index + 1): Partition {
  return {
    number,
    type: `0x${e.typeByte.toString(16).padStart(2, '0')}`,
    start: e.start,
    size: e.size,
  };
}

/** Follows the EBR chain: each EBR's first entry is a logical partition relative to itself,
 * its second links to the next EBR relative to the extended partition's start. */
async function logicals(readAt: ReadAt, ext: MbrEntry, unit: number): Promise<Partition[]> {
  const out: Partition[] = [];
  const extLba = ext.start / unit;
  let ebrLba = extLba;
  for (let n = 0; n < MAX_LOGICAL; n++) {
    const ebr = await readAt(ebrLba * unit, 512);
    if (ebr.length < 512 || ebr[510] !== 0x55 || ebr[511] !== 0xaa) break;
    const entries = mbrEntries(ebr, ebrLba, unit);
    if (!entries) break;
    const logical = entries.find((e) => e.index === 0 && !EXTENDED_TYPES.has(e.typeByte));
    if (logical) out.push(toPartition(logical, 5 + out.length));
    const link = entries.find((e) => e.index === 1 && EXTENDED_TYPES.has(e.typeByte));
    if (!link) break;
    const next = extLba + (link.start / unit - ebrLba);
    if (next <= ebrLba) break;
    ebrLba = next;
  }
  return out;
}

/** A FAT or NTFS volume boot record: a jump, an OEM name, and a sane bytes-per-sector. */
function looksLikeBootSector(s: Buffer): boolean {
  const jump = s[0] === 0xeb || s[0] === 0xe9;
  const bps = s.readUInt16LE(11);
  const fsName = s.toString('latin1', 3, 11);
  if (jump && fsName === 'NTFS    ') return true;
  const fat = s.toString('latin1', 54, 59) === 'FAT12' || s.toString('latin1', 54, 59) === 'FAT16';
  const fat32 = s.toString('latin1', 82, 87) === 'FAT32';
  return jump && (fat || fat32) && [512, 1024, 2048, 4096].includes(bps);
}

async function readGpt(
  readAt: ReadAt,
  sector: number,
  size: number | undefined,
): Promise<Partition[] | undefined> {
  const h = await readAt(sector, 92);
  if (h.length < 92 || h.toString('latin1', 0, 8) !== 'EFI PART') return undefined;
  const headerSize = h.readUInt32LE(12);
  if (headerSize < 92 || headerSize > sector) return undefined;
  const full = await readAt(sector, headerSize);
  const copy = Buffer.from(full);
  copy.writeUInt32LE(0, 16);
  if (full.length < headerSize || crc32(copy) !== full.readUInt32LE(16)) return undefined;
  const entriesLba = Number(h.readBigUInt64LE(72));
  const count = h.readUInt32LE(80);
  const entrySize = h.readUInt32LE(84);
  if (count > GPT_MAX_ENTRIES || entrySize < 128 || entrySize > 4096 || entrySize % 8 !== 0) {
    return undefined;
  }
  const table = await readAt(entriesLba * sector, count * entrySize);
  if (table.length < count * entrySize || crc32(table) !== h.readUInt32LE(88)) return undefined;
  const partitions: Partition[] = [];
  for (let i = 0; i < count; i++) {
    const e = table.subarray(i * entrySize, (i + 1) * entrySize);
    if (e.subarray(0, 16).every((b) => b === 0)) continue;
    const first = Number(e.readBigUInt64LE(32));
    const last = Number(e.readBigUInt64LE(40));
    if (last < first) return undefined;
    const label = e.toString('utf16le', 56, 128).replace(/\0.*$/s, '');
    partitions.push({
      number: i + 1,
      type: guidText(e.subarray(0, 16)),
      start: first * sector,
      size: (last - first + 1) * sector,
      ...(label ? { label } : {}),
    });
  }
  return plausible(partitions, size) ? partitions : undefined;
}

/** An MBR extended partition: a container of logical partitions, not a volume. */
export function isExtended(p: Partition): boolean {
  return p.type.startsWith('0x') && EXTENDED_TYPES.has(Number(p.type));
}

/** GUIDs are stored with their first three fields little-endian. */
function guidText(b: Buffer): string {
  const h = (from: number, to: number, le: boolean) => {
    const part = Buffer.from(b.subarray(from, to));
    return (le ? part.reverse() : part).toString('hex');
  };
  const fields = [h(0, 4, true), h(4, 6, true), h(6, 8, true), h(8, 10, false), h(10, 16, false)];
  return fields.join('-');
}

/** Inside the disk and not overlapping, except logicals inside their extended partition. */
function plausible(parts: Partition[], size: number | undefined): boolean {
  if (size !== undefined && parts.some((p) => p.start + p.size > size)) return false;
  const flat = parts.filter((p) => !isExtended(p)).sort((a, b) => a.start - b.start);
  for (let i = 1; i < flat.length; i++) {
    if (flat[i]!.start < flat[i - 1]!.start + flat[i - 1]!.size) return false;
  }
  return parts.every((p) => p.start > 0);
}
