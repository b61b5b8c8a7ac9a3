import { randomBytes } from 'node:crypto';
import { hostname as osHostname, userInfo } from 'node:os';
import { CairnError } from '../errors.js';
import { AesGcmSealer } from './aead.js';
import { DEFAULT_KDF_PARAMS, deriveKey, type KdfParams, kdfParamsProblem } from './kdf.js';
import {
  decodeMasterKey,
  ENCODED_MASTER_KEY_LENGTH,
  encodeMasterKey,
  type MasterKey,
} from './masterkey.js';

/**
 * A key file (`keys/<id>`) wraps the master key under one password:
 * UTF-8 JSON `{version: 1, kdf: 'argon2id', params: {t, m, p}, salt, created, hostname,
 * username, data}` with `salt` (16 random bytes) and `data` (AES-256-GCM of the encoded
 * master key under the argon2id-derived key) in base64. Fields other than `data` are not
 * authenticated; changing `params` or `salt` only makes the password fail.
 */
export interface KeyFileInfo {
  kdf: 'argon2id';
  params: KdfParams;
  /** ISO 8601. */
  created: string;
  hostname: string;
  username: string;
}

export interface KeyFileMeta {
  created?: Date;
  hostname?: string;
  username?: string;
}

interface ParsedKeyFile extends KeyFileInfo {
  salt: Buffer;
  data: Buffer;
}

const SALT_LENGTH = 16;
const SEALED_LENGTH = ENCODED_MASTER_KEY_LENGTH + new AesGcmSealer(Buffer.alloc(32)).overhead;
/** Real key files are about 400 bytes; refuse to parse anything absurd. */
const MAX_KEY_FILE_BYTES = 64 * 1024;

export async function createKeyFile(
  password: Uint8Array | string,
  masterKey: MasterKey,
  params: KdfParams = DEFAULT_KDF_PARAMS,
  meta: KeyFileMeta = {},
): Promise<Buffer> {
  const salt = randomBytes(SALT_LENGTH);
  const derived = await deriveKey(password, salt, params);
  const encoded = encodeMasterKey(masterKey);
  try {
    const data = new AesGcmSealer(derived).seal(encoded);
    const file = {
      version: 1,
      kdf: 'argon2id',
      params: { t: params.t, m: params.m, p: params.p },
      salt: salt.toString('base64'),
      created: (meta.created ?? new Date()).toISOString(),
      hostname: meta.hostname ?? osHostname(),
      username: meta.username ?? currentUsername(),
      data: data.toString('base64'),
    };
    return Buffer.from(`${JSON.stringify(file, null, 2)}\n`, 'utf8');
  } finally {
    derived.fill(0);
    encoded.fill(0);
  }
}

/**
 * Opens a key file with a password. Throws CairnError WrongPassword when the password does
 * not authenticate, Damaged when the file is malformed; `what` names it in messages.
 */
export async function openKeyFile(
  bytes: Uint8Array,
  password: Uint8Array | string,
  what = 'key file',
): Promise<MasterKey> {
  const file = parseKeyFile(bytes, what);
  const derived = await deriveKey(password, file.salt, file.params);
  let encoded: Buffer;
  try {
    encoded = new AesGcmSealer(derived).open(file.data, what);
  } catch (err) {
    throw new CairnError(`wrong password for ${what}`, 'WrongPassword', { cause: err });
  } finally {
    derived.fill(0);
  }
  try {
    return decodeMasterKey(encoded, what);
  } finally {
    encoded.fill(0);
  }
}

/** The metadata `key list` shows; needs no password. */
export function readKeyFileInfo(bytes: Uint8Array, what = 'key file'): KeyFileInfo {
  const { kdf, params, created, hostname, username } = parseKeyFile(bytes, what);
  return { kdf, params, created, hostname, username };
}

/** Validates every field before anything expensive (the KDF) runs on them. */
function parseKeyFile(bytes: Uint8Array, what: string): ParsedKeyFile {
  const damaged = (why: string) => new CairnError(`${what} is damaged: ${why}`, 'Damaged');
  if (bytes.length > MAX_KEY_FILE_BYTES) throw damaged(`${bytes.length} bytes is too large`);
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch {
    throw damaged('not valid UTF-8 JSON');
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw damaged('not a JSON object');
  }
  const f = json as Record<string, unknown>;
  if (f.version !== 1) throw damaged(`unsupported version ${JSON.stringify(f.version)}`);
  if (f.kdf !== 'argon2id') throw damaged(`unsupported kdf ${JSON.stringify(f.kdf)}`);
  const problem = kdfParamsProblem(f.params);
  if (problem !== undefined) throw damaged(`bad argon2id parameters: ${problem}`);
  const { t, m, p } = f.params as KdfParams;
  const salt = strictBase64(f.salt);
  if (salt?.length !== SALT_LENGTH) throw damaged(`salt is not ${SALT_LENGTH} bytes of base64`);
  const data = strictBase64(f.data);
  if (data?.length !== SEALED_LENGTH) throw damaged(`data is not ${SEALED_LENGTH} bytes of base64`);
  if (typeof f.created !== 'string' || Number.isNaN(Date.parse(f.created))) {
    throw damaged('created is not a date');
  }
  if (typeof f.hostname !== 'string') throw damaged('hostname is not a string');
  if (typeof f.username !== 'string') throw damaged('username is not a string');
  return {
    kdf: 'argon2id',
    params: { t, m, p },
    salt,
    data,
    created: f.created,
    hostname: f.hostname,
    username: f.username,
  };
}

/** Node's base64 decoder skips invalid characters; accept only canonical padded base64. */
function strictBase64(value: unknown): Buffer | undefined {
  if (typeof value !== 'string') return undefined;
  const bytes = Buffer.from(value, 'base64');
  return bytes.toString('base64') === value ? bytes : undefined;
}

function currentUsername(): string {
  try {
    return userInfo().username;
  } catch {
    // userInfo() throws when the uid has no passwd entry (containers).
    return process.env.USER ?? '';
  }
}
