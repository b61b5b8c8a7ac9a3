import { CairnError } from '../errors.js';
import { ID_SIZE } from '../repo/blob.js';
import { MAX_BLOB_SIZE } from '../repo/blob-codec.js';
import { ByteReader, ByteWriter } from '../repo/codec.js';

/**
 * Image manifests (layout in docs/format-image.md): a top-level object listing segments,
 * each segment a content-addressed list of (chunk ID or hole, length). Segments carry no
 * absolute offsets, so an unchanged stretch of a later image encodes to the same bytes and
 * is deduplicated like any chunk; the top object carries each segment's start, which makes
 * "which chunk holds byte X" a binary search over segments, then one within a segment.
 */

const TOP_MAGIC = 'CIMT';
const SEGMENT_MAGIC = 'CIMS';
const VERSION = 1;

/** Hard cap on entries in one segment: bounds a segment's size (≈ 140 KiB) and decode work. */
export const MAX_SEGMENT_ENTRIES = 4096;

/** One chunk reference: `id` null for a hole (zeros, nothing stored). */
export interface ManifestEntry {
  id: Buffer | null;
  length: number;
}

/** A segment as listed in the top manifest. */
export interface SegmentRef {
  id: Buffer;
  /** Image offset of the segment's first byte. */
  start: number;
  /** Bytes the segment covers. */
  length: number;
  entries: number;
}

/** The decoded top-level manifest object. */
export interface ImageManifest {
  size: number;
  segments: SegmentRef[];
  /** Segment start offsets, plus `size` at the end: the array the offset lookup searches. */
  starts: Float64Array;
}

/**
 * A decoded segment in a compact form: IDs packed in one buffer (holes leave theirs zero)
 * and entry starts relative to the segment (count + 1 values, the last = segment length).
 */
export class ManifestSegment {
  constructor(
    readonly ids: Buffer,
    readonly holes: Uint8Array,
    readonly starts: Float64Array,
  ) {}

  get count(): number {
    return this.holes.length;
  }

  get length(): number {
    return this.starts[this.count]!;
  }

  entry(i: number): ManifestEntry {
    const length = this.starts[i + 1]! - this.starts[i]!;
    if (this.holes[i]) return { id: null, length };
    return { id: this.ids.subarray(i * ID_SIZE, (i + 1) * ID_SIZE), length };
  }

  /** Index of the entry holding relative offset `rel` (0 ≤ rel < length). */
  find(rel: number): number {
    return searchStarts(this.starts, rel);
  }
}

/** Largest i with starts[i] ≤ x, for x inside [starts[0], starts[last]). */
export function searchStarts(starts: Float64Array, x: number): number {
  let lo = 0;
  let hi = starts.length - 2;
  while (lo < hi) {
    const mid = (lo + hi + 1) >>> 1;
    if (starts[mid]! <= x) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

export function encodeSegment(entries: readonly ManifestEntry[]): Buffer {
  if (entries.length === 0 || entries.length > MAX_SEGMENT_ENTRIES) {
    throw new RangeError(`a segment holds 1 to ${MAX_SEGMENT_ENTRIES} entries`);
  }
  const w = new ByteWriter(8 + entries.length * (ID_SIZE + 4));
  w.bytes(Buffer.from(SEGMENT_MAGIC, 'latin1')).u8(VERSION).varint(entries.length);
  for (const e of entries) {
    // Length and kind in one varint: length * 2 + 1 for a chunk, length * 2 for a hole.
    w.varint(e.length * 2 + (e.id ? 1 : 0));
    if (e.id) w.bytes(e.id);
  }
  return w.finish();
}

/**
 * Decodes a segment and checks it against what the top manifest says it covers, so a
 * damaged or substituted segment cannot shift the offsets of everything after it.
 */
export function decodeSegment(buf: Buffer, expect: SegmentRef, what: string): ManifestSegment {
  const r = new ByteReader(buf, what);
  r.magic(SEGMENT_MAGIC);
  const version = r.u8();
  if (version !== VERSION) damaged(what, `unknown version ${version}`);
  const count = r.varint();
  if (count !== expect.entries)
    damaged(what, `${count} entries, the top manifest says ${expect.entries}`);
  const ids = Buffer.alloc(count * ID_SIZE);
  const holes = new Uint8Array(count);
  const starts = new Float64Array(count + 1);
  let pos = 0;
  for (let i = 0; i < count; i++) {
    const head = r.varint();
    const length = Math.floor(head / 2);
    if (head % 2 === 1) {
      if (length < 1 || length > MAX_BLOB_SIZE) damaged(what, `chunk ${i} has length ${length}`);
      r.bytes(ID_SIZE).copy(ids, i * ID_SIZE);
    } else {
      if (length < 1) damaged(what, `hole ${i} is empty`);
      holes[i] = 1;
    }
    pos += length;
    starts[i + 1] = pos;
  }
  r.end();
  if (pos !== expect.length)
    damaged(what, `covers ${pos} bytes, the top manifest says ${expect.length}`);
  return new ManifestSegment(ids, holes, starts);
}

export function encodeManifest(size: number, segments: readonly SegmentRef[]): Buffer {
  const w = new ByteWriter(16 + segments.length * (ID_SIZE + 12));
  w.bytes(Buffer.from(TOP_MAGIC, 'latin1')).u8(VERSION).u64(size).varint(segments.length);
  for (const s of segments) w.bytes(s.id).varint(s.start).varint(s.length).varint(s.entries);
  return w.finish();
}

export function decodeManifest(buf: Buffer, what: string): ImageManifest {
  const r = new ByteReader(buf, what);
  r.magic(TOP_MAGIC);
  const version = r.u8();
  if (version !== VERSION) damaged(what, `unknown version ${version}`);
  const size = r.u64();
  const count = r.varint();
  // Each listed segment takes at least ID_SIZE + 3 bytes: refuse counts the object can't hold.
  if (count > r.remaining / (ID_SIZE + 3)) damaged(what, `absurd segment count ${count}`);
  const segments: SegmentRef[] = [];
  const starts = new Float64Array(count + 1);
  let pos = 0;
  for (let i = 0; i < count; i++) {
    const id = Buffer.from(r.bytes(ID_SIZE));
    const start = r.varint();
    const length = r.varint();
    const entries = r.varint();
    if (start !== pos) damaged(what, `segment ${i} starts at ${start}, expected ${pos}`);
    if (length < 1 || entries < 1 || entries > MAX_SEGMENT_ENTRIES || entries > length) {
      damaged(what, `segment ${i} has ${entries} entries over ${length} bytes`);
    }
    if (pos + length > size) damaged(what, `segment ${i} ends past the image size ${size}`);
    segments.push({ id, start, length, entries });
    starts[i] = start;
    pos += length;
  }
  r.end();
  if (pos !== size) damaged(what, `segments cover ${pos} bytes of ${size}`);
  starts[count] = size;
  return { size, segments, starts };
}

function damaged(what: string, why: string): never {
  throw new CairnError(`${what} is damaged: ${why}`, 'Damaged');
}
