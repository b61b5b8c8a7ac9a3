import { createRequire } from 'node:module';
import type * as ZstdBinding from 'zstd-napi/binding.js';
import type { IdHasher, Sealer } from '../crypto/index.js';
import { CairnError, shortHex } from '../errors.js';
import { type BlobLocation, FLAG_COMPRESSED } from './blob.js';

/** zstd-napi's binding: (de)compresses into a caller's buffer, which its wrappers cannot. */
const zstd = createRequire(import.meta.url)('zstd-napi/binding.js') as typeof ZstdBinding;

/** The largest plaintext blob we accept: bounds memory against a hostile index or TOC. */
export const MAX_BLOB_SIZE = 64 << 20;

export interface EncodedBlob {
  sealed: Buffer;
  flags: number;
}

/**
 * Compresses (kept only when it shrinks the data) and seals blobs, one encoder per thread.
 * It compresses into a buffer it keeps and seals into the caller's buffer, so a blob costs
 * no allocation of its size but the cipher's output: zstd-napi's `compress` allocated the
 * bound and then a copy, the sealer its output, and the workers' dead buffers, which V8
 * collects late, were much of a backup's resident memory.
 */
export class BlobEncoder {
  readonly #cctx = new zstd.CCtx();
  /** Compression output, grown to the largest blob up to SCRATCH_MAX and kept. */
  #scratch: Buffer = Buffer.alloc(0);

  constructor(
    private readonly sealer: Sealer,
    level: number,
  ) {
    this.#cctx.setParameter(zstd.CParameter.compressionLevel, level);
  }

  /** The most bytes `encodeInto` writes for `data`. */
  bound(data: Uint8Array): number {
    return data.length + this.sealer.overhead;
  }

  encode(data: Uint8Array): EncodedBlob {
    const out = Buffer.allocUnsafe(this.bound(data));
    const { length, flags } = this.encodeInto(data, out, 0);
    return { sealed: out.subarray(0, length), flags };
  }

  /** Writes the sealed blob into `out` at `at` (`bound(data)` bytes must fit there). */
  encodeInto(data: Uint8Array, out: Uint8Array, at: number): { length: number; flags: number } {
    const need = zstd.compressBound(data.length);
    let dest = this.#scratch;
    if (dest.length < need) {
      dest = Buffer.allocUnsafe(need);
      if (need <= SCRATCH_MAX) this.#scratch = dest;
    }
    const packed = this.#cctx.compress2(dest, data);
    if (packed < data.length) {
      const length = this.sealer.sealInto(dest.subarray(0, packed), out, at);
      return { length, flags: FLAG_COMPRESSED };
    }
    return { length: this.sealer.sealInto(data, out, at), flags: 0 };
  }
}

/** A blob's compression buffer is kept up to this size (the default chunker's max is 2 MiB). */
const SCRATCH_MAX = 4 << 20;

/** What opening a blob needs of its location. */
export type BlobRef = Pick<BlobLocation, 'id' | 'pack' | 'offset' | 'rawLength' | 'flags'>;

/**
 * Opens sealed blobs and proves each is the blob asked for: authentication, then length and
 * content ID. Any mismatch names the pack and offset. One decoder per thread: its zstd
 * context is reused, and `decodeInto` writes the plaintext into the caller's memory (shared
 * memory the main thread lends a worker), so a blob costs no buffer of its size.
 */
export class BlobDecoder {
  constructor(
    private readonly sealer: Sealer,
    private readonly hashId: IdHasher,
    private readonly dctx = new zstd.DCtx(),
  ) {}

  /** The blob's plaintext; it may share memory with `sealed` (an uncompressed blob). */
  decode(sealed: Buffer, loc: BlobRef): Buffer {
    const what = describeBlob(loc);
    const payload = this.sealer.open(sealed, what);
    const data =
      loc.flags & FLAG_COMPRESSED
        ? this.decompress(payload, Buffer.allocUnsafe(loc.rawLength), what)
        : payload;
    return this.check(data, loc, what);
  }

  /** Writes the blob's plaintext into `out`, which is `loc.rawLength` bytes long. */
  decodeInto(sealed: Buffer, loc: BlobRef, out: Buffer): void {
    const what = describeBlob(loc);
    const payload = this.sealer.open(sealed, what);
    if (loc.flags & FLAG_COMPRESSED) {
      this.check(this.decompress(payload, out, what), loc, what);
      return;
    }
    if (payload.length !== out.length) throw mismatch(what);
    out.set(payload);
    this.check(out, loc, what);
  }

  /** Decompresses into `out`: the part of it written. */
  private decompress(payload: Buffer, out: Buffer, what: string): Buffer {
    try {
      return out.subarray(0, this.dctx.decompress(out, payload));
    } catch (err) {
      // More content than the index records: the wrong blob, as when it decompressed whole.
      if ((declaredSize(payload) ?? 0) > out.length) throw mismatch(what);
      throw new CairnError(`${what} is damaged: cannot decompress`, 'Damaged', { cause: err });
    }
  }

  private check(data: Buffer, loc: BlobRef, what: string): Buffer {
    if (data.length !== loc.rawLength || !this.hashId(data).equals(loc.id)) throw mismatch(what);
    return data;
  }
}

/** Opens one blob (see BlobDecoder), with a decoder shared by such calls on this thread. */
export function decodeBlob(
  sealed: Buffer,
  loc: BlobLocation,
  sealer: Sealer,
  hashId: IdHasher,
): Buffer {
  sharedDctx ??= new zstd.DCtx();
  return new BlobDecoder(sealer, hashId, sharedDctx).decode(sealed, loc);
}

let sharedDctx: ZstdBinding.DCtx | undefined;

/** Names a blob for messages, and refuses an absurd size before anything is allocated. */
function describeBlob(loc: BlobRef): string {
  const what = `pack ${shortHex(loc.pack)} blob ${shortHex(loc.id)} at offset ${loc.offset}`;
  if (loc.rawLength > MAX_BLOB_SIZE) {
    throw new CairnError(`${what} is damaged: absurd size ${loc.rawLength}`, 'Damaged');
  }
  return what;
}

/** The plaintext size a zstd frame's header declares, if it is a frame and declares one. */
function declaredSize(frame: Buffer): number | null {
  try {
    return zstd.getFrameContentSize(frame);
  } catch {
    return null;
  }
}

function mismatch(what: string): CairnError {
  return new CairnError(`${what} is damaged: content does not match its ID`, 'Damaged');
}
