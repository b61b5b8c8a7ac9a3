import { randomBytes } from 'node:crypto';
import type { Sealer } from '../crypto/index.js';
import { CairnError, shortHex } from '../errors.js';
import type { Backend } from './backend/backend.js';
import { type BlobLocation, blobTypeCode, blobTypeFromCode, hex, ID_SIZE } from './blob.js';
import { ByteReader, ByteWriter } from './codec.js';

/**
 * A pack is a run of sealed blobs followed by its own sealed table of contents and the
 * TOC's length, so the index can always be rebuilt from packs alone (docs/format.md):
 *
 *   pack  = blob_1 ‖ … ‖ blob_n ‖ padding ‖ seal(toc) ‖ u32le len(seal(toc))
 *   toc   = "CPK1" ‖ u32 n ‖ n × entry
 *   entry = u8 type ‖ u8 flags ‖ id[32] ‖ u32 offset ‖ u32 length ‖ u32 rawLength
 *
 * Blob boundaries appear only inside the sealed TOC, so without the key a pack shows its
 * total size and nothing about the chunk sizes in it.
 */
const TOC_MAGIC = 'CPK1';
const TOC_ENTRY_SIZE = 1 + 1 + ID_SIZE + 4 + 4 + 4;
/** Bounds a hostile TOC: a 4 GiB pack of 64-byte blobs. */
const MAX_TOC_ENTRIES = 1 << 26;

export type PackEntry = Omit<BlobLocation, 'pack'>;

export function packName(id: Uint8Array): string {
  const h = hex(id);
  return `data/${h.slice(0, 2)}/${h}`;
}

export function packIdFromName(name: string): Buffer | undefined {
  const m = /^data\/[0-9a-f]{2}\/([0-9a-f]{64})$/.exec(name);
  return m ? Buffer.from(m[1]!, 'hex') : undefined;
}

export function encodeToc(entries: readonly PackEntry[]): Buffer {
  const w = new ByteWriter(8 + entries.length * TOC_ENTRY_SIZE);
  w.bytes(Buffer.from(TOC_MAGIC, 'latin1')).u32(entries.length);
  for (const e of entries) {
    w.u8(blobTypeCode(e.type)).u8(e.flags).bytes(e.id).u32(e.offset).u32(e.length);
    w.u32(e.rawLength);
  }
  return w.finish();
}

export function decodeToc(plain: Buffer, what: string, packSize: number): PackEntry[] {
  const r = new ByteReader(plain, what);
  r.magic(TOC_MAGIC);
  const n = r.u32();
  if (n > MAX_TOC_ENTRIES || n * TOC_ENTRY_SIZE !== r.remaining) {
    throw new CairnError(`${what} is damaged: table of contents size mismatch`, 'Damaged');
  }
  const entries: PackEntry[] = [];
  for (let i = 0; i < n; i++) {
    const type = blobTypeFromCode(r.u8());
    const flags = r.u8();
    const id = Buffer.from(r.bytes(ID_SIZE));
    const offset = r.u32();
    const length = r.u32();
    const rawLength = r.u32();
    if (type === undefined || offset + length > packSize) {
      throw new CairnError(`${what} is damaged: bad table of contents entry ${i}`, 'Damaged');
    }
    entries.push({ id, type, flags, offset, length, rawLength });
  }
  return entries;
}

/**
 * Accumulates sealed blobs in one buffer until the pack is full, then seals the TOC. The
 * buffer is shared memory and reusable, so the pack's hash can be computed on a worker
 * without a copy and its pages are not faulted in afresh for every pack.
 */
export class PackBuilder {
  private readonly entries: PackEntry[] = [];
  private size = 0;

  constructor(private buf: Buffer = Buffer.alloc(0)) {}

  get byteSize(): number {
    return this.size;
  }

  get count(): number {
    return this.entries.length;
  }

  /** The buffer the pack was built in, for reuse once the pack is written. */
  get buffer(): Buffer {
    return this.buf;
  }

  add(entry: Omit<PackEntry, 'offset' | 'length'>, sealed: Uint8Array): void {
    this.entries.push({ ...entry, offset: this.size, length: sealed.length });
    this.append(sealed);
  }

  /** The pack's bytes (a view of the buffer), its content hash and the located entries. */
  async finish(
    sealer: Sealer,
    sha256: (bytes: Buffer) => Promise<Buffer>,
  ): Promise<{ id: Buffer; bytes: Buffer; entries: PackEntry[] }> {
    for (const b of packTail(this.entries, this.size, sealer)) this.append(b);
    const bytes = this.buf.subarray(0, this.size);
    return { id: await sha256(bytes), bytes, entries: this.entries };
  }

  private append(b: Uint8Array): void {
    if (this.size + b.length > this.buf.length) {
      const grown = allocShared(Math.max(this.size + b.length, this.buf.length * 2, 1 << 20));
      this.buf.copy(grown, 0, 0, this.size);
      this.buf = grown;
    }
    this.buf.set(b, this.size);
    this.size += b.length;
  }
}

/**
 * What follows a pack's `size` bytes of blobs: random padding (see PACK_PADDING), the sealed
 * table of contents of `entries`, and the TOC's length as a little-endian u32.
 */
export function packTail(entries: readonly PackEntry[], size: number, sealer: Sealer): Buffer[] {
  const toc = sealer.seal(encodeToc(entries));
  const trailer = Buffer.alloc(4);
  trailer.writeUInt32LE(toc.length);
  return [randomBytes(paddingFor(size + toc.length + trailer.length)), toc, trailer];
}

/**
 * Packs are padded with random bytes (between the last blob and the TOC) to a multiple of
 * 64 KiB, so a pack holding one chunk — the last of a small backup — does not give away
 * that chunk's exact size, the input of the 2025 attacks on keyed content-defined
 * chunking. Cost: 32 KiB per pack on average, 0.2% of a 16 MiB pack (docs/security.md).
 */
export const PACK_PADDING = 64 << 10;

function paddingFor(size: number): number {
  return (PACK_PADDING - (size % PACK_PADDING)) % PACK_PADDING;
}

/** A Buffer in shared memory: views of it reach worker threads without a copy. */
export function allocShared(size: number): Buffer {
  return Buffer.from(new SharedArrayBuffer(size), 0, size);
}

/** Reads a pack's table of contents with two range reads (trailer, then TOC). */
export async function readPackToc(
  backend: Backend,
  name: string,
  sealer: Sealer,
  size?: number,
): Promise<PackEntry[]> {
  const what = `pack ${shortHex(name.slice(-64))}`;
  const packSize = size ?? (await backend.stat(name))?.size;
  if (packSize === undefined) throw new CairnError(`${what} is missing`, 'Damaged');
  if (packSize < 4) throw new CairnError(`${what} is damaged: too short`, 'Damaged');
  const trailer = await backend.read(name, { offset: packSize - 4, length: 4 });
  const tocLength = trailer.readUInt32LE(0);
  if (tocLength > packSize - 4) {
    throw new CairnError(`${what} is damaged: bad table of contents length`, 'Damaged');
  }
  const tocOffset = packSize - 4 - tocLength;
  const sealed = await backend.read(name, { offset: tocOffset, length: tocLength });
  return decodeToc(sealer.open(sealed, `${what} table of contents`), what, tocOffset);
}
