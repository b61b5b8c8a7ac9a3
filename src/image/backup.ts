import { hostname, userInfo } from 'node:os';
import type { Readable } from 'node:stream';
import { CairnError } from '../errors.js';
import { hex } from '../repo/blob.js';
import type { BlobStore } from '../repo/blob-store.js';
import type { Repository } from '../repo/repository.js';
import { byTime, resolveRef, type Snapshot, type StoredSnapshot } from '../repo/snapshot.js';
import { changedBytes } from './compare.js';
import { loadManifest, ManifestIndex } from './manifest-reader.js';
import { type PartitionTable, readPartitionTable } from './partitions.js';
import { type ImageSource, openSource, type SourceKind } from './sources.js';
import { type StoredImage, storeImage } from './store-image.js';
import { findUnusedRanges, type UsageMap, type VolumeUsage } from './used-blocks/index.js';

export interface ImageBackupOptions {
  /** Image name; defaults to the source's base name. Required for a stream. */
  name?: string;
  tags?: string[];
  /** Hostname recorded in the snapshot; defaults to this machine's. */
  host?: string;
  /** Parent snapshot reference; default: the newest image with the same name and host. */
  parent?: string;
  /** Store blocks the filesystems inside do not use as holes, without reading them. */
  usedOnly?: boolean;
  signal?: AbortSignal;
  onEvent?: (e: ImageBackupEvent) => void;
}

export type ImageBackupEvent =
  | {
      type: 'start';
      name: string;
      sourceKind: SourceKind;
      /** Undefined for a stream. */
      size?: number;
      partitionTable?: PartitionTable;
    }
  /** --used-only: what was found in one volume. */
  | ({ type: 'volume' } & VolumeUsage)
  | { type: 'progress'; bytesDone: number; bytesRead: number; bytesTotal?: number };

export interface ImageBackupSummary {
  snapshotId: string;
  name: string;
  size: number;
  bytesRead: number;
  zeroBytes: number;
  chunksTotal: number;
  chunksNew: number;
  dataAdded: number;
  /** Seconds. */
  totalDuration: number;
  parent?: string;
  /** Bytes that differ from the parent image (when there is one). */
  changedBytes?: number;
}

/**
 * Takes an image snapshot of a file, block device or stream (`source` a path, or a
 * Readable with `opts.name`). Holds a shared lock; on abort (`opts.signal`) stops with an
 * Interrupted error after making what was stored so far durable, saving no snapshot.
 */
export async function imageBackup(
  repo: Repository,
  source: string | Readable,
  opts: ImageBackupOptions = {},
): Promise<ImageBackupSummary> {
  const started = new Date();
  const src = await openSource(source, opts.name);
  // A stream may wait for input forever: an abort ends it at once.
  const abort = () => src.abort?.();
  opts.signal?.addEventListener('abort', abort, { once: true });
  try {
    const lock = await repo.lock(false, 'image');
    try {
      return await backupLocked(repo, src, opts, started);
    } finally {
      await lock.release();
    }
  } finally {
    opts.signal?.removeEventListener('abort', abort);
    await src.close();
  }
}

async function backupLocked(
  repo: Repository,
  src: ImageSource,
  opts: ImageBackupOptions,
  started: Date,
): Promise<ImageBackupSummary> {
  const name = opts.name ?? src.name;
  const host = opts.host ?? hostname();
  const parent = pickParent(await repo.listSnapshots(), opts.parent, name, host);
  const readAt = (offset: number, length: number) => src.readAt(offset, length);
  const table = await readPartitionTable(readAt, src.size, src.sectorSize);
  const emit = opts.onEvent ?? (() => undefined);
  emit({ type: 'start', name, sourceKind: src.kind, size: src.size, partitionTable: table });
  let usage: UsageMap | undefined;
  if (opts.usedOnly) {
    if (src.size === undefined) {
      throw new CairnError('--used-only needs a file or block device, not a stream', 'Usage');
    }
    usage = await findUnusedRanges(readAt, src.size, table);
    for (const v of usage.volumes) emit({ type: 'volume', ...v });
  }
  const store = await repo.blobs();
  let image: StoredImage;
  try {
    image = await storeImage(repo, store, src, {
      free: usage?.free,
      signal: opts.signal,
      onProgress: (p) => emit({ type: 'progress', ...p, bytesTotal: src.size }),
    });
  } catch (err) {
    // Make what was stored durable so the next backup reuses it (SPEC §2).
    await store.flush().catch(() => undefined);
    throw err;
  }
  await store.flush();
  const summary: ImageBackupSummary = {
    snapshotId: '',
    name,
    size: image.size,
    bytesRead: src.bytesRead,
    zeroBytes: image.zeroBytes,
    chunksTotal: image.chunksTotal,
    chunksNew: image.chunksNew,
    dataAdded: image.dataAdded,
    totalDuration: 0,
    parent: parent?.id,
    changedBytes: parent ? await compareWithParent(store, parent, image) : undefined,
  };
  summary.totalDuration = (Date.now() - started.getTime()) / 1000;
  const doc: Snapshot = {
    time: started.toISOString(),
    hostname: host,
    username: safeUsername(),
    kind: 'image',
    name,
    tags: opts.tags ?? [],
    ...(parent ? { parent: parent.id } : {}),
    root: hex(image.root),
    size: image.size,
    summary: imageSummaryNumbers(summary),
    extra: {
      ...(table ? { partition_table: table.scheme, partitions: table.partitions } : {}),
      source_kind: src.kind,
      ...(opts.usedOnly ? { used_only: true } : {}),
    },
  };
  summary.snapshotId = await repo.saveSnapshot(doc);
  return summary;
}

/** The summary as stored in the snapshot document and printed by `image --json`. */
export function imageSummaryNumbers(s: ImageBackupSummary): Record<string, number> {
  return {
    bytes_read: s.bytesRead,
    zero_bytes: s.zeroBytes,
    chunks_total: s.chunksTotal,
    chunks_new: s.chunksNew,
    data_added: s.dataAdded,
    total_duration: s.totalDuration,
    ...(s.changedBytes === undefined ? {} : { changed_bytes: s.changedBytes }),
  };
}

function pickParent(
  snapshots: StoredSnapshot[],
  ref: string | undefined,
  name: string,
  host: string,
): StoredSnapshot | undefined {
  if (ref !== undefined) {
    const parent = resolveRef(ref, snapshots, { name, host });
    if (parent.kind !== 'image') throw new CairnError(`parent ${ref} is not an image snapshot`);
    return parent;
  }
  return snapshots
    .filter((s) => s.kind === 'image' && s.name === name && s.hostname === host)
    .sort(byTime)
    .at(-1);
}

async function compareWithParent(
  store: BlobStore,
  parent: StoredSnapshot,
  image: StoredImage,
): Promise<number> {
  const before = new ManifestIndex(store, await loadManifest(store, parent));
  const root = { kind: 'image' as const, root: hex(image.root), size: image.size };
  const now = new ManifestIndex(store, await loadManifest(store, root));
  return changedBytes(before, now);
}

function safeUsername(): string {
  try {
    return userInfo().username;
  } catch {
    return String(process.getuid?.() ?? 'unknown');
  }
}
