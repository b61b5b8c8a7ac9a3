import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  decodeMasterKey,
  ENCODED_MASTER_KEY_LENGTH,
  encodeMasterKey,
  generateMasterKey,
} from '../../src/crypto/index.js';
import { CairnError } from '../../src/errors.js';

const key32 = fc.uint8Array({ minLength: 32, maxLength: 32 }).map((b) => Buffer.from(b));

describe('master key', () => {
  it('generates three distinct 32-byte keys', () => {
    const key = generateMasterKey();
    for (const part of [key.encryption, key.ids, key.chunker]) expect(part.length).toBe(32);
    expect(key.encryption.equals(key.ids)).toBe(false);
    expect(key.ids.equals(key.chunker)).toBe(false);
    expect(generateMasterKey().encryption.equals(key.encryption)).toBe(false);
  });

  it('round-trips through its fixed-length encoding', () => {
    fc.assert(
      fc.property(key32, key32, key32, (encryption, ids, chunker) => {
        const encoded = encodeMasterKey({ encryption, ids, chunker });
        expect(encoded.length).toBe(ENCODED_MASTER_KEY_LENGTH);
        expect(encoded[0]).toBe(1);
        expect(decodeMasterKey(encoded)).toEqual({ encryption, ids, chunker });
      }),
    );
  });

  it('does not alias the encoded buffer', () => {
    const encoded = encodeMasterKey(generateMasterKey());
    const decoded = decodeMasterKey(encoded);
    const copy = Buffer.from(decoded.encryption);
    encoded.fill(0);
    expect(decoded.encryption.equals(copy)).toBe(true);
  });

  it('rejects wrong lengths and unknown versions as Damaged', () => {
    const encoded = encodeMasterKey(generateMasterKey());
    const bad = [encoded.subarray(1), Buffer.concat([encoded, Buffer.of(0)]), Buffer.from(encoded)];
    bad[2]![0] = 2;
    for (const bytes of bad) {
      expect(() => decodeMasterKey(bytes, 'key 01')).toThrow(CairnError);
      expect(() => decodeMasterKey(bytes, 'key 01')).toThrow(/^key 01 is damaged/);
    }
  });

  it('refuses to encode parts that are not 32 bytes', () => {
    const key = { ...generateMasterKey(), ids: Buffer.alloc(16) };
    expect(() => encodeMasterKey(key)).toThrow(/32 bytes/);
  });
});
