import type { ByteRanges } from '../ranges.js';

/**
 * Appends the runs of clear bits of an allocation bitmap (bit i = byte i >> 3, bit i & 7,
 * least significant first, as in ext and NTFS) as byte ranges: bit i covers
 * [base + i * unit, base + (i + 1) * unit). Only the first `bits` bits count.
 */
export function addClearRuns(
  out: ByteRanges,
  bitmap: Uint8Array,
  bits: number,
  base: number,
  unit: number,
): void {
  let runStart = -1;
  let i = 0;
  while (i < bits) {
    const byte = bitmap[i >> 3]!;
    // Whole bytes at once where possible: most of a bitmap is 0x00 or 0xff.
    if ((i & 7) === 0 && i + 8 <= bits && (byte === 0 || byte === 0xff)) {
      if (byte === 0 && runStart < 0) runStart = i;
      if (byte === 0xff && runStart >= 0) {
        out.add(base + runStart * unit, base + i * unit);
        runStart = -1;
      }
      i += 8;
      continue;
    }
    const set = (byte >> (i & 7)) & 1;
    if (!set && runStart < 0) runStart = i;
    if (set && runStart >= 0) {
      out.add(base + runStart * unit, base + i * unit);
      runStart = -1;
    }
    i++;
  }
  if (runStart >= 0) out.add(base + runStart * unit, base + bits * unit);
}
