import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { GEAR_SEED_BYTES, gearTable } from '../../src/chunker/index.js';
import { CairnError } from '../../src/errors.js';

describe('gearTable', () => {
  it('is deterministic in the seed', () => {
    const seed = randomBytes(GEAR_SEED_BYTES);
    expect(gearTable(seed)).toEqual(gearTable(Uint8Array.from(seed)));
  });

  it('gives unrelated tables for seeds differing in one bit', () => {
    const seed = new Uint8Array(GEAR_SEED_BYTES);
    const other = Uint8Array.from(seed);
    other[31] ^= 1;
    const a = gearTable(seed);
    const b = gearTable(other);
    let sameWords = 0;
    let differingBits = 0;
    for (let i = 0; i < 256; i++) {
      if (a[i] === b[i]) sameWords++;
      let x = (a[i]! ^ b[i]!) >>> 0;
      for (; x !== 0; x &= x - 1) differingBits++;
    }
    expect(sameWords).toBe(0);
    // 8192 bits, each flipped with probability 1/2: far outside 6 sigma (±271) is a bug.
    expect(Math.abs(differingBits - 4096)).toBeLessThan(271);
  });

  it('has 256 distinct, balanced 32-bit words', () => {
    const table = gearTable(randomBytes(GEAR_SEED_BYTES));
    expect(table).toBeInstanceOf(Uint32Array);
    expect(new Set(table).size).toBe(256);
    let ones = 0;
    for (const w of table) for (let x = w; x !== 0; x &= x - 1) ones++;
    expect(Math.abs(ones - 4096)).toBeLessThan(271);
  });

  it('rejects a seed of the wrong length', () => {
    expect(() => gearTable(new Uint8Array(16))).toThrow(CairnError);
    expect(() => gearTable(new Uint8Array(0))).toThrow(/32 bytes, got 0/);
  });
});
