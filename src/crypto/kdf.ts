import { argon2idAsync } from '@noble/hashes/argon2.js';
import { CairnError } from '../errors.js';

/** argon2id cost parameters: `t` passes over `m` KiB of memory in `p` lanes. */
export interface KdfParams {
  t: number;
  /** Memory in KiB. */
  m: number;
  p: number;
}

/**
 * RFC 9106's second recommended option (t=3, 64 MiB) took 1.77 s with noble's pure-JS
 * argon2id on this machine (2-core AMD EPYC, Node 20); halving the memory keeps its pass
 * count inside the 0.5–1 s budget: t=3, 32 MiB measured 0.82 s. p > 1 buys nothing here
 * because noble computes the lanes one after another.
 */
export const DEFAULT_KDF_PARAMS: Readonly<KdfParams> = Object.freeze({ t: 3, m: 32 * 1024, p: 1 });

/**
 * Bounds a key file may ask for. A hostile key file must not make us allocate without
 * limit; noble also refuses a working area of 2^32 bytes or more, hence `m` below 4 GiB.
 */
export const KDF_LIMITS = Object.freeze({ maxT: 100, maxM: 4 * 1024 * 1024 - 1, maxP: 16 });

export const DERIVED_KEY_LENGTH = 32;

/** Why `params` is unusable, or undefined when it is fine. Accepts untrusted input. */
export function kdfParamsProblem(params: unknown): string | undefined {
  if (typeof params !== 'object' || params === null) return 'parameters are not an object';
  const { t, m, p } = params as Record<string, unknown>;
  if (!isIntIn(p, 1, KDF_LIMITS.maxP)) return `p must be an integer 1..${KDF_LIMITS.maxP}`;
  if (!isIntIn(t, 1, KDF_LIMITS.maxT)) return `t must be an integer 1..${KDF_LIMITS.maxT}`;
  if (!isIntIn(m, 8 * p, KDF_LIMITS.maxM)) {
    return `m must be an integer ${8 * p}..${KDF_LIMITS.maxM} (KiB)`;
  }
  return undefined;
}

/** Derives a 32-byte key from a password with argon2id, yielding to the event loop. */
export async function deriveKey(
  password: Uint8Array | string,
  salt: Uint8Array,
  params: KdfParams,
): Promise<Buffer> {
  const problem = kdfParamsProblem(params);
  if (problem !== undefined) throw new CairnError(`invalid argon2id parameters: ${problem}`);
  if (salt.length < 8) throw new CairnError('argon2id salt must be at least 8 bytes');
  const key = await argon2idAsync(password, salt, {
    t: params.t,
    m: params.m,
    p: params.p,
    dkLen: DERIVED_KEY_LENGTH,
    maxmem: 2 ** 32 - 1,
  });
  return Buffer.from(key.buffer, key.byteOffset, key.byteLength);
}

function isIntIn(v: unknown, min: number, max: number): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max;
}
