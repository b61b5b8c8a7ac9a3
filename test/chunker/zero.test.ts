import { describe, expect, it } from 'vitest';
import { isAllZero } from '../../src/chunker/index.js';

describe('isAllZero', () => {
  it('accepts empty and all-zero buffers of many sizes', () => {
    for (const n of [0, 1, 2, 63, 64, 65, 4095, 4096, 65535, 65536, 65537, 300_000]) {
      expect(isAllZero(new Uint8Array(n))).toBe(true);
      expect(isAllZero(Buffer.alloc(n))).toBe(true);
    }
  });

  it('finds a single nonzero byte at every position of small buffers', () => {
    const missed: Array<[number, number]> = [];
    for (let n = 1; n <= 200; n++) {
      const buf = new Uint8Array(n);
      for (let i = 0; i < n; i++) {
        buf[i] = 1 + (i % 255);
        if (isAllZero(buf)) missed.push([n, i]);
        buf[i] = 0;
      }
      expect(isAllZero(buf)).toBe(true);
    }
    expect(missed).toEqual([]);
  });

  it('finds a nonzero byte near the edges of large buffers and of internal slices', () => {
    const n = 3 * 65536 + 123;
    const positions = [0, 1, 2, 63, 64, 65535, 65536, 65537, 131071, 131072, n - 65537, n - 2];
    const buf = new Uint8Array(n);
    for (const i of [...positions, n - 1]) {
      buf[i] = 0x80;
      expect(isAllZero(buf)).toBe(false);
      buf[i] = 0;
    }
    expect(isAllZero(buf)).toBe(true);
  });

  it('looks only at the view, not at the rest of its ArrayBuffer', () => {
    const backing = new Uint8Array(200_000).fill(7);
    backing.fill(0, 1000, 199_000);
    expect(isAllZero(backing.subarray(1000, 199_000))).toBe(true);
    expect(isAllZero(backing.subarray(999, 199_000))).toBe(false);
    expect(isAllZero(backing.subarray(1000, 199_001))).toBe(false);
    expect(isAllZero(Buffer.from(backing.buffer, 1000, 100))).toBe(true);
  });
});
