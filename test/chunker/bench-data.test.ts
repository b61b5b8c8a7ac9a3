import { describe, expect, it } from 'vitest';
import { generateMixedData, mixedBlocks, mutate, Rng } from '../../bench/data.js';
import { isAllZero } from '../../src/chunker/index.js';

describe('bench mixed data', () => {
  it('is deterministic in its seed', () => {
    const a = generateMixedData(2 << 20, 7);
    expect(a.equals(generateMixedData(2 << 20, 7))).toBe(true);
    expect(a.equals(generateMixedData(2 << 20, 8))).toBe(false);
  });

  it('mixes zero runs, text and random bytes in roughly the intended shares', () => {
    const share = { zero: 0, text: 0, random: 0 };
    const total = 32 << 20;
    for (const block of mixedBlocks(total, 1)) {
      const head = block.subarray(0, 256).toString('latin1');
      if (isAllZero(block)) share.zero += block.length / total;
      else if (/^[a-z ,\n]*$/.test(head)) share.text += block.length / total;
      else share.random += block.length / total;
    }
    // Targets are 10% / 45% / 45%; blocks up to 4 MiB make 32 MiB a coarse sample.
    expect(share.zero).toBeGreaterThan(0.03);
    expect(share.text).toBeGreaterThan(0.25);
    expect(share.random).toBeGreaterThan(0.25);
  });

  it('mutates a copy with small edits, deterministically, leaving most bytes alone', () => {
    const data = generateMixedData(4 << 20, 3);
    const copy = mutate(data, { edits: 50, maxLength: 100 });
    expect(copy.equals(mutate(data, { edits: 50, maxLength: 100 }))).toBe(true);
    expect(copy.equals(data)).toBe(false);
    expect(Math.abs(copy.length - data.length)).toBeLessThanOrEqual(50 * 100);
    // 50 edits in 4 MiB: both ends are almost surely untouched for a few KiB.
    expect(copy.subarray(0, 4096).equals(data.subarray(0, 4096))).toBe(true);
    expect(copy.subarray(-4096).equals(data.subarray(-4096))).toBe(true);
  });

  it('draws uniform-looking numbers', () => {
    const rng = new Rng(1);
    const counts = new Array<number>(10).fill(0);
    for (let i = 0; i < 100_000; i++) counts[rng.below(10)]!++;
    for (const c of counts) expect(Math.abs(c - 10_000)).toBeLessThan(500);
  });
});
