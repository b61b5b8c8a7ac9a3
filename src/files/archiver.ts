import { lstat } from 'node:fs/promises';
import { hostname, userInfo } from 'node:os';
import { resolve } from 'node:path';
import { gearTable } from '../chunker/index.js';
import type { IdHasher } from '../crypto/index.js';
import { CairnError, shortHex } from '../errors.js';
import { type BlobType, hex } from '../repo/blob.js';
import type { BlobStore, BlobStoreStats, PutResult } from '../repo/blob-store.js';
import type { BlobTask } from '../repo/blob-task.js';
import type { Lock } from '../repo/lock.js';
import type { Repository } from '../repo/repository.js';
import { byTime, resolveRef, type StoredSnapshot } from '../repo/snapshot.js';
import { Excludes } from './excludes.js';
import { OwnerNames } from './fsmeta.js';
import { childPath } from './paths.js';
import { StatAhead } from './stat-ahead.js';
import { TreeWalker } from './walker.js';

export interface BackupOptions {
  tags?: string[];
  /** Recorded hostname; also picks the parent. Default: os.hostname(). */
  host?: string;
  exclude?: string[];
  excludeFiles?: string[];
  /** Do not descend into other filesystems below the given paths (mount points stay, empty). */
  oneFileSystem?: boolean;
  /** Parent snapshot reference; default: the newest file snapshot of this host and paths. */
  parent?: string;
  /** Read every file, even those unchanged since the parent. */
  force?: boolean;
  /** Walk and read, count what would be stored, write nothing. */
  dryRun?: boolean;
  /** Aborting stops the backup cleanly: what was stored is flushed, no snapshot is saved. */
  signal?: AbortSignal;
  /** How often a progress event is emitted. Default 250 ms. */
  progressIntervalMs?: number;
}

export type BackupEvent =
  | { type: 'progress'; filesDone: number; bytesDone: number; current?: Buffer }
  /** Source data that could not be read and is not in the snapshot. */
  | { type: 'error'; path: Buffer; reason: string }
  | { type: 'warning'; path: Buffer; message: string }
  /** Entries a snapshot cannot hold (sockets): noted, not an error. */
  | { type: 'skipped'; path: Buffer; reason: string };

export interface BackupCounts {
  filesNew: number;
  filesChanged: number;
  filesUnmodified: number;
  dirsNew: number;
  dirsChanged: number;
  dirsUnmodified: number;
  /** Every non-directory entry stored. */
  totalFilesProcessed: number;
  /** Bytes of regular files in the snapshot, unchanged ones included. */
  totalBytesProcessed: number;
  /** Bytes actually read from files (unchanged files are not read). */
  bytesRead: number;
  /** Entries that could not be read. */
  errors: number;
}

export interface BackupSummary extends BackupCounts {
  /** Undefined for a dry run. */
  snapshotId?: string;
  parent?: string;
  /** Hex ID of the root tree. */
  root: string;
  dryRun: boolean;
  dataBlobs: number;
  treeBlobs: number;
  /** Bytes newly stored, after compression (a dry run: before compression). */
  dataAdded: number;
  durationMs: number;
}

/** The summary under restic's names, as in `backup --json` and the snapshot document. */
export function resticSummary(s: BackupSummary): Record<string, number> {
  return {
    files_new: s.filesNew,
    files_changed: s.filesChanged,
    files_unmodified: s.filesUnmodified,
    dirs_new: s.dirsNew,
    dirs_changed: s.dirsChanged,
    dirs_unmodified: s.dirsUnmodified,
    data_blobs: s.dataBlobs,
    tree_blobs: s.treeBlobs,
    data_added: s.dataAdded,
    total_files_processed: s.totalFilesProcessed,
    total_bytes_processed: s.totalBytesProcessed,
    total_duration: s.durationMs / 1000,
    bytes_read: s.bytesRead,
    errors: s.errors,
  };
}

/**
 * A file snapshot of `paths`. Yields progress and per-entry events while it runs and returns
 * the summary. Throws (before anything is written) when a path does not exist.
 */
