import type { ReadAt } from '../partitions.js';
import type { ByteRanges } from '../ranges.js';

export type { ReadAt };

/**
 * What a filesystem probe found in a volume at `base`: its unused ranges (absolute image
 * offsets, in order), or why they can't be trusted (then the volume is stored in full).
 * A probe returns undefined when the volume is not its filesystem at all.
 */
export type UsageProbe = { fs: string; free: ByteRanges } | { fs: string; unsupported: string };

export type Prober = (
  readAt: ReadAt,
  base: number,
  length: number,
) => Promise<UsageProbe | undefined>;
