import { availableParallelism } from 'node:os';
import type { IdHasher, Sealer } from '../crypto/index.js';
import { CairnError, shortHex } from '../errors.js';
import { Semaphore } from '../util/semaphore.js';
import { type Backend, type BackendTraits, LOCAL_TRAITS } from './backend/backend.js';
import { type BlobLocation, type BlobType, hex } from './blob.js';
import { decodeBlob, encodeBlob } from './blob-codec.js';
import type { BlobWorkerInit } from './blob-worker.js';
import { encodeSegment, segmentName } from './index-segment.js';
import type { IndexView } from './index-view.js';
import { allocShared, PackBuilder, packName } from './pack.js';
import { BlobWorkerPool } from './worker-pool.js';

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
  private readonly builders: { data: PackBuilder; meta: PackBuilder };
  /** Buffers of written packs, reused for the next ones. */
  private readonly spareBuffers: Buffer[] = [];
  private readonly writing = new Set<Promise<void>>();
  private unindexed: BlobLocation[] = [];
  private segmentChain: Promise<void> = Promise.resolve();
  private lastSegmentAt = 0;
  private pool: BlobWorkerPool | undefined;
  private readonly slots: Semaphore;
  private readonly traits: BackendTraits;
  private failure: unknown;

  constructor(
    private readonly backend: Backend,
    private readonly view: IndexView,
    private readonly sealer: Sealer,
    private readonly hashId: IdHasher,
    private readonly workerInit: BlobWorkerInit,
    private readonly opts: BlobStoreOptions,
  ) {
    this.builders = { data: this.newBuilder(), meta: this.newBuilder() };
    this.traits = backend.traits ?? LOCAL_TRAITS;
    this.slots = new Semaphore(2 * (opts.workers ?? availableParallelism()) + 2);
  }

  async put(type: BlobType, data: Uint8Array): Promise<PutResult> {
    this.throwIfFailed();
    if (data.length < INLINE_LIMIT) {
      const id = this.hashId(data);
      if (!(await this.claim(id))) return { id, added: false, storedSize: 0 };
      const { sealed, flags } = encodeBlob(data, this.sealer, this.opts.compressionLevel);
      return this.addToPack(type, id, flags, data.length, sealed);
    }
    await this.slots.acquire();
    try {
      const pool = this.workerPool();
      const { job, worker, id } = await pool.hash(data);
      if (!(await this.claim(id))) {
        pool.drop(job, worker);
        return { id, added: false, storedSize: 0 };
      }
      const { sealed, flags } = await pool.seal(job, worker);
      return await this.addToPack(type, id, flags, data.length, sealed);
    } finally {
      this.slots.release();
    }
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

  async close(): Promise<void> {
    await this.pool?.close();
    this.pool = undefined;
  }

  /** True when the caller should store the blob; false when it is already stored. */
  private async claim(id: Buffer): Promise<boolean> {
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
    const builder = this.builders[cls];
    builder.add({ id, type, flags, rawLength }, sealed);
    this.stats.blobsAdded[type]++;
    this.stats.bytesAdded += sealed.length;
    this.stats.rawBytesAdded += rawLength;
    if (builder.byteSize >= this.opts.packSize) {
      this.builders[cls] = this.newBuilder();
      await this.startPackWrite(builder);
    }
    return { id, added: true, storedSize: sealed.length };
  }

  private async startPackWrite(builder: PackBuilder): Promise<void> {
    while (this.writing.size >= PACK_WRITES_IN_FLIGHT) await Promise.race(this.writing);
    this.throwIfFailed();
    const p = this.writePack(builder)
      .catch((err) => {
        this.failure ??= err;
      })
      .finally(() => this.writing.delete(p));
    this.writing.add(p);
  }

  private async writePack(builder: PackBuilder): Promise<void> {
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

  private async flushPacks(): Promise<void> {
    for (const cls of ['data', 'meta'] as const) {
      const builder = this.builders[cls];
      if (builder.count === 0) continue;
      this.builders[cls] = this.newBuilder();
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
   * A builder whose buffer already holds a full pack, so it never grows by doubling (which
   * left 32 MiB buffers behind). Untouched pages of a fresh buffer cost no memory.
   */
  private newBuilder(): PackBuilder {
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
