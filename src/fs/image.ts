import { CairnError } from '../errors.js';
import { ImageReader, type ImageReaderOptions } from '../image/index.js';
import {
  isExtended,
  type Partition,
  type PartitionTable,
  readPartitionTable,
} from '../image/partitions.js';
import type { Repository } from '../repo/repository.js';
import type { Snapshot } from '../repo/snapshot.js';
import { openFilesystem } from './detect.js';
import { Filesystem } from './filesystem.js';
import { readAtOf, UnreadableFilesystem, windowSource } from './source.js';
import type { ByteSource, Extent, FsDirent, FsNode, FsStat, Volume } from './types.js';

/** What was found in one volume of an image: a filesystem, or why its files are not shown. */
export interface VolumeInfo {
  /** Partition number; undefined for an image that is one volume. */
  partition?: number;
  start: number;
  size: number;
  /** The filesystem recognised, if any (readable or not: see `note`). */
  type?: string;
  /** Why the volume's files cannot be listed, or a fact worth telling (a stale journal). */
  note?: string;
  /** Whether its files are part of the view. */
  readable: boolean;
}

export interface DiskFiles {
  /**
   * The files of the image: its filesystem, or for a partitioned disk a root whose
   * directories `part<N>` are the partitions' filesystems. Undefined when none is readable.
   */
  files: Filesystem | undefined;
  volumes: VolumeInfo[];
}

export interface ImageFiles extends DiskFiles {
  reader: ImageReader;
}

const NO_FS = 'no filesystem cairn can read (ext2/3/4, FAT12/16/32, NTFS)';

/**
 * The files inside an image snapshot, read on demand through an ImageReader (only the
 * chunks holding the metadata and files asked for are fetched). Partitions come from the
 * snapshot (found at backup time), or from the image when the snapshot does not say.
 */
export async function openImageFiles(
  repo: Repository,
  snap: Snapshot,
  opts: ImageReaderOptions = {},
): Promise<ImageFiles> {
  const reader = await ImageReader.open(repo, snap, opts);
  return { reader, ...(await openSnapshotFiles(reader, snap)) };
}

/**
 * The files inside an image snapshot whose bytes `source` gives (an ImageReader, or a
 * reader sharing a mount's chunk cache).
 */
export async function openSnapshotFiles(source: ByteSource, snap: Snapshot): Promise<DiskFiles> {
  const table = recordedTable(snap) ?? (await readPartitionTable(readAtOf(source), source.size));
  const mtimeNs = BigInt(Date.parse(snap.time) || 0) * 1_000_000n;
  return openDiskFiles(source, table, mtimeNs);
}

/** The filesystems of a whole disk (`table`) or of a single volume. */
export async function openDiskFiles(
  source: ByteSource,
  table: PartitionTable | undefined,
  mtimeNs = 0n,
): Promise<DiskFiles> {
  if (!table) {
    const v = await openVolume(source, { start: 0, size: source.size });
    return { files: v.fs, volumes: [v.info] };
  }
  const volumes: VolumeInfo[] = [];
  const parts: { name: Buffer; root: FsNode }[] = [];
  const sorted = table.partitions.filter((p) => !isExtended(p)).sort((a, b) => a.number - b.number);
  for (const p of sorted) {
    const v = await openVolume(windowSource(source, p.start, p.size), p);
    volumes.push(v.info);
    if (v.fs) parts.push({ name: Buffer.from(`part${p.number}`), root: v.fs.root });
  }
  const files = parts.length > 0 ? new Filesystem(diskRoot(source, parts, mtimeNs)) : undefined;
  return { files, volumes };
}

async function openVolume(
  source: ByteSource,
  where: { start: number; size: number; number?: number },
): Promise<{ fs?: Filesystem; info: VolumeInfo }> {
  const info: VolumeInfo = {
    partition: where.number,
    start: where.start,
    size: where.size,
    readable: false,
  };
  try {
    const fs = await openFilesystem(source, { origin: where.start, device: where.number ?? 0 });
    if (!fs) return { info: { ...info, note: NO_FS } };
    const notes = fs.root.volume.notes;
    const note = notes.length ? { note: notes.join('; ') } : {};
    return { fs, info: { ...info, type: fs.type, readable: true, ...note } };
  } catch (err) {
    if (!(err instanceof CairnError) || err.code !== 'Damaged') throw err;
    const type = err instanceof UnreadableFilesystem ? { type: err.fsType } : {};
    return { info: { ...info, ...type, note: err.message } };
  }
}

function recordedTable(snap: Snapshot): PartitionTable | undefined {
  const extra = snap.extra ?? {};
  const scheme = extra.partition_table;
  if ((scheme !== 'mbr' && scheme !== 'gpt') || !Array.isArray(extra.partitions)) return undefined;
  const partitions = (extra.partitions as Partition[]).filter(
    (p) =>
      Number.isSafeInteger(p.number) &&
      Number.isSafeInteger(p.start) &&
      Number.isSafeInteger(p.size) &&
      typeof p.type === 'string',
  );
  return { scheme, partitions };
}

/** The virtual root of a partitioned disk: one directory per readable partition. */
function diskRoot(source: ByteSource, parts: { name: Buffer; root: FsNode }[], mtimeNs: bigint) {
  const volume: Volume = {
    type: 'disk',
    source,
    origin: 0,
    notes: [],
    root: async () => node,
  };
  const stat: FsStat = {
    type: 'dir',
    mode: 0o555,
    uid: 0,
    gid: 0,
    size: 0,
    mtimeNs,
    ctimeNs: mtimeNs,
    inode: 0,
    nlink: 1,
    // Partitions number from 1, so no partition's device is -1.
    device: -1,
  };
  const node: FsNode = {
    stat,
    volume,
    async *entries(): AsyncGenerator<FsDirent> {
      for (const p of parts) yield { name: p.name, load: async () => p.root };
    },
    extents: (): AsyncGenerator<Extent> => {
      throw new CairnError('the disk root is a directory');
    },
    readlink: () => Promise.reject(new CairnError('the disk root is a directory')),
  };
  return node;
}
