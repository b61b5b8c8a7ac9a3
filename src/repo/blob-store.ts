import { availableParallelism } from 'node:os';
import type { IdHasher, Sealer } from '../crypto/index.js';
import { CairnError, shortHex } from '../errors.js';
import { Semaphore } from '../util/semaphore.js';
import { type Backend, type BackendTraits, LOCAL_TRAITS } from './backend/backend.js';
import { type BlobLocation, type BlobType, hex } from './blob.js';
import { BlobEncoder, decodeBlob } from './blob-codec.js';
import type { BlobTask } from './blob-task.js';
import type { BlobWorkerInit } from './blob-worker.js';
import { encodeSegment, segmentName } from './index-segment.js';
import type { IndexView } from './index-view.js';
import { allocShared, PackBuilder, type PackEntry, packName } from './pack.js';
import { PackStream } from './pack-stream.js';
import { SharedBufferPool } from './shared-buffers.js';
import { BlobWorkerPool, type OpenBlob, type OpenFailures } from './worker-pool.js';

export interface BlobStoreOptions {
  /** Target pack size in bytes. */
  packSize: number;
  compressionLevel: number;
  /** Worker threads for hashing/compression; default one per core. */
  workers?: number;
  /** Blob locations collected before an index segment is written. */
  segmentEntries?: number;
}

export interface PutResult {
  id: Buffer;
  /** False when the blob was already stored (deduplicated). */
  added: boolean;
  /** Bytes this blob added to the repository (sealed, after compression). */
  storedSize: number;
}

export interface BlobStoreStats {
  blobsAdded: Record<BlobType, number>;
  bytesAdded: number;
  rawBytesAdded: number;
  packsWritten: number;
  segmentsWritten: number;
}

/** Blobs below this are hashed and sealed on the main thread: a worker round trip costs more. */
const INLINE_LIMIT = 64 << 10;
/**
 * The workers write sealed blobs into these, lent by the blob store, unless they do not fit:
 * a chunk of the default chunker (up to 2 MiB) or a batch of small files (see
 * files/small-files.ts: 2 MiB, plus one file of up to 1 MiB). Buffers transferred back
 * instead were dead on the main thread once copied into the pack: with the sealed bytes of
 * a 1.9 GB backup passing through them, the main thread's garbage array buffers reached
 * ~100 MiB (main thread `arrayBuffers` 92 → 201 MiB over the run).
 */
const SLAB_SIZE = 4 << 20;
/**
 * Seals in flight, each holding a slab. A slab is only kept while its seal runs, and every
 * one is kept for reuse: shared memory is not pressure to V8's collector, so slabs dropped
 * past a smaller spare count piled up (main thread `arrayBuffers` up to 557 MiB with 4
 * spares and up to 10 seals at once). Two per worker keep each worker's queue non-empty.
 */
const SLABS = 4;
type Pack = PackBuilder | PackStream;

/** Each of a streamed pack's two staging buffers: a write call per MiB. */
const STAGE_SIZE = 1 << 20;
/** Room past the target pack size for the blob that crosses it and the TOC. */
const PACK_SLACK = 4 << 20;
/**
 * Pack writes in flight while the pipeline keeps filling the next pack; each holds its
 * pack's buffer (~17 MiB resident) until it is durable. Enough for S3 too: in the 242 MB S3
 * bench a 16 MiB PUT to radosgw took 0.2–1.2 s while a pack filled every 0.6–2.7 s, and no
 * pack ever waited for a slot. More would only help a link that limits each connection
 * rather than the whole link, at one more pack of memory each.
 */
const PACK_WRITES_IN_FLIGHT = 2;
/**
 * A segment is also written when a pack is durable and the last segment is older than this,
 * so a backup killed midway leaves what it stored indexed and the next one reuses it (the
 * first pack is indexed at once). At most one small extra object a second; prune merges them.
 */
const CHECKPOINT_MS = 1000;
/**
 * The same on a remote backend (S3), where each segment is a request and one more object
 * that every other client lists and GETs when it syncs its index. At 1 s, the S3 bench
 * (242 MB, one pack every 1–2 s) wrote a segment per pack: 8 of cairn's 18 PUTs. At 10 s a
 * killed backup re-uploads at most ~10 s of work; restic keeps up to 10 minutes unindexed.
 */
const REMOTE_CHECKPOINT_MS = 10_000;

/**
 * put/get of content-addressed blobs: deduplicated by ID, compressed, sealed, appended to
 * packs (data and metadata kept apart so trees stay dense), and recorded in index segments
 * once their packs are durable. A blob stored in this session is known through `session`
 * until its segment is merged into the view, so memory stays bounded by one segment.
 */
