import { randomBytes } from 'node:crypto';
import { CairnError } from '../errors.js';

/** A repository's secrets, generated once at `init` and stored only inside key files. */
export interface MasterKey {
  /** AES-256-GCM key for every stored object. */
  encryption: Buffer;
  /** HMAC-SHA-256 key for chunk and object IDs. */
  ids: Buffer;
  /** Seed of the chunker's gear table, so chunk boundaries (and sizes) depend on a secret. */
  chunker: Buffer;
}

const KEY_LENGTH = 32;
const VERSION = 1;

/** Encoded form: version byte (1) ‖ encryption (32) ‖ ids (32) ‖ chunker (32). */
export const ENCODED_MASTER_KEY_LENGTH = 1 + 3 * KEY_LENGTH;

export function generateMasterKey(): MasterKey {
  return {
    encryption: randomBytes(KEY_LENGTH),
    ids: randomBytes(KEY_LENGTH),
    chunker: randomBytes(KEY_LENGTH),
  };
}

export function encodeMasterKey(key: MasterKey): Buffer {
  const out = Buffer.alloc(ENCODED_MASTER_KEY_LENGTH);
  out[0] = VERSION;
  [key.encryption, key.ids, key.chunker].forEach((part, i) => {
    if (part.length !== KEY_LENGTH) {
      throw new CairnError(`master key parts must be ${KEY_LENGTH} bytes, not ${part.length}`);
    }
    part.copy(out, 1 + i * KEY_LENGTH);
  });
  return out;
}

/** Decodes a master key; `what` names its container in error messages. */
export function decodeMasterKey(bytes: Uint8Array, what = 'master key'): MasterKey {
  if (bytes.length !== ENCODED_MASTER_KEY_LENGTH) {
    throw new CairnError(
      `${what} is damaged: master key is ${bytes.length} bytes, ` +
        `expected ${ENCODED_MASTER_KEY_LENGTH}`,
      'Damaged',
    );
  }
  if (bytes[0] !== VERSION) {
    throw new CairnError(`${what} is damaged: unknown master key version ${bytes[0]}`, 'Damaged');
  }
  // Copies, so the keys do not keep (or alias) the caller's decrypted buffer.
  const part = (i: number) =>
    Buffer.from(bytes.subarray(1 + i * KEY_LENGTH, 1 + (i + 1) * KEY_LENGTH));
  return { encryption: part(0), ids: part(1), chunker: part(2) };
}
