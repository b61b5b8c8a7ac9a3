import { argon2id } from '@noble/hashes/argon2.js';
import { describe, expect, it } from 'vitest';
import {
  DEFAULT_KDF_PARAMS,
  deriveKey,
  KDF_LIMITS,
  kdfParamsProblem,
} from '../../src/crypto/index.js';

const tiny = { t: 1, m: 64, p: 1 };
const salt = Buffer.alloc(16, 9);

describe('deriveKey', () => {
  it('is argon2id with a 32-byte output', async () => {
    const key = await deriveKey('hunter2', salt, tiny);
    expect(key).toBeInstanceOf(Buffer);
    expect(key.length).toBe(32);
    const expected = argon2id('hunter2', salt, { ...tiny, dkLen: 32 });
    expect(key.equals(Buffer.from(expected))).toBe(true);
  });

  it('agrees with an independent implementation over several lanes and passes', async () => {
    for (const params of [
      { t: 2, m: 256, p: 4 },
      { t: 3, m: 1024, p: 2 },
    ]) {
      const key = await deriveKey(Buffer.from([0, 0xff, 0x80]), salt, params);
      const expected = argon2id(Buffer.from([0, 0xff, 0x80]), salt, { ...params, dkLen: 32 });
      expect(key.equals(Buffer.from(expected))).toBe(true);
    }
  });

  it('treats a string password as its UTF-8 bytes', async () => {
    const a = await deriveKey('pässword', salt, tiny);
    const b = await deriveKey(Buffer.from('pässword', 'utf8'), salt, tiny);
    expect(a.equals(b)).toBe(true);
  });

  it('depends on password, salt and every parameter', async () => {
    const base = await deriveKey('pw', salt, tiny);
    const variants = await Promise.all([
      deriveKey('pw2', salt, tiny),
      deriveKey('pw', Buffer.alloc(16, 8), tiny),
      deriveKey('pw', salt, { ...tiny, t: 2 }),
      deriveKey('pw', salt, { ...tiny, m: 128 }),
      deriveKey('pw', salt, { t: 1, m: 64, p: 2 }),
    ]);
    for (const v of variants) expect(v.equals(base)).toBe(false);
  });

  it('rejects invalid parameters before doing any work', async () => {
    await expect(deriveKey('pw', salt, { t: 0, m: 64, p: 1 })).rejects.toThrow(/argon2id/);
    await expect(deriveKey('pw', salt, { t: 1, m: 2 ** 40, p: 1 })).rejects.toThrow(/m must/);
    await expect(deriveKey('pw', Buffer.alloc(4), tiny)).rejects.toThrow(/salt/);
  });
});

describe('kdfParamsProblem', () => {
  it('accepts the defaults and the limits', () => {
    expect(kdfParamsProblem(DEFAULT_KDF_PARAMS)).toBeUndefined();
    const { maxT: t, maxM: m, maxP: p } = KDF_LIMITS;
    expect(kdfParamsProblem({ t, m, p })).toBeUndefined();
    expect(kdfParamsProblem({ t: 1, m: 8, p: 1 })).toBeUndefined();
  });

  it.each([
    [null],
    ['t=3'],
    [{ t: 1, m: 64 }],
    [{ t: 0, m: 64, p: 1 }],
    [{ t: 101, m: 64, p: 1 }],
    [{ t: 1.5, m: 64, p: 1 }],
    [{ t: '1', m: 64, p: 1 }],
    [{ t: 1, m: 15, p: 2 }],
    [{ t: 1, m: 4 * 1024 * 1024, p: 1 }],
    [{ t: 1, m: 1e15, p: 1 }],
    [{ t: 1, m: Number.NaN, p: 1 }],
    [{ t: 1, m: 1024, p: 17 }],
    [{ t: 1, m: 1024, p: 0 }],
  ])('rejects %j', (params) => {
    expect(kdfParamsProblem(params)).toMatch(/./);
  });
});
