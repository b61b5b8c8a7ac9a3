import { createHash } from 'node:crypto';
import { hmac } from '@noble/hashes/hmac.js';
import { sha256 } from '@noble/hashes/sha2.js';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { keyedIdHasher, plainIdHasher } from '../../src/crypto/index.js';

describe('ID hashers', () => {
  it('plainIdHasher is SHA-256', () => {
    const hash = plainIdHasher();
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 2048 }), (data) => {
        const expected = createHash('sha256').update(data).digest();
        expect(hash(data).equals(expected)).toBe(true);
      }),
    );
  });

  it('keyedIdHasher is HMAC-SHA-256 (checked against noble, an independent implementation)', () => {
    const key = Buffer.alloc(32, 0x0b);
    const hash = keyedIdHasher(key);
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 2048 }), (data) => {
        expect(hash(data).equals(Buffer.from(hmac(sha256, key, data)))).toBe(true);
      }),
    );
  });

  it('keyed IDs differ under different keys and from plain SHA-256', () => {
    const a = keyedIdHasher(Buffer.alloc(32, 1));
    const b = keyedIdHasher(Buffer.alloc(32, 2));
    const plain = plainIdHasher();
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 512 }), (data) => {
        expect(a(data).equals(b(data))).toBe(false);
        expect(a(data).equals(plain(data))).toBe(false);
        expect(a(data).equals(a(Buffer.from(data)))).toBe(true);
        expect(a(data).length).toBe(32);
      }),
    );
  });

  it('rejects ID keys that are not 32 bytes', () => {
    expect(() => keyedIdHasher(Buffer.alloc(31))).toThrow(/32 bytes/);
  });
});
