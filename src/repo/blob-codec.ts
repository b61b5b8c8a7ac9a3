import { createRequire } from 'node:module';
import { decompress } from 'zstd-napi';
import type * as ZstdBinding from 'zstd-napi/binding.js';
import type { IdHasher, Sealer } from '../crypto/index.js';
import { CairnError, shortHex } from '../errors.js';
import { type BlobLocation, FLAG_COMPRESSED } from './blob.js';

/** zstd-napi's binding: compresses into a caller's buffer, which its wrappers cannot. */
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

/** One blob, with an encoder of its own (a zstd context each call: for rare blobs). */
export function encodeBlob(data: Uint8Array, sealer: Sealer, level: number): EncodedBlob {
  return new BlobEncoder(sealer, level).encode(data);
}

/** A blob's compression buffer is kept up to this size (the default chunker's max is 2 MiB). */
const SCRATCH_MAX = 4 << 20;

/**
 * Opens a sealed blob and proves it is the blob asked for: authentication, then length and
 * content ID. Any mismatch names the pack and offset.
 */
export function decodeBlob(
  sealed: Buffer,
  loc: BlobLocation,
  sealer: Sealer,
  hashId: IdHasher,
): Buffer {
  const where = `pack ${shortHex(loc.pack)}`;
  const what = `${where} blob ${shortHex(loc.id)} at offset ${loc.offset}`;
  if (loc.rawLength > MAX_BLOB_SIZE) {
    throw new CairnError(`${what} is damaged: absurd size ${loc.rawLength}`, 'Damaged');
  }
  const payload = sealer.open(sealed, what);
  let data: Buffer;
  try {
    data = loc.flags & FLAG_COMPRESSED ? decompress(payload) : payload;
  } catch (err) {
    throw new CairnError(`${what} is damaged: cannot decompress`, 'Damaged', { cause: err });
  }
  if (data.length !== loc.rawLength || !hashId(data).equals(loc.id)) {
    throw new CairnError(`${what} is damaged: content does not match its ID`, 'Damaged');
  }
  return data;
}