export class BlobStore {
  readonly stats: BlobStoreStats = {
    blobsAdded: { data: 0, tree: 0, manifest: 0 },
    bytesAdded: 0,
    rawBytesAdded: 0,
    packsWritten: 0,
    segmentsWritten: 0,
  };
  /** Blobs of this session not yet in the view: location once their pack is durable. */
  private readonly session = new Map<string, BlobLocation | undefined>();
  /** The packs being filled, started at their first blob. */
  private readonly builders: { data?: Pack; meta?: Pack } = {};
  /** Buffers of written packs, reused for the next ones. */
  private readonly spareBuffers: Buffer[] = [];
  /** Staging buffers of streamed packs, likewise. */
  private readonly spareStages: (readonly [Buffer, Buffer])[] = [];
  private readonly writing = new Set<Promise<void>>();
  private unindexed: BlobLocation[] = [];
  private segmentChain: Promise<void> = Promise.resolve();
  private lastSegmentAt = 0;
  private pool: BlobWorkerPool | undefined;
  private readonly slots: Semaphore;
  private readonly traits: BackendTraits;
  private readonly encoder: BlobEncoder;
  /** Shared memory the workers seal into (see blob-worker.ts). */
  private readonly slabs = new SharedBufferPool(SLAB_SIZE, SLABS);
  private readonly slabSlots = new Semaphore(SLABS);
  private failure: unknown;

  constructor(
    private readonly backend: Backend,
    private readonly view: IndexView,
    private readonly sealer: Sealer,
    private readonly hashId: IdHasher,
    private readonly workerInit: BlobWorkerInit,
    private readonly opts: BlobStoreOptions,
  ) {
    this.traits = backend.traits ?? LOCAL_TRAITS;
    this.encoder = new BlobEncoder(sealer, opts.compressionLevel);
    this.slots = new Semaphore(2 * (opts.workers ?? availableParallelism()) + 2);
  }

  async put(type: BlobType, data: Uint8Array): Promise<PutResult> {
    this.throwIfFailed();
    if (data.length < INLINE_LIMIT) {
      const id = this.hashId(data);
      if (!this.claim(id)) return { id, added: false, storedSize: 0 };
      const { sealed, flags } = this.encoder.encode(data);
      return this.addToPack(type, id, flags, data.length, sealed);
    }
    await this.slots.acquire();
    try {
      const pool = this.workerPool();
      const { job, worker, id } = await pool.hash(data);
      if (!this.claim(id)) {
        pool.drop(job, worker);
        return { id, added: false, storedSize: 0 };
      }
      return await this.withSlab(async (slab) => {
        const { sealed, flags } = await pool.seal(job, worker, slab);
        return this.addToPack(type, id, flags, data.length, sealed);
      });
    } finally {
      this.slots.release();
    }
  }

  /**
   * Loads a task module on the worker threads (see blob-task.ts): `module` exports
   * `createTask`, which each worker calls with `init`.
   */
  task<A, R>(module: URL, init: unknown): BlobTask<A, R> {
    return { id: this.workerPool().loadTask(module, init) };
  }

  /**
   * Runs `task` with `args` on a worker and stores the blobs it makes as `put` would, each
   * hashed, compressed and sealed there; one message each way carries all of them. Blobs
   * are returned in the task's order. The caller bounds the runs in flight: each holds its
   * blobs on a worker until they are sealed.
   */
  async putFromTask<A, R>(
    type: BlobType,
    task: BlobTask<A, R>,
    args: A,
  ): Promise<{ result: R; blobs: PutResult[] }> {
    this.throwIfFailed();
    const pool = this.workerPool();
    const run = await pool.produce(task.id, args);
    const keep: number[] = [];
    const blobs = run.ids.map((id, i): PutResult => {
      if (this.claim(id)) keep.push(i);
      return { id, added: false, storedSize: 0 };
    });
    if (keep.length === 0) {
      pool.dropRun(run.job, run.worker);
      return { result: run.result as R, blobs };
    }
    await this.withSlab(async (slab) => {
      const sealed = await pool.sealSome(run.job, run.worker, keep, slab);
      for (const [k, i] of keep.entries()) {
        const { sealed: bytes, flags } = sealed[k]!;
        blobs[i] = await this.addToPack(type, blobs[i]!.id, flags, run.lengths[i]!, bytes);
      }
    });
    return { result: run.result as R, blobs };
  }

