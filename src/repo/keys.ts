import { createHash } from 'node:crypto';
import {
  createKeyFile,
  type KdfParams,
  type KeyFileInfo,
  type MasterKey,
  openKeyFile,
  readKeyFileInfo,
} from '../crypto/index.js';
import { CairnError } from '../errors.js';
import type { Backend } from './backend/backend.js';

/** Key files: `keys/<SHA-256 of the file>`, each wrapping the master key under one password. */
export function keyFileName(keyFile: Buffer): string {
  return `keys/${createHash('sha256').update(keyFile).digest('hex')}`;
}

export interface KeyListing extends KeyFileInfo {
  id: string;
}

/** Tries the password on every key file; the first that opens gives the master key. */
export async function unlock(
  backend: Backend,
  password: string,
): Promise<{ masterKey: MasterKey; keyName: string }> {
  for await (const o of backend.list('keys')) {
    try {
      const masterKey = await openKeyFile(await backend.read(o.name), password, o.name);
      return { masterKey, keyName: o.name };
    } catch (err) {
      if (err instanceof CairnError && err.code === 'WrongPassword') continue;
      throw err;
    }
  }
  throw new CairnError('wrong password or no key found', 'WrongPassword');
}

export async function addKey(
  backend: Backend,
  masterKey: MasterKey,
  password: string,
  params: KdfParams,
): Promise<string> {
  const keyFile = await createKeyFile(password, masterKey, params);
  const name = keyFileName(keyFile);
  await backend.write(name, keyFile);
  return name;
}

export async function listKeys(backend: Backend): Promise<KeyListing[]> {
  const out: KeyListing[] = [];
  for await (const o of backend.list('keys')) {
    const id = o.name.slice('keys/'.length);
    out.push({ id, ...readKeyFileInfo(await backend.read(o.name), o.name) });
  }
  return out.sort((a, b) => a.created.localeCompare(b.created));
}

/** Resolves a key ID or unique prefix to its object name. */
export async function findKey(backend: Backend, prefix: string): Promise<string> {
  const matches: string[] = [];
  for await (const o of backend.list('keys')) {
    if (o.name.slice('keys/'.length).startsWith(prefix)) matches.push(o.name);
  }
  if (matches.length === 0) throw new CairnError(`no key with ID ${prefix}`);
  if (matches.length > 1) throw new CairnError(`key ID ${prefix} is ambiguous`);
  return matches[0]!;
}
