import { randomBytes } from 'node:crypto';
import type { ChunkerParams } from '../chunker/index.js';
import type { Sealer } from '../crypto/index.js';
import { CairnError } from '../errors.js';

/**
 * The repository's `config` object (docs/format.md):
 *   config = "CRNC" ‖ u8 formatVersion ‖ u8 mode ‖ seal(JSON)
 * mode 0: unencrypted (checksum seal); mode 1: AES-256-GCM under the master key.
 * The mode is in the clear so `open` knows whether it needs a password.
 */
export const FORMAT_VERSION = 1;
const MAGIC = Buffer.from('CRNC', 'latin1');

export type EncryptionMode = 'none' | 'aes-256-gcm';

export interface RepoConfig {
  version: number;
  /** Random 32-byte hex: names the local cache, never derived from content. */
  id: string;
  created: string;
  encryption: EncryptionMode;
  chunker: ChunkerParams;
  /** Hex gear-table seed; only for unencrypted repositories (else it is in the master key). */
  chunkerSeed?: string;
  compression: { algorithm: 'zstd'; level: number };
  packSize: number;
}

export function newRepoId(): string {
  return randomBytes(32).toString('hex');
}

export function configMode(stored: Buffer): EncryptionMode {
  if (stored.length < 6 || !stored.subarray(0, 4).equals(MAGIC)) {
    throw new CairnError('repository config is damaged: bad magic', 'Damaged');
  }
  if (stored[4] !== FORMAT_VERSION) {
    throw new CairnError(`unsupported repository format version ${stored[4]}`, 'Fatal');
  }
  if (stored[5] === 0) return 'none';
  if (stored[5] === 1) return 'aes-256-gcm';
  throw new CairnError(`repository config is damaged: unknown mode ${stored[5]}`, 'Damaged');
}

export function encodeConfig(config: RepoConfig, sealer: Sealer): Buffer {
  const mode = config.encryption === 'none' ? 0 : 1;
  const header = Buffer.concat([MAGIC, Buffer.from([FORMAT_VERSION, mode])]);
  return Buffer.concat([header, sealer.seal(Buffer.from(JSON.stringify(config)))]);
}

export function decodeConfig(stored: Buffer, sealer: Sealer): RepoConfig {
  const mode = configMode(stored);
  const plain = sealer.open(stored.subarray(6), 'repository config');
  let c: RepoConfig;
  try {
    c = JSON.parse(plain.toString('utf8')) as RepoConfig;
  } catch {
    throw new CairnError('repository config is damaged: not JSON', 'Damaged');
  }
  const ok =
    c.version === FORMAT_VERSION &&
    typeof c.id === 'string' &&
    /^[0-9a-f]{64}$/.test(c.id) &&
    c.encryption === mode &&
    typeof c.chunker?.min === 'number' &&
    typeof c.packSize === 'number' &&
    c.compression?.algorithm === 'zstd' &&
    (mode !== 'none' || /^[0-9a-f]{64}$/.test(c.chunkerSeed ?? ''));
  if (!ok) throw new CairnError('repository config is damaged: bad fields', 'Damaged');
  return c;
}
