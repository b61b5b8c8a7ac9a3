import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Level } from 'level';
import { CairnError, shortHex } from '../errors.js';
import { decodeTree, encodeTree } from '../files/tree.js';
import { loadManifest, ManifestIndex } from '../image/index.js';
import { ManifestWriter } from '../image/manifest-writer.js';
import { hex } from '../repo/blob.js';
import type { BlobStore } from '../repo/blob-store.js';
import type { Repository } from '../repo/repository.js';
import { byTime, type Snapshot, type StoredSnapshot } from '../repo/snapshot.js';
import { Semaphore } from '../util/semaphore.js';

export interface CopyOptions {
  /** Stops between blobs; what was copied stays, no snapshot is half-saved. */
  signal?: AbortSignal;
  /** How often a progress event is emitted while a snapshot is being copied (ms). */
  progressIntervalMs?: number;
}

export type CopyEvent =
  | { type: 'copied'; source: StoredSnapshot; id: string }
  | { type: 'skipped'; source: StoredSnapshot; existing: string }
  | { type: 'progress'; snapshot: StoredSnapshot; blobsCopied: number; bytesCopied: number };

export interface CopySummary {
  snapshotsCopied: number;
  snapshotsSkipped: number;
  /** Blobs the destination lacked and got (chunks, trees, manifest objects). */
  blobsCopied: number;
  /** Plaintext bytes of those blobs. */
  bytesCopied: number;
  /** Bytes newly stored in the destination, after compression. */
  dataAdded: number;
  durationMs: number;
}

/** Blob reads and writes in flight: enough to hide S3 latency on both sides. */
const CONCURRENCY = 16;
const DEFAULT_PROGRESS_MS = 1000;

/**
 * Copies snapshots from one repository into another, moving only the blobs the destination
 * lacks (restic's `copy`). Both repositories are locked shared for the duration.
 *
 * Blob IDs are keyed hashes, so two encrypted repositories name the same chunk differently.
 * Rather than requiring the destination to share the source's keys (restic's
 * `init --copy-chunker-params`), trees and image manifests are rewritten bottom-up with the
 * destination's IDs: any two repositories can exchange snapshots, and neither's keys ever
 * leave it. Knowing a chunk's destination ID takes its plaintext, so each chunk is read from
 * the source once; the mapping is then kept in the destination's cache (LevelDB, keyed by
 * the source's repository ID) and a later copy reads only what is new. When both name blobs
 * alike (unencrypted, or the same keys), IDs are used as they are and nothing is read that
 * the destination already has. Snapshots already in the destination (same time, host,
 * user, kind, paths or name, tags and size) are skipped.
 */
export async function* copySnapshots(
  from: Repository,
  to: Repository,
  snapshots: readonly StoredSnapshot[],
  opts: CopyOptions = {},
): AsyncGenerator<CopyEvent, CopySummary> {
  const started = Date.now();
  const fromLock = await from.lock(false, 'copy');
  try {
    const toLock = await to.lock(false, 'copy');
    try {
      return yield* copyLocked(from, to, snapshots, opts, started);
    } finally {
      await toLock.release();
    }
  } finally {
    await fromLock.release();
  }
}

async function* copyLocked(
  from: Repository,
  to: Repository,
  snapshots: readonly StoredSnapshot[],
  opts: CopyOptions,
  started: number,
): AsyncGenerator<CopyEvent, CopySummary> {
  const existing = await to.listSnapshots();
  // Destination snapshot IDs by backupKey: what to skip, and where a `parent` went.
  const copies = new Map(existing.map((s) => [backupKey(s), s.id]));
  const sources = new Map((await from.listSnapshots()).map((s) => [s.id, s]));
  const parentOf = (snap: StoredSnapshot) => {
    const parent = snap.parent === undefined ? undefined : sources.get(snap.parent);
    return parent && copies.get(backupKey(parent));
  };
  const summary = { snapshotsCopied: 0, snapshotsSkipped: 0 };
  const [src, dst] = [await from.blobs(), await to.blobs()];
  const ids = namesAlike(from, to) ? undefined : await IdMap.open(to, from);
  const copier = new Copier(src, dst, ids, opts.signal);
  const added = counter(dst);
  try {
    for (const snap of [...snapshots].sort(byTime)) {
      const already = copies.get(backupKey(snap));
      if (already !== undefined) {
        summary.snapshotsSkipped++;
        yield { type: 'skipped', source: snap, existing: already };
        continue;
      }
      const work = copier.snapshot(snap);
      const every = opts.progressIntervalMs ?? DEFAULT_PROGRESS_MS;
      for await (const _ of ticksUntil(work, every))
        yield { type: 'progress', snapshot: snap, ...added() };
      const root = await work;
      await dst.flush();
      const id = await to.saveSnapshot(copyDocument(snap, root, parentOf(snap)));
      copies.set(backupKey(snap), id);
      summary.snapshotsCopied++;
      yield { type: 'copied', source: snap, id };
    }
  } finally {
    await ids?.close();
  }
  return { ...summary, ...added(), durationMs: Date.now() - started };
}

