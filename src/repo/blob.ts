/** Blob kinds. Data chunks go to data packs; trees and manifest segments to metadata packs. */
export type BlobType = 'data' | 'tree' | 'manifest';

export const BLOB_TYPES: readonly BlobType[] = ['data', 'tree', 'manifest'];

export function blobTypeCode(type: BlobType): number {
  return BLOB_TYPES.indexOf(type);
}

export function blobTypeFromCode(code: number): BlobType | undefined {
  return BLOB_TYPES[code];
}

/** Where one blob lives: the unit stored in index segments, pack TOCs and the index view. */
export interface BlobLocation {
  id: Buffer;
  type: BlobType;
  /** Bit 0: payload is a zstd frame. */
  flags: number;
  pack: Buffer;
  /** Byte offset of the sealed blob inside its pack. */
  offset: number;
  /** Length of the sealed blob in the pack. */
  length: number;
  /** Length of the plaintext chunk. */
  rawLength: number;
}

export const FLAG_COMPRESSED = 1;

export const ID_SIZE = 32;

export function hex(id: Uint8Array): string {
  return Buffer.from(id.buffer, id.byteOffset, id.byteLength).toString('hex');
}
