import type { Writable } from 'node:stream';
import { CairnError } from '../errors.js';
import { hex } from '../repo/blob.js';
import type { BlobStore } from '../repo/blob-store.js';
import type { Repository } from '../repo/repository.js';
import type { Snapshot } from '../repo/snapshot.js';
import { LruCache } from './lru.js';
import { loadManifest, ManifestIndex, type PlacedEntry } from './manifest-reader.js';
import { OrderedWindow } from './window.js';

/** Decompressed chunks kept by an ImageReader: a few of the largest chunks (4 MiB). */
const CHUNK_CACHE_BYTES = 64 << 20;
const FETCH_AHEAD = 16;
const BYTES_AHEAD = 64 << 20;
/** Holes are streamed as this many zeros at a time. */
const ZERO_PIECE = 1 << 20;
const ZEROS = Buffer.alloc(ZERO_PIECE);

export interface ImageReaderOptions {
  /** Bytes of decompressed chunks to cache (default 64 MiB). */
  cacheBytes?: number;
}

/**
 * Random access to an image snapshot's bytes (for mount and for reading files inside an
 * image): the chunk holding any offset is found by two binary searches, and recently used
 * chunks are kept, bounded in bytes, so sequential small reads fetch each chunk once.
 */
export class ImageReader {
  private readonly chunks: LruCache<string, Promise<Buffer>>;

  private constructor(
    private readonly store: BlobStore,
    private readonly index: ManifestIndex,
    opts: ImageReaderOptions,
  ) {
    this.chunks = new LruCache(opts.cacheBytes ?? CHUNK_CACHE_BYTES);
  }

  static async open(
    repo: Repository,
    snap: Snapshot,
    opts: ImageReaderOptions = {},
  ): Promise<ImageReader> {
    const store = await repo.blobs();
    return new ImageReader(store, new ManifestIndex(store, await loadManifest(store, snap)), opts);
  }

  get size(): number {
    return this.index.size;
  }

  /** Up to `length` bytes at `offset`; fewer (or none) past the end of the image. */
  async read(offset: number, length: number): Promise<Buffer> {
    if (
      !(Number.isSafeInteger(offset) && offset >= 0 && Number.isSafeInteger(length) && length >= 0)
    ) {
      throw new RangeError(`bad read range ${offset}+${length}`);
    }
    const end = Math.min(offset + length, this.size);
    if (end <= offset) return Buffer.alloc(0);
    const out = Buffer.alloc(end - offset);
    let pos = offset;
    while (pos < end) {
      const entry = await this.index.locate(pos);
      const stop = Math.min(end, entry.offset + entry.length);
      // Holes need nothing: `out` starts zeroed.
      if (entry.id) {
        const data = await this.chunk(entry);
        data.copy(out, pos - offset, pos - entry.offset, stop - entry.offset);
      }
      pos = stop;
    }
    return out;
  }

  private chunk(entry: PlacedEntry): Promise<Buffer> {
    const key = hex(entry.id!);
    let p = this.chunks.get(key);
    if (!p) {
      p = this.store.get(entry.id!, entry.length);
      const mine = p;
      p.catch(() => {
        if (this.chunks.peek(key) === mine) this.chunks.delete(key);
      });
      this.chunks.set(key, p, entry.length);
    }
    return p;
  }
}

/** Entries in order with their chunk bytes, fetched up to FETCH_AHEAD ahead. */
async function* fetchAhead(
  store: BlobStore,
  index: ManifestIndex,
): AsyncGenerator<{ entry: PlacedEntry; data: Buffer | null }> {
  const window = new OrderedWindow<{ entry: PlacedEntry; data: Buffer | null }>(
    FETCH_AHEAD,
    BYTES_AHEAD,
  );
  const fetch = async (entry: PlacedEntry) => ({
    entry,
    data: entry.id ? await store.get(entry.id, entry.length) : null,
  });
  try {
    for await (const entry of index.entries()) {
      window.push(fetch(entry), entry.id ? entry.length : 0);
      while (window.full) yield await window.shift();
    }
    while (window.size > 0) yield await window.shift();
  } finally {
    await window.settle();
  }
}

export interface CatImageOptions {
  signal?: AbortSignal;
}

/**
 * Streams a whole image snapshot to `out` (holes as zeros), waiting for 'drain' whenever
 * `out` is full. Rejects when `out` fails (e.g. EPIPE when the reader goes away).
 */
export async function catImage(
  repo: Repository,
  snap: Snapshot,
  out: Writable,
  opts: CatImageOptions = {},
): Promise<void> {
  const lock = await repo.lock(false, 'cat');
  try {
    const store = await repo.blobs();
    const index = new ManifestIndex(store, await loadManifest(store, snap));
    const sink = new Sink(out);
    try {
      for await (const { entry, data } of fetchAhead(store, index)) {
        if (opts.signal?.aborted) throw new CairnError('interrupted', 'Interrupted');
        if (data) await sink.write(data);
        else {
          for (let left = entry.length; left > 0; left -= ZERO_PIECE) {
            await sink.write(ZEROS.subarray(0, Math.min(left, ZERO_PIECE)));
          }
        }
      }
    } finally {
      sink.detach();
    }
  } finally {
    await lock.release();
  }
}

/** Writes to a stream with backpressure, turning its 'error' events into rejections. */
class Sink {
  private failure: Error | undefined;
  private wake: (() => void) | undefined;
  private readonly onError = (err: Error) => {
    this.failure = err;
    this.wake?.();
  };
  private readonly onDrain = () => this.wake?.();

  constructor(private readonly out: Writable) {
    out.on('error', this.onError);
    out.on('drain', this.onDrain);
    out.on('close', this.onDrain);
  }

  async write(data: Buffer): Promise<void> {
    if (this.failure) throw this.failure;
    if (this.out.destroyed) throw new CairnError('output closed before the image was written');
    if (this.out.write(data)) return;
    await new Promise<void>((resolve) => {
      this.wake = resolve;
    });
    this.wake = undefined;
    if (this.failure) throw this.failure;
    if (this.out.destroyed) throw new CairnError('output closed before the image was written');
  }

  detach(): void {
    this.out.off('error', this.onError);
    this.out.off('drain', this.onDrain);
    this.out.off('close', this.onDrain);
  }
}
