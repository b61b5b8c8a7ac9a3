import { applyFixups, type NtfsLayout } from '../../image/used-blocks/ntfs.js';
import { damaged, ExtentMap } from '../source.js';
import type { ByteSource, Extent } from '../types.js';
import {
  AT_ATTRIBUTE_LIST,
  AT_DATA,
  type Attr,
  attributeExtents,
  parseAttributes,
  RECORD_IN_USE,
  type RecordHeader,
  recordHeader,
} from './attributes.js';

/**
 * The master file table: record n sits at n × record size in $MFT's own $DATA, which
 * record 0 (at the boot sector's MFT cluster) maps. A file whose attributes do not fit one
 * record lists them in $ATTRIBUTE_LIST, naming the extension records that hold them.
 */

/** Windows caps an attribute list at 256 KiB. */
const MAX_LIST_BYTES = 256 << 10;
/** Attribute list entry: type u32, length u16, …, record reference at 0x10, ≥ 26 bytes. */
const LIST_ENTRY_MIN = 0x1a;

export interface MftFile {
  number: number;
  header: RecordHeader;
  attrs: Attr[];
}

export class Mft {
  private map: ExtentMap;

  private constructor(
    readonly source: ByteSource,
    readonly layout: NtfsLayout,
  ) {
    const first: Extent = { kind: 'data', offset: layout.mftOffset, length: layout.recordSize };
    this.map = new ExtentMap(source, [first]);
  }

  static async open(source: ByteSource, layout: NtfsLayout): Promise<Mft> {
    const mft = new Mft(source, layout);
    // Bootstrap: record 0's own $DATA pieces map enough of the MFT to find the extension
    // records its attribute list names; with them, the whole $DATA.
    const base = mft.attributes(await mft.record(0), 0);
    mft.map = new ExtentMap(source, leadingRuns(base));
    const data = attributeExtents((await mft.file(0)).attrs, AT_DATA);
    if (!data) throw damaged('$MFT has no data attribute');
    mft.map = new ExtentMap(source, data.extents);
    return mft;
  }

  /** Record n with its update sequence applied. */
  async record(n: number): Promise<Buffer> {
    const size = this.layout.recordSize;
    if (!(Number.isSafeInteger(n) && n >= 0 && (n + 1) * size <= this.map.size)) {
      throw damaged(`MFT record ${n} is outside the MFT`);
    }
    const rec = await this.map.read(n * size, size, `MFT record ${n}`);
    if (rec.toString('latin1', 0, 4) !== 'FILE' || !applyFixups(rec)) {
      throw damaged(`MFT record ${n} is damaged`);
    }
    return rec;
  }

  /** A file's attributes, gathered from its base record and extension records. */
  async file(n: number): Promise<MftFile> {
    const rec = await this.record(n);
    const header = recordHeader(rec);
    if (!(header.flags & RECORD_IN_USE)) throw damaged(`MFT record ${n} is not in use`);
    if (header.base !== 0) throw damaged(`MFT record ${n} is an extension record`);
    const attrs = this.attributes(rec, n);
    const list = attributeExtents(attrs, AT_ATTRIBUTE_LIST);
    if (!list) return { number: n, header, attrs };
    if (list.size > MAX_LIST_BYTES) throw damaged(`MFT record ${n}: absurd attribute list`);
    const bytes = await new ExtentMap(this.source, list.extents).read(0, list.size, 'list');
    const all = attrs.filter((a) => a.type !== AT_ATTRIBUTE_LIST);
    for (const m of listedRecords(bytes, n)) {
      const ext = await this.record(m);
      const h = recordHeader(ext);
      if (!(h.flags & RECORD_IN_USE) || h.base !== n) {
        throw damaged(`MFT record ${m} is not an extension of record ${n}`);
      }
      all.push(...this.attributes(ext, m));
    }
    return { number: n, header, attrs: all };
  }

  private attributes(rec: Buffer, n: number): Attr[] {
    return parseAttributes(rec, n, this.layout.clusters, this.layout.clusterSize);
  }
}

/** The extension records an attribute list names (the base record itself left out). */
function listedRecords(list: Buffer, base: number): Set<number> {
  const out = new Set<number>();
  for (let at = 0; at + LIST_ENTRY_MIN <= list.length; ) {
    const len = list.readUInt16LE(at + 4);
    if (len < LIST_ENTRY_MIN || at + len > list.length) {
      throw damaged(`MFT record ${base}: damaged attribute list`);
    }
    const record = list.readUIntLE(at + 0x10, 6);
    if (record !== base) out.add(record);
    at += len;
  }
  return out;
}

/** The runs of record 0's unnamed $DATA pieces that follow on from VCN 0. */
function leadingRuns(attrs: Attr[]): Extent[] {
  const parts = attrs
    .filter((a) => a.type === AT_DATA && a.name === '' && !a.value)
    .sort((a, b) => a.startVcn - b.startVcn);
  const out: Extent[] = [];
  let vcn = 0;
  for (const p of parts) {
    if (p.startVcn !== vcn) break;
    out.push(...p.runs);
    vcn = p.lastVcn + 1;
  }
  if (out.length === 0) throw damaged('$MFT has no data attribute');
  return out;
}
