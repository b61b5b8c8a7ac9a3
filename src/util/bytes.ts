/** A Buffer over the same memory as `bytes` (`Buffer.from(Uint8Array)` would copy it). */
export function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
}
