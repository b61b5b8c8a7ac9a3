/*
 * FAT directory entries (Microsoft's FAT specification, "FAT: General Overview of On-Disk
 * Format"): 32-byte records, a short 8.3 name each, optionally preceded by long-name (VFAT
 * LFN) records that hold 13 UTF-16 units each, last part first, bound to their short entry
 * by a checksum of its 11 name bytes.
 */

export const ATTR_READ_ONLY = 0x01;
export const ATTR_DIRECTORY = 0x10;
const ATTR_VOLUME_ID = 0x08;
const ATTR_LFN = 0x0f;
const DELETED = 0xe5;
/** NTRes bits (Windows NT): the base name or the extension is shown in lower case. */
const LOWER_BASE = 0x08;
const LOWER_EXT = 0x10;
const LFN_UNITS = 13;
/** Where the 13 UTF-16 units of an LFN record sit. */
const LFN_SLOTS = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];

export interface FatDirEntry {
  name: Buffer;
  attr: number;
  cluster: number;
  size: number;
  mtimeNs: bigint;
}

interface LongName {
  units: number[];
  /** The sequence number expected next (counting down to 1). */
  next: number;
  checksum: number;
}

/**
 * Parses a directory's records chunk by chunk (a long name may span clusters). `push`
 * yields the entries of one chunk; after the end marker (a record starting with 0) the
 * directory is over and `ended` is set.
 */
export class DirParser {
  ended = false;
  private long: LongName | undefined;

  constructor(private readonly fat32: boolean) {}

  *push(buf: Buffer): Generator<FatDirEntry> {
    for (let at = 0; at + 32 <= buf.length && !this.ended; at += 32) {
      const r = buf.subarray(at, at + 32);
      if (r[0] === 0) this.ended = true;
      else if (r[0] === DELETED) this.long = undefined;
      else if (r[11] === ATTR_LFN) this.longPart(r);
      else {
        const long = this.long;
        this.long = undefined;
        if (r[11]! & ATTR_VOLUME_ID) continue;
        const entry = this.entry(r, long);
        if (entry) yield entry;
      }
    }
  }

  private longPart(r: Buffer): void {
    const ord = r[0]! & 0x3f;
    if (r[0]! & 0x40) {
      this.long = ord >= 1 && ord <= 20 ? { units: [], next: ord, checksum: r[13]! } : undefined;
    }
    const l = this.long;
    if (!l || ord !== l.next || r[13] !== l.checksum) {
      this.long = undefined;
      return;
    }
    for (const [i, slot] of LFN_SLOTS.entries())
      l.units[(ord - 1) * LFN_UNITS + i] = r.readUInt16LE(slot);
    l.next--;
  }

  private entry(r: Buffer, long: LongName | undefined): FatDirEntry | undefined {
    const short = shortName(r);
    if (short.equals(DOT) || short.equals(DOTDOT)) return undefined;
    const useLong = long && long.next === 0 && long.checksum === checksum(r);
    const hi = this.fat32 ? r.readUInt16LE(20) * 0x10000 : 0;
    return {
      name: useLong ? longName(long.units) : short,
      attr: r[11]!,
      cluster: hi + r.readUInt16LE(26),
      size: r.readUInt32LE(28),
      mtimeNs: fatTimeNs(r.readUInt16LE(24), r.readUInt16LE(22)),
    };
  }
}

const DOT = Buffer.from('.');
const DOTDOT = Buffer.from('..');

/** The long name: units up to a NUL (the rest is 0xFFFF padding), as UTF-8. */
function longName(units: number[]): Buffer {
  const end = units.indexOf(0);
  const used = end < 0 ? units : units.slice(0, end);
  return Buffer.from(Buffer.from(Uint16Array.from(used).buffer).toString('utf16le'), 'utf8');
}

/**
 * `BASE.EXT` without padding, lower-cased where NTRes says so. Bytes above 0x7f are in an
 * OEM code page the volume does not record; they are kept as they are.
 */
function shortName(r: Buffer): Buffer {
  const trim = (b: Buffer, lower: boolean) => {
    let end = b.length;
    while (end > 0 && b[end - 1] === 0x20) end--;
    const text = b.toString('latin1', 0, end);
    // Only ASCII A–Z: the OEM code page's letters are unknown.
    return Buffer.from(lower ? text.replace(/[A-Z]/g, (c) => c.toLowerCase()) : text, 'latin1');
  };
  const base = trim(r.subarray(0, 8), (r[12]! & LOWER_BASE) !== 0);
  // 0x05 stands for a first byte of 0xE5 (which would mean "deleted").
  if (base[0] === 0x05) base[0] = DELETED;
  const ext = trim(r.subarray(8, 11), (r[12]! & LOWER_EXT) !== 0);
  return ext.length > 0 ? Buffer.concat([base, DOT, ext]) : base;
}

function checksum(r: Buffer): number {
  let sum = 0;
  for (let i = 0; i < 11; i++) sum = (((sum & 1) << 7) + (sum >> 1) + r[i]!) & 0xff;
  return sum;
}

/**
 * FAT dates and times are local time of an unrecorded zone, to 2 seconds: read as UTC.
 * date = (year − 1980) << 9 | month << 5 | day; time = hour << 11 | minute << 5 | sec / 2.
 * An invalid date (e.g. 0, never set) is the epoch.
 */
export function fatTimeNs(date: number, time: number): bigint {
  const month = (date >> 5) & 0xf;
  const day = date & 0x1f;
  if (month < 1 || month > 12 || day < 1) return 0n;
  const hour = Math.min(time >> 11, 23);
  const ms = Date.UTC(
    1980 + (date >> 9),
    month - 1,
    day,
    hour,
    (time >> 5) & 0x3f,
    (time & 0x1f) * 2,
  );
  return BigInt(ms) * 1_000_000n;
}