/** What the destination's blob store has added since this call. */
function counter(store: BlobStore) {
  const total = () => Object.values(store.stats.blobsAdded).reduce((a, b) => a + b, 0);
  const base = { blobs: total(), raw: store.stats.rawBytesAdded, stored: store.stats.bytesAdded };
  return () => ({
    blobsCopied: total() - base.blobs,
    bytesCopied: store.stats.rawBytesAdded - base.raw,
    dataAdded: store.stats.bytesAdded - base.stored,
  });
}

/** Yields every `intervalMs` until `work` settles (its outcome is left to the caller). */
async function* ticksUntil(work: Promise<unknown>, intervalMs: number): AsyncGenerator<void> {
  const settled = work.then(
    () => true,
    () => true,
  );
  for (;;) {
    const tick = sleep(intervalMs, false, { ref: false });
    if (await Promise.race([settled, tick])) return;
    yield;
  }
}

/** What makes two snapshot documents the same backup, whatever their IDs and roots. */
function backupKey(s: Snapshot): string {
  const tags = [...s.tags].sort();
  return JSON.stringify([s.time, s.hostname, s.username, s.kind, s.paths, s.name, tags, s.size]);
}

/** The destination's document: its root, and its parent if that was copied too. */
function copyDocument(snap: StoredSnapshot, root: Buffer, parent: string | undefined): Snapshot {
  const { id: _id, parent: _parent, ...doc } = snap;
  return { ...doc, root: hex(root), ...(parent ? { parent } : {}) };
}

/** Whether both repositories give every blob the same ID. */
function namesAlike(a: Repository, b: Repository): boolean {
  const probe = Buffer.from('cairn copy: do these repositories name blobs alike?');
  return a.hashId(probe).equals(b.hashId(probe));
}

/**
 * Walks one snapshot's trees or manifest in the source and stores in the destination
 * whatever it lacks, returning the destination's root ID. Trees and manifest objects are
 * always walked (they are small, and a destination tree may be present without all its
 * chunks after an interrupted copy); chunks are fetched only when missing.
 */
class Copier {
  /** Trees done or in progress in this run, by source ID: siblings and snapshots share them. */
  private readonly trees = new Map<string, Promise<Buffer>>();
  private readonly slots = new Semaphore(CONCURRENCY);

  constructor(
    private readonly src: BlobStore,
    private readonly dst: BlobStore,
    /** Source → destination chunk IDs; undefined when both repositories name blobs alike. */
    private readonly ids: IdMap | undefined,
    private readonly signal: AbortSignal | undefined,
  ) {}

  async snapshot(snap: StoredSnapshot): Promise<Buffer> {
    if (snap.kind === 'image') return this.image(snap);
    return this.tree(Buffer.from(snap.root, 'hex'));
  }

  private tree(id: Buffer): Promise<Buffer> {
    let done = this.trees.get(hex(id));
    if (!done) {
      done = this.copyTree(id);
      this.trees.set(hex(id), done);
    }
    return done;
  }