  /** Runs `task`, which makes no blobs, on the least busy worker: its result. */
  async runTask<A, R>(task: BlobTask<A, R>, args: A): Promise<R> {
    return (await this.hashFromTask(task, args)).result;
  }

  /** Runs `task` as `putFromTask` does and stores nothing: its result and blob IDs. */
  async hashFromTask<A, R>(
    task: BlobTask<A, R>,
    args: A,
  ): Promise<{ result: R; ids: Buffer[]; lengths: number[] }> {
    const pool = this.workerPool();
    const run = await pool.produce(task.id, args);
    pool.dropRun(run.job, run.worker);
    return { result: run.result as R, ids: run.ids, lengths: run.lengths };
  }

  /**
   * The blob `id`, verified. `length`: what the tree or image manifest referring to a chunk
   * records for it, checked too (see checkChunkLength).
   */
  async get(id: Uint8Array, length?: number): Promise<Buffer> {
    const loc = await this.locate(id);
    if (!loc) throw new CairnError(`blob ${shortHex(id)} is not in the index`, 'Damaged');
    const sealed = await this.backend.read(packName(loc.pack), {
      offset: loc.offset,
      length: loc.length,
    });
    const data = await this.open(sealed, loc);
    return length === undefined ? data : checkChunkLength(data, id, length);
  }

  /** Opens, decompresses and verifies a blob's stored bytes read from `loc`. */
  async open(sealed: Buffer, loc: BlobLocation): Promise<Buffer> {
    // Large blobs are opened on a worker so restores use every core.
    if (loc.rawLength < INLINE_LIMIT) return decodeBlob(sealed, loc, this.sealer, this.hashId);
    return this.workerPool().open(sealed, loc);
  }

  /**
   * Opens blobs of one pack lying in `sealed` into `into`, shared memory, on the worker
   * threads (see BlobWorkerPool.openInto): each blob's failure, if any.
   */
  openInto(sealed: Buffer, blobs: readonly OpenBlob[], into: Buffer): Promise<OpenFailures> {
    return this.workerPool().openInto(sealed, blobs, into);
  }

  async has(id: Uint8Array): Promise<boolean> {
    return this.session.has(hex(id)) || this.view.has(id);
  }

  async locate(id: Uint8Array): Promise<BlobLocation | undefined> {
    const key = hex(id);
    if (this.session.has(key) && this.session.get(key) === undefined) await this.flushPacks();
    return this.session.get(key) ?? this.view.get(id);
  }

  /** Makes everything put so far durable: packs, then the index segment naming them. */
  async flush(): Promise<void> {
    await this.flushPacks();
    await this.queueSegment();
    await this.segmentChain;
    this.throwIfFailed();
  }

  /** Ends the worker threads; packs not flushed are discarded (a failed backup's). */
  async close(): Promise<void> {
    for (const cls of ['data', 'meta'] as const) {
      const builder = this.builders[cls];
      this.builders[cls] = undefined;
      if (builder instanceof PackStream) await builder.abort().catch(() => undefined);
    }
    await Promise.all(this.writing);
    await this.pool?.close();
    this.pool = undefined;
  }

  /** Runs `work` (a seal on a worker, then adding what it sealed to packs) with a slab. */
  private async withSlab<T>(work: (slab: Buffer) => Promise<T>): Promise<T> {
    await this.slabSlots.acquire();
    const slab = this.slabs.take();
    try {
      return await work(slab);
    } finally {
      this.slabs.release(slab);
      this.slabSlots.release();
    }
  }

  /** True when the caller should store the blob; false when it is already stored. */
  private claim(id: Buffer): boolean {
    const key = hex(id);
    if (this.session.has(key)) return false;
    this.session.set(key, undefined);
    if (this.view.has(id)) {
      this.session.delete(key);
      return false;
    }
    return true;
  }

  private async addToPack(
    type: BlobType,
    id: Buffer,
    flags: number,
    rawLength: number,
    sealed: Buffer,
  ): Promise<PutResult> {
    const cls = type === 'data' ? 'data' : 'meta';
    const builder = this.builders[cls] ?? this.newBuilder();
    this.builders[cls] = builder;
    // Placed now, in call order; a streamed pack copies it later (`sealed` is kept till then).
    const added = builder.add({ id, type, flags, rawLength }, sealed);
    this.stats.blobsAdded[type]++;
    this.stats.bytesAdded += sealed.length;
    this.stats.rawBytesAdded += rawLength;
    if (builder.byteSize >= this.opts.packSize) {
      this.builders[cls] = undefined;
      await Promise.all([added, this.startPackWrite(builder)]);
    } else {
      await added;
    }
    return { id, added: true, storedSize: sealed.length };
  }

