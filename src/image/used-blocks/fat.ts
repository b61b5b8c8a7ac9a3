import { ByteRanges } from '../ranges.js';
import type { ReadAt, UsageProbe } from './types.js';

/*
 * FAT12/16/32 allocation from the first FAT: a cluster whose entry is 0 is free. Everything
 * before the data region (boot sector, reserved sectors, FATs, the FAT12/16 root directory)
 * is used. The FAT type follows from the cluster count, as Microsoft's specification says,
 * not from the label in the boot sector.
 */

/** FAT bytes read at a time: a FAT32 table of a large volume runs to hundreds of MiB. */
const FAT_READ = 4 << 20;

export interface FatLayout {
  clusterSize: number;
  fatStart: number;
  dataStart: number;
  clusters: number;
  bits: 12 | 16 | 32;
  /** FAT12/16: the fixed root directory region (bytes); FAT32: empty, see rootCluster. */
  rootStart: number;
  rootSize: number;
  rootCluster: number;
}

export async function probeFat(
  readAt: ReadAt,
  base: number,
  length: number,
): Promise<UsageProbe | undefined> {
  const bs = await readAt(base, 512);
  const layout = bs.length === 512 ? parseFatBootSector(bs) : undefined;
  if (!layout) return undefined;
  const fs = `fat${layout.bits}`;
  if (layout.dataStart + layout.clusters * layout.clusterSize > length) {
    return { fs, unsupported: 'the filesystem is larger than its volume' };
  }
  const free = new ByteRanges();
  const entryBits = layout.bits;
  // Read whole entries only; FAT12 packs two entries in three bytes, so step by 3 bytes.
  const step = entryBits === 12 ? FAT_READ - (FAT_READ % 3) : FAT_READ;
  const perStep = (step * 8) / entryBits;
  for (let first = 0; first < layout.clusters + 2; first += perStep) {
    const fat = await readAt(base + layout.fatStart + (first * entryBits) / 8, step);
    const last = Math.min(first + perStep, layout.clusters + 2);
    for (let c = Math.max(first, 2); c < last; c++) {
      if (fatEntry(fat, c - first, entryBits) !== 0) continue;
      const at = base + layout.dataStart + (c - 2) * layout.clusterSize;
      free.add(at, at + layout.clusterSize);
    }
  }
  return { fs, free };
}

/** Entry i of a FAT slice that starts at an entry boundary; missing bytes read as used. */
export function fatEntry(fat: Buffer, i: number, bits: number): number {
  if (bits === 32) return (i + 1) * 4 <= fat.length ? fat.readUInt32LE(i * 4) & 0x0fffffff : 1;
  if (bits === 16) return (i + 1) * 2 <= fat.length ? fat.readUInt16LE(i * 2) : 1;
  const at = Math.floor((i * 3) / 2);
  if (at + 2 > fat.length) return 1;
  const v = fat.readUInt16LE(at);
  return i % 2 === 0 ? v & 0xfff : v >> 4;
}

/** The layout a FAT boot sector describes, or undefined when it is not one. */
export function parseFatBootSector(bs: Buffer): FatLayout | undefined {
  if (bs[510] !== 0x55 || bs[511] !== 0xaa || (bs[0] !== 0xeb && bs[0] !== 0xe9)) return undefined;
  const bytesPerSector = bs.readUInt16LE(11);
  const perCluster = bs[13]!;
  const reserved = bs.readUInt16LE(14);
  const fats = bs[16]!;
  const rootEntries = bs.readUInt16LE(17);
  const total = bs.readUInt16LE(19) || bs.readUInt32LE(32);
  const fatSectors = bs.readUInt16LE(22) || bs.readUInt32LE(36);
  const powerOf2 = (n: number) => n > 0 && (n & (n - 1)) === 0;
  if (![512, 1024, 2048, 4096].includes(bytesPerSector) || !powerOf2(perCluster)) return undefined;
  if (reserved === 0 || fats === 0 || fats > 4 || fatSectors === 0 || total === 0) return undefined;
  const rootSectors = Math.ceil((rootEntries * 32) / bytesPerSector);
  const dataSector = reserved + fats * fatSectors + rootSectors;
  if (dataSector >= total) return undefined;
  const clusters = Math.floor((total - dataSector) / perCluster);
  const bits = clusters < 4085 ? 12 : clusters < 65525 ? 16 : 32;
  // The FAT must have room for every cluster's entry, or this is not a FAT volume.
  if (fatSectors * bytesPerSector * 8 < (clusters + 2) * bits) return undefined;
  return {
    clusterSize: perCluster * bytesPerSector,
    fatStart: reserved * bytesPerSector,
    dataStart: dataSector * bytesPerSector,
    clusters,
    bits,
    rootStart: (reserved + fats * fatSectors) * bytesPerSector,
    rootSize: rootSectors * bytesPerSector,
    rootCluster: bits === 32 ? bs.readUInt32LE(44) : 0,
  };
}