  private async copyTree(id: Buffer): Promise<Buffer> {
    const bytes = await this.slots.run(() => this.src.get(id));
    const tree = decodeTree(bytes, `tree ${shortHex(id)}`);
    let changed = false;
    const remap = async (old: Buffer, next: Promise<Buffer>) => {
      const now = await next;
      changed ||= !now.equals(old);
      return now;
    };
    const jobs: Promise<unknown>[] = [];
    for (const e of tree.entries) {
      const sub = e.subtree;
      if (sub) jobs.push(remap(sub, this.tree(sub)).then((to) => (e.subtree = to)));
      for (const part of e.content ?? []) {
        const chunk = part.id;
        if (chunk) jobs.push(remap(chunk, this.chunk(chunk)).then((to) => (part.id = to)));
      }
    }
    await Promise.all(jobs);
    // Unchanged IDs: store the very bytes, so the tree keeps its ID.
    return this.store('tree', changed ? encodeTree(tree) : bytes);
  }

  /**
   * Segments are rebuilt by the destination's ManifestWriter, so they are cut where its own
   * image backups would cut them (cuts depend on chunk IDs) and later images dedup against
   * them; with the same IDs the result is the source's manifest, byte for byte.
   */
  private async image(snap: StoredSnapshot): Promise<Buffer> {
    const index = new ManifestIndex(this.src, await loadManifest(this.src, snap));
    const writer = new ManifestWriter(this.dst);
    const count = index.manifest.segments.length;
    let next = count > 0 ? index.segment(0) : undefined;
    for (let i = 0; i < count; i++) {
      const seg = await next!;
      if (i + 1 < count) next = index.segment(i + 1);
      const entries = Array.from({ length: seg.count }, (_, j) => seg.entry(j));
      const copied = await Promise.all(entries.map((e) => (e.id ? this.chunk(e.id) : null)));
      for (let j = 0; j < entries.length; j++) {
        await writer.add({ id: copied[j]!, length: entries[j]!.length });
      }
    }
    const { id, size } = await writer.finish();
    if (size !== snap.size) {
      throw new CairnError(`image ${shortHex(snap.id)} copied ${size} of ${snap.size} bytes`);
    }
    return id;
  }

  /** A data chunk's destination ID, copying the chunk when the destination lacks it. */
  private async chunk(id: Uint8Array): Promise<Buffer> {
    const known = this.ids ? this.ids.get(id) : Buffer.from(id);
    if (known && (await this.dst.has(known))) return known;
    // One slot from read to stored: at most CONCURRENCY chunks' plaintext in memory.
    const copied = await this.slots.run(async () => this.store('data', await this.src.get(id)));
    if (this.ids) await this.ids.set(id, copied);
    else if (!copied.equals(id)) throw new CairnError(`chunk ${shortHex(id)} changed its ID`);
    return copied;
  }

  private async store(type: 'data' | 'tree', plain: Buffer): Promise<Buffer> {
    if (this.signal?.aborted) throw new CairnError('interrupted', 'Interrupted');
    return (await this.dst.put(type, plain)).id;
  }
}

/**
 * Source chunk ID → destination chunk ID for one pair of repositories, in LevelDB in the
 * destination's cache. Only a cache: an ID pair is a fact about the two keys, never stale,
 * and a missing entry only costs reading the chunk from the source again.
 */
class IdMap {
  private constructor(private readonly db: Level<Buffer, Buffer>) {}

  static async open(to: Repository, from: Repository): Promise<IdMap> {
    const path = join(to.cacheDir, 'copy-from', from.config.id);
    await mkdir(path, { recursive: true, mode: 0o700 });
    const db = new Level<Buffer, Buffer>(path, { keyEncoding: 'buffer', valueEncoding: 'buffer' });
    try {
      await db.open();
    } catch (err) {
      throw new CairnError(
        `cannot open the copy cache ${path} (is another copy between these repositories ` +
          `running?): ${(err as Error).message}`,
        'Fatal',
        { cause: err },
      );
    }
    return new IdMap(db);
  }

  get(id: Uint8Array): Buffer | undefined {
    return this.db.getSync(Buffer.from(id));
  }

  async set(id: Uint8Array, to: Buffer): Promise<void> {
    await this.db.put(Buffer.from(id), to);
  }

  async close(): Promise<void> {
    await this.db.close();
  }
}