export async function* backup(
  repo: Repository,
  paths: readonly string[],
  opts: BackupOptions = {},
): AsyncGenerator<BackupEvent, BackupSummary> {
  const started = new Date();
  const sources = await checkSources(paths);
  const excludes = await Excludes.load(opts.exclude ?? [], opts.excludeFiles ?? []);
  const forest = pathForest(sources);
  // Started first: the lock, the parent and the index take a while to open.
  const ahead = new StatAhead(forest, {
    excludes: excludes?.patterns ?? [],
    oneFileSystem: opts.oneFileSystem === true,
  });
  let lock: Lock | undefined;
  try {
    lock = opts.dryRun ? undefined : await repo.lock(false, 'backup');
    const host = opts.host ?? hostname();
    const parent = await findParent(repo, sources, host, opts.parent);
    const store = await repo.blobs();
    const sink = opts.dryRun ? new DryRunSink(store, repo.hashId) : store;
    const before = statsOf(sink);
    const events = new EventQueue<BackupEvent>();
    const walker = new TreeWalker({
      sink,
      store,
      owners: await OwnerNames.load(),
      excludes,
      chunker: { params: repo.config.chunker, table: gearTable(repo.chunkerSeed) },
      force: opts.force === true,
      oneFileSystem: opts.oneFileSystem === true,
      signal: opts.signal,
      report: (e) => events.push(e),
    });
    const parentRoot = parent && Buffer.from(parent.root, 'hex');
    const root = yield* walk(walker, events, forest, parentRoot, sink, opts);
    await sink.flush();
    const after = statsOf(sink);
    const summary: BackupSummary = {
      ...walker.counts,
      parent: parent?.id,
      root: hex(root),
      dryRun: opts.dryRun === true,
      dataBlobs: after.data - before.data,
      treeBlobs: after.tree - before.tree,
      dataAdded: after.bytes - before.bytes,
      durationMs: Date.now() - started.getTime(),
    };
    if (!opts.dryRun) {
      summary.snapshotId = await repo.saveSnapshot({
        time: started.toISOString(),
        hostname: host,
        username: currentUser(),
        kind: 'files',
        paths: sources,
        tags: [...new Set(opts.tags ?? [])],
        parent: parent?.id,
        root: summary.root,
        size: summary.totalBytesProcessed,
        summary: resticSummary(summary),
      });
    }
    return summary;
  } finally {
    await ahead.stop();
    await lock?.release();
  }
}

/** Runs the walk, passing its events on; stops it when the consumer stops listening. */
async function* walk(
  walker: TreeWalker,
  events: EventQueue<BackupEvent>,
  root: PathNode,
  parentRoot: Buffer | undefined,
  sink: BlobSink,
  opts: BackupOptions,
): AsyncGenerator<BackupEvent, Buffer> {
  const work = walker.run(root, parentRoot);
  const timer = setInterval(() => events.push(walker.progress()), opts.progressIntervalMs ?? 250);
  try {
    yield* events.drain(work);
    return await work;
  } catch (err) {
    // Interrupted: index what was stored, so that the next backup reuses it.
    if (err instanceof CairnError && err.code === 'Interrupted') await sink.flush();
    throw err;
  } finally {
    clearInterval(timer);
    walker.stop(); // nothing to stop once the walk has finished
    await work.catch(() => undefined);
  }
}

/** Absolute, sorted, unique source paths; a path that cannot be lstat'ed is fatal here. */
async function checkSources(paths: readonly string[]): Promise<string[]> {
  if (paths.length === 0) {
    throw new CairnError('nothing to back up: give at least one path', 'Usage');
  }
  const abs = [...new Set(paths.map((p) => resolve(p)))].sort();
  for (const p of abs) {
    await lstat(p).catch((err: NodeJS.ErrnoException) => {
      const why = err.code === 'ENOENT' ? 'does not exist' : `cannot be read (${err.code})`;
      throw new CairnError(`source path ${p} ${why}`, 'NotFound');
    });
  }
  return abs;
}

async function findParent(
  repo: Repository,
  paths: string[],
  host: string,
  ref: string | undefined,
): Promise<StoredSnapshot | undefined> {
  const all = await repo.listSnapshots();
  if (ref !== undefined) {
    const snap = resolveRef(ref, all, { host, paths });
    if (snap.kind !== 'files') {
      throw new CairnError(`parent snapshot ${shortHex(snap.id)} is not a file snapshot`);
    }
    return snap;
  }
  const same = (s: StoredSnapshot) =>
    s.kind === 'files' &&
    s.hostname === host &&
    s.paths?.length === paths.length &&
    s.paths.every((p, i) => p === paths[i]);
  return all.filter(same).sort(byTime).at(-1);
}