  private async startPackWrite(builder: Pack): Promise<void> {
    while (this.writing.size >= PACK_WRITES_IN_FLIGHT) await Promise.race(this.writing);
    this.throwIfFailed();
    const p = this.writePack(builder)
      .catch((err) => {
        this.failure ??= err;
      })
      .finally(() => this.writing.delete(p));
    this.writing.add(p);
  }

  private async writePack(builder: Pack): Promise<void> {
    const { id, entries } =
      builder instanceof PackStream
        ? await builder.finish(this.sealer).finally(() => this.spareStages.push(builder.stages))
        : await this.writeBuilt(builder);
    this.stats.packsWritten++;
    for (const e of entries) {
      const loc = { ...e, pack: id };
      this.session.set(hex(e.id), loc);
      this.unindexed.push(loc);
    }
    const full = this.unindexed.length >= (this.opts.segmentEntries ?? 32_768);
    const checkpoint = this.traits.remote ? REMOTE_CHECKPOINT_MS : CHECKPOINT_MS;
    if (full || Date.now() - this.lastSegmentAt >= checkpoint) await this.queueSegment();
  }

  /** A pack built in memory: its digests on a worker, then one write. */
  private async writeBuilt(builder: PackBuilder): Promise<{ id: Buffer; entries: PackEntry[] }> {
    const pool = this.workerPool();
    const wanted = this.traits.digests;
    let md5: Buffer | undefined;
    const { id, bytes, entries } = await builder.finish(this.sealer, async (b) => {
      const d = await pool.digests(b, wanted.includes('md5'));
      md5 = d.md5;
      return d.sha256;
    });
    const sha256 = wanted.includes('sha256') ? id : undefined;
    await this.backend.write(packName(id), bytes, { digests: { md5, sha256 } });
    this.spareBuffers.push(builder.buffer);
    return { id, entries };
  }

  private async flushPacks(): Promise<void> {
    for (const cls of ['data', 'meta'] as const) {
      const builder = this.builders[cls];
      if (!builder || builder.count === 0) continue;
      this.builders[cls] = undefined;
      await this.startPackWrite(builder);
    }
    await Promise.all(this.writing);
    this.throwIfFailed();
  }

  /** Segments are written one at a time, each after the packs it names are durable. */
  private queueSegment(): Promise<void> {
    const entries = this.unindexed;
    this.unindexed = [];
    if (entries.length === 0) return this.segmentChain;
    this.lastSegmentAt = Date.now();
    this.segmentChain = this.segmentChain.then(async () => {
      const { id, bytes } = encodeSegment({ supersedes: [], entries }, this.sealer);
      await this.backend.write(segmentName(id), bytes);
      await this.view.addSegment(hex(id), entries);
      this.stats.segmentsWritten++;
      for (const e of entries) this.session.delete(hex(e.id));
    });
    this.segmentChain.catch((err) => {
      this.failure ??= err;
    });
    return this.segmentChain;
  }

  /**
   * A pack streamed to the backend when it can take one (see PackStream), else built in a
   * buffer that already holds a full pack, so it never grows by doubling (which left 32 MiB
   * buffers behind). Untouched pages of a fresh buffer cost no memory.
   */
  private newBuilder(): Pack {
    if (this.backend.startObject) {
      const stages = this.spareStages.pop() ?? [Buffer.alloc(STAGE_SIZE), Buffer.alloc(STAGE_SIZE)];
      return new PackStream(this.backend.startObject('data'), stages);
    }
    return new PackBuilder(this.spareBuffers.pop() ?? allocShared(this.opts.packSize + PACK_SLACK));
  }

  private workerPool(): BlobWorkerPool {
    this.pool ??= new BlobWorkerPool(this.workerInit, this.opts.workers);
    return this.pool;
  }

  private throwIfFailed(): void {
    if (this.failure) throw this.failure;
  }
}

/**
 * A chunk's ID proves its bytes, not the length a tree or manifest records for it; readers
 * place bytes by those lengths, so a mismatch would silently shift or truncate what they
 * return (a hostile or damaged reference): refuse it.
 */
export function checkChunkLength(data: Buffer, id: Uint8Array, length: number): Buffer {
  if (data.length === length) return data;
  throw new CairnError(
    `reference to chunk ${shortHex(id)} is damaged: the chunk has ${data.length} bytes, not ${length}`,
    'Damaged',
  );
}
