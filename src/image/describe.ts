import type { Repository } from '../repo/repository.js';
import type { Snapshot } from '../repo/snapshot.js';
import { loadManifest } from './manifest-reader.js';
import type { Partition } from './partitions.js';
import type { SourceKind } from './sources.js';

/** What `ls` shows for an image snapshot before any files inside it. */
export interface ImageDescription {
  name: string;
  size: number;
  partitionTable?: 'mbr' | 'gpt';
  partitions: Partition[];
  sourceKind?: SourceKind;
  usedOnly: boolean;
  /** Segments in the manifest: loading it also proves the manifest matches the snapshot. */
  segments: number;
}

/** Name, size and partitions of an image snapshot (from the snapshot and its manifest). */
export async function describeImage(repo: Repository, snap: Snapshot): Promise<ImageDescription> {
  const manifest = await loadManifest(await repo.blobs(), snap);
  const extra = snap.extra ?? {};
  const table = extra.partition_table;
  return {
    name: snap.name ?? '',
    size: manifest.size,
    ...(table === 'mbr' || table === 'gpt' ? { partitionTable: table } : {}),
    partitions: Array.isArray(extra.partitions) ? (extra.partitions as Partition[]) : [],
    ...(isSourceKind(extra.source_kind) ? { sourceKind: extra.source_kind } : {}),
    usedOnly: extra.used_only === true,
    segments: manifest.segments.length,
  };
}

function isSourceKind(v: unknown): v is SourceKind {
  return v === 'file' || v === 'blockdev' || v === 'stdin';
}