function currentUser(): string {
  try {
    return userInfo().username;
  } catch {
    return String(process.getuid?.() ?? '');
  }
}

/** Where blobs go: the blob store, or, for a dry run, a counter that stores nothing. */
type BlobSink = Pick<BlobStore, 'put' | 'task' | 'putFromTask' | 'flush'> & {
  readonly stats: Pick<BlobStoreStats, 'blobsAdded' | 'bytesAdded'>;
};

function statsOf(sink: BlobSink): { data: number; tree: number; bytes: number } {
  const s = sink.stats;
  return { data: s.blobsAdded.data, tree: s.blobsAdded.tree, bytes: s.bytesAdded };
}

class DryRunSink implements BlobSink {
  readonly stats = { blobsAdded: { data: 0, tree: 0, manifest: 0 }, bytesAdded: 0 };
  private readonly seen = new Set<string>();

  constructor(
    private readonly store: BlobStore,
    private readonly hashId: IdHasher,
  ) {}

  async put(type: BlobType, data: Uint8Array): Promise<PutResult> {
    return this.count(type, this.hashId(data), data.length);
  }

  task<A, R>(module: URL, init: unknown): BlobTask<A, R> {
    return this.store.task(module, init);
  }

  async putFromTask<A, R>(
    type: BlobType,
    task: BlobTask<A, R>,
    args: A,
  ): Promise<{ result: R; blobs: PutResult[] }> {
    const { result, ids, lengths } = await this.store.hashFromTask(task, args);
    const blobs: PutResult[] = [];
    for (const [i, id] of ids.entries()) blobs.push(await this.count(type, id, lengths[i]!));
    return { result, blobs };
  }

  private async count(type: BlobType, id: Buffer, length: number): Promise<PutResult> {
    const key = hex(id);
    if (this.seen.has(key)) return { id, added: false, storedSize: 0 };
    this.seen.add(key);
    if (await this.store.has(id)) return { id, added: false, storedSize: 0 };
    this.stats.blobsAdded[type]++;
    this.stats.bytesAdded += length;
    return { id, added: true, storedSize: length };
  }

  async flush(): Promise<void> {}
}

/** Events from the pipeline to the generator's consumer, in order. */
class EventQueue<T> {
  private items: T[] = [];
  private wake: (() => void) | undefined;

  push(item: T): void {
    this.items.push(item);
    this.wake?.();
  }

  /** Yields events until `until` settles (without throwing its error) and none are left. */
  async *drain(until: Promise<unknown>): AsyncGenerator<T> {
    let settled = false;
    const settle = () => {
      settled = true;
      this.wake?.();
    };
    until.then(settle, settle);
    for (;;) {
      const batch = this.items;
      this.items = [];
      yield* batch;
      if (settled && this.items.length === 0) return;
      if (this.items.length === 0) await new Promise<void>((r) => (this.wake = r));
      this.wake = undefined;
    }
  }
}

/** A node of the tree the backed-up paths span: `/a/b/c` and `/a/d` share `a`. */
export interface PathNode {
  name: Buffer;
  path: Buffer;
  /** A path given to back up (walked whole), rather than a directory on the way to one. */
  given: boolean;
  /** Sorted by name bytes. */
  children: PathNode[];
}

/**
 * Absolute, normalised source paths as one tree from `/`. A path below another given path
 * adds nothing: the walk of the outer one covers it.
 */
export function pathForest(paths: readonly string[]): PathNode {
  const root: PathNode = {
    name: Buffer.alloc(0),
    path: Buffer.from('/'),
    given: false,
    children: [],
  };
  for (const p of [...paths].sort()) {
    let node = root;
    for (const part of p.split('/').filter((c) => c !== '')) {
      if (node.given) break;
      const name = Buffer.from(part);
      let child = node.children.find((c) => c.name.equals(name));
      if (!child) {
        child = { name, path: childPath(node.path, name), given: false, children: [] };
        node.children.push(child);
      }
      node = child;
    }
    node.given = true;
    node.children = [];
  }
  const sort = (n: PathNode) => {
    n.children.sort((a, b) => Buffer.compare(a.name, b.name));
    n.children.forEach(sort);
  };
  sort(root);
  return root;
}
