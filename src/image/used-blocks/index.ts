import { isExtended, type PartitionTable } from '../partitions.js';
import { ByteRanges } from '../ranges.js';
import { probeExt } from './ext.js';
import { probeFat } from './fat.js';
import { probeNtfs } from './ntfs.js';
import type { Prober, ReadAt } from './types.js';

/** NTFS before FAT: an NTFS boot sector has a BPB too (with zero FATs, which FAT refuses). */
const PROBERS: Prober[] = [probeExt, probeNtfs, probeFat];

export interface VolumeUsage {
  /** Partition number, or undefined for an image that is one volume. */
  partition?: number;
  fs?: string;
  /** Bytes found unused (stored as holes); 0 when the volume is stored in full. */
  freeBytes: number;
  /** Why the volume is stored in full, when it is. */
  note?: string;
}

export interface UsageMap {
  free: ByteRanges;
  volumes: VolumeUsage[];
}

/**
 * The unused ranges of every volume we can read: the partitions of a whole-disk image, or
 * the image itself. What no filesystem claims (partition tables, gaps, unknown volumes) is
 * treated as used.
 */
export async function findUnusedRanges(
  readAt: ReadAt,
  size: number,
  table: PartitionTable | undefined,
): Promise<UsageMap> {
  const volumes = table
    ? table.partitions
        .filter((p) => !isExtended(p))
        .sort((a, b) => a.start - b.start)
        .map((p) => ({ partition: p.number, start: p.start, length: p.size }))
    : [{ partition: undefined, start: 0, length: size }];
  const free = new ByteRanges();
  const out: VolumeUsage[] = [];
  for (const v of volumes) {
    const usage = await probeVolume(readAt, v.start, v.length);
    out.push({ partition: v.partition, ...usage.report });
    if (usage.free) free.append(usage.free);
  }
  return { free, volumes: out };
}

async function probeVolume(
  readAt: ReadAt,
  start: number,
  length: number,
): Promise<{ free?: ByteRanges; report: Omit<VolumeUsage, 'partition'> }> {
  for (const probe of PROBERS) {
    const found = await probe(readAt, start, length);
    if (!found) continue;
    if ('unsupported' in found) {
      return { report: { fs: found.fs, freeBytes: 0, note: found.unsupported } };
    }
    return { free: found.free, report: { fs: found.fs, freeBytes: found.free.total } };
  }
  return { report: { freeBytes: 0, note: 'no supported filesystem (ext2/3/4, FAT, NTFS)' } };
}
