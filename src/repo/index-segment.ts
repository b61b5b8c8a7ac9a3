import { createHash } from 'node:crypto';
import type { Sealer } from '../crypto/index.js';
import { CairnError } from '../errors.js';
import { type BlobLocation, blobTypeCode, blobTypeFromCode, hex, ID_SIZE } from './blob.js';
import { ByteReader, ByteWriter } from './codec.js';

/**
 * Index segments are immutable, write-once records of where blobs live, written after
 * their packs are durable and before any snapshot that needs them (docs/format.md):
 *
 *   segment = seal("CIX1" ‖ u32 nSupersedes ‖ nSupersedes × name[32]
 *                         ‖ u32 n ‖ n × entry)
 *   entry   = u8 type ‖ u8 flags ‖ id[32] ‖ pack[32] ‖ u32 offset ‖ u32 length ‖ u32 rawLength
 *
 * A segment is named `index/<sha256 of its stored bytes>`. `supersedes` lists segments
 * that this one replaces (written by prune before it deletes them).
 */
const MAGIC = 'CIX1';
const ENTRY_SIZE = 1 + 1 + ID_SIZE + ID_SIZE + 12;
const MAX_ENTRIES = 1 << 26;

export interface IndexSegment {
  supersedes: Buffer[];
  entries: BlobLocation[];
}

export function segmentName(id: Uint8Array): string {
  return `index/${hex(id)}`;
}

export function segmentIdFromName(name: string): string | undefined {
  return /^index\/([0-9a-f]{64})$/.exec(name)?.[1];
}

export function encodeSegment(seg: IndexSegment, sealer: Sealer): { id: Buffer; bytes: Buffer } {
  const w = new ByteWriter(12 + seg.supersedes.length * ID_SIZE + seg.entries.length * ENTRY_SIZE);
  w.bytes(Buffer.from(MAGIC, 'latin1')).u32(seg.supersedes.length);
  for (const s of seg.supersedes) w.bytes(s);
  w.u32(seg.entries.length);
  for (const e of seg.entries) {
    w.u8(blobTypeCode(e.type)).u8(e.flags).bytes(e.id).bytes(e.pack);
    w.u32(e.offset).u32(e.length).u32(e.rawLength);
  }
  const bytes = sealer.seal(w.finish());
  return { id: createHash('sha256').update(bytes).digest(), bytes };
}

export function decodeSegment(stored: Buffer, sealer: Sealer, what: string): IndexSegment {
  const r = new ByteReader(sealer.open(stored, what), what);
  r.magic(MAGIC);
  const nSup = r.u32();
  if (nSup * ID_SIZE > r.remaining) throw new CairnError(`${what} is damaged`, 'Damaged');
  const supersedes: Buffer[] = [];
  for (let i = 0; i < nSup; i++) supersedes.push(Buffer.from(r.bytes(ID_SIZE)));
  const n = r.u32();
  if (n > MAX_ENTRIES || n * ENTRY_SIZE !== r.remaining) {
    throw new CairnError(`${what} is damaged: entry count mismatch`, 'Damaged');
  }
  const entries: BlobLocation[] = [];
  for (let i = 0; i < n; i++) {
    const type = blobTypeFromCode(r.u8());
    if (type === undefined) throw new CairnError(`${what} is damaged: bad blob type`, 'Damaged');
    const flags = r.u8();
    const id = Buffer.from(r.bytes(ID_SIZE));
    const pack = Buffer.from(r.bytes(ID_SIZE));
    entries.push({ type, flags, id, pack, offset: r.u32(), length: r.u32(), rawLength: r.u32() });
  }
  r.end();
  return { supersedes, entries };
}
