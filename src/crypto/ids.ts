import { createHash, createHmac, createSecretKey } from 'node:crypto';
import { CairnError } from '../errors.js';

/** Maps a chunk's or object's plaintext to its 32-byte ID. */
export type IdHasher = (data: Uint8Array) => Buffer;

/** Encrypted repositories: HMAC-SHA-256 under the repository's ID key, so IDs leak nothing. */
export function keyedIdHasher(key: Uint8Array): IdHasher {
  if (key.length !== 32) throw new CairnError(`ID key must be 32 bytes, not ${key.length}`);
  // A KeyObject is imported once instead of copying the key into every HMAC.
  const keyObject = createSecretKey(key);
  return (data) => createHmac('sha256', keyObject).update(data).digest();
}

/** Unencrypted repositories: plain SHA-256, so anyone can verify a chunk against its ID. */
export function plainIdHasher(): IdHasher {
  return (data) => createHash('sha256').update(data).digest();
}
