import { compress, decompress } from 'zstd-napi';
import type { IdHasher, Sealer } from '../crypto/index.js';
import { CairnError, shortHex } from '../errors.js';
import { type BlobLocation, FLAG_COMPRESSED } from './blob.js';

/** The largest plaintext blob we accept: bounds memory against a hostile index or TOC. */
export const MAX_BLOB_SIZE = 64 << 20;

export interface EncodedBlob {
  sealed: Buffer;
  flags: number;
}

/** Compresses (kept only when it shrinks the data) and seals one blob. */
export function encodeBlob(data: Uint8Array, sealer: Sealer, level: number): EncodedBlob {
  const packed = compress(data, { compressionLevel: level });
  if (packed.length < data.length) return { sealed: sealer.seal(packed), flags: FLAG_COMPRESSED };
  return { sealed: sealer.seal(data), flags: 0 };
}

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
