import argon2 from 'argon2';
import { CairnError } from '../errors.js';

/** argon2id cost parameters: `t` passes over `m` KiB of memory in `p` lanes. */
export interface KdfParams {
  t: number;
  /** Memory in KiB. */
  m: number;
  p: number;
}

/**
 * RFC 9106's second recommended option: t=3, 64 MiB, 4 lanes. Every command derives a key
 * once, so its time is a fixed cost of every command. Medians of 3 on this machine (2-core
 * AMD EPYC, Node 20): the native argon2 package 191 ms for these parameters (156 ms with 2
 * lanes, 105 ms for t=3 at 32 MiB); hash-wasm's WebAssembly 300 ms and @noble/hashes' pure
 * JS 1090 ms for t=3 at 32 MiB, which was the default while noble computed it.
 */
export const DEFAULT_KDF_PARAMS: Readonly<KdfParams> = Object.freeze({ t: 3, m: 64 * 1024, p: 4 });

/**
 * Bounds a key file may ask for. A hostile key file must not make us allocate without
 * limit, hence `m` below 4 GiB.
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

/** Derives a 32-byte key from a password with argon2id, on libuv's thread pool. */
export async function deriveKey(
  password: Uint8Array | string,
  salt: Uint8Array,
  params: KdfParams,
): Promise<Buffer> {
  const problem = kdfParamsProblem(params);
  if (problem !== undefined) throw new CairnError(`invalid argon2id parameters: ${problem}`);
  if (salt.length < 8) throw new CairnError('argon2id salt must be at least 8 bytes');
  return argon2.hash(typeof password === 'string' ? password : Buffer.from(password), {
    raw: true,
    type: argon2.argon2id,
    version: 0x13,
    salt: Buffer.from(salt),
    timeCost: params.t,
    memoryCost: params.m,
    parallelism: params.p,
    hashLength: DERIVED_KEY_LENGTH,
  });
}

function isIntIn(v: unknown, min: number, max: number): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max;
}
