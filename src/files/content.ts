import { type BigIntStats, closeSync, constants, fstatSync, openSync, readSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { Chunker, type ChunkerParams, isAllZero } from '../chunker/index.js';
import type { BlobStore } from '../repo/blob-store.js';
import { ChunkerFeed, SharedBufferPool } from '../repo/shared-buffers.js';
import { Semaphore } from '../util/semaphore.js';
import { sourceCall, type WalkEntry } from './fsmeta.js';
import { SmallFileReader } from './small-files.js';
import { type ContentPart, mergeHoles, type Xattr } from './tree.js';
import { readXattrs } from './xattrs.js';

/** A file as a tree entry records it. */
export interface Content {
  /** Read before its bytes. */
  xattrs: Xattr[];
  parts: ContentPart[];
  size: number;
  /** The file changed while it was read; the parts hold what was read. */
  changed: boolean;
}

/**
 * Where chunks go: `put` for chunks read here, a task for small files read on the blob
 * store's worker threads (see small-files.ts).
 */
export type ContentSink = Pick<BlobStore, 'put' | 'task' | 'putFromTask'>;

export interface ContentOptions {
  sink: ContentSink;
  chunker: { params: ChunkerParams; table: Uint32Array };
  /** Called with each chunk's length before it is stored; throwing stops the read. */
  onRead(bytes: number): void;
}

/*
 * Limits on work in flight, which bound memory:
 *   - files being read: each holds a read buffer and up to one pending chunk;
 *   - chunks handed to the blob store and not yet stored (it hashes and compresses them on
 *     worker threads, so a few per worker keep every core busy).
 */
const FILE_READS = 4;
const CHUNKS_IN_FLIGHT = 8;

/**
 * Turns files into content parts: read, cut by the repository's chunker, each chunk stored
 * (the blob store deduplicates) or, when all zeros, recorded as a hole. Parts keep the file's
 * order however the stores complete.
 */
export class ContentSaver {
  /** The file whose read started last, for progress. */
  current: Buffer | undefined;
  private readonly files = new Semaphore(FILE_READS);
  private readonly chunks = new Semaphore(CHUNKS_IN_FLIGHT);
  /** Read buffers: one per file being read, plus those its stored chunks still view. */
  private readonly buffers = readBufferPool(FILE_READS + 2);
  /** Files with several links, by device and inode, until every link has been seen. */
  private readonly links = new Map<string, { content: Promise<Content>; left: number }>();
  private readonly small: SmallFileReader;

  constructor(private readonly opts: ContentOptions) {
    this.small = new SmallFileReader(opts);
  }

  /**
   * Links of one inode are stored as separate entries (the restorer links them again by
   * device and inode), each with the full content list; the bytes are read only once.
   */
  save(item: WalkEntry): Promise<Content> {
    const { nlink, dev, ino } = item.stat;
    if (nlink <= 1n) return this.read(item);
    const key = `${dev}:${ino}`;
    const group = this.links.get(key);
    if (!group) {
      const content = this.read(item);
      this.links.set(key, { content, left: Number(nlink) - 1 });
      return content;
    }
    if (--group.left <= 0) this.links.delete(key);
    // If the first link could not be read (reported there), try this one afresh.
    return group.content.catch(() => this.read(item));
  }

  private async read(item: WalkEntry): Promise<Content> {
    if (item.stat.size <= SMALL_FILE_MAX) {
      this.current = item.path;
      return this.small.read(item);
    }
    const xattrs = await sourceCall(item.path, () => readXattrs(item.path, 'file'));
    await this.files.acquire();
    try {
      this.current = item.path;
      const parts: Promise<ContentPart>[] = [];
      const chunker = new Chunker(this.opts.chunker.params, this.opts.chunker.table);
      const feed = new ChunkerFeed(this.buffers, chunker);
      const read = await readChunks(item.path, item.stat, feed, (chunk) => {
        this.opts.onRead(chunk.length);
        return this.savePart(chunk, parts);
      });
      return { xattrs, parts: mergeHoles(await Promise.all(parts)), ...read };
    } finally {
      this.files.release();
    }
  }

  /** A run of zeros becomes a hole: nothing stored, restored sparse. */
  private async savePart(chunk: Uint8Array, parts: Promise<ContentPart>[]): Promise<void> {
    const length = chunk.length;
    if (isAllZero(chunk)) {
      parts.push(Promise.resolve({ id: null, length }));
      return;
    }
    await this.chunks.acquire();
    const part = this.buffers
      .holding(chunk, () => this.opts.sink.put('data', chunk))
      .then((r) => ({ id: r.id, length }))
      .finally(() => this.chunks.release());
    // Awaited with the others once the file is read; until then a failure must not count
    // as unhandled.
    part.catch(() => undefined);
    parts.push(part);
  }
}

export interface FileRead {
  /** Bytes read: the size the stored content describes. */
  size: number;
  /** The file changed while it was read (size, mtime or inode moved). */
  changed: boolean;
}

/**
 * Files up to this size are read on the blob workers, in batches (see small-files.ts).
 * Larger ones are read here, asynchronously, in READ_SIZE pieces.
 */
const SMALL_FILE_MAX = 1n << 20n;

/** The lstat fields that tell whether a file changed while it was read. */
export type FileIdentity = Pick<BigIntStats, 'size' | 'mtimeNs' | 'ino'>;

/**
 * Where `readChunks` gets its read buffers and chunks them: a `ChunkerFeed` (shared memory,
 * so chunks reach the hashing workers without a copy), or a read task's arena.
 */
export interface ReadFeed {
  /** A buffer of `length` bytes at most (never empty), to fill and push. */
  take(length: number): Buffer;
  push(data: Uint8Array): Uint8Array[];
  finish(): Uint8Array[];
  /** Releases the buffers the chunker no longer holds. */
  settle(): void;
  releaseAll(): void;
}

/**
 * Large reads keep syscalls and thread-pool round trips rare, and a chunk that spans two
 * reads is copied by the chunker: with 4 MiB reads (4 × the default average chunk) that
 * copying took 149 ms of main-thread time for 1 GiB, against 764 ms with 1 MiB reads.
 */
const READ_SIZE = 4 << 20;
/** Read size past the lstat'ed size, for a file that grew since. */
const GROW_READ = 64 << 10;
/** Never follow a symlink swapped in since lstat, never block on a FIFO swapped in. */
const OPEN_FLAGS = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;
/**
 * Files up to this size are read with synchronous calls: four async calls (open, read,
 * fstat, close) cost more than reading a small cached file (10 000 small files: 8.3 s
 * async, 1.5 s of it in those hand-offs). A backup reads them on the blob workers, where a
 * wait for the disk blocks no other work (see small-files.ts); a live diff on the main
 * thread. Larger files are read asynchronously, where the hand-off is amortised over 4 MiB
 * reads and the event loop stays free for the blob store while the disk works.
 */
const SYNC_READ_MAX = Number(SMALL_FILE_MAX);

/** The calls a file read needs, synchronous or not. */
interface FileReader {
  read(buf: Buffer, len: number, pos: number): number | Promise<number>;
  stat(): BigIntStats | Promise<BigIntStats>;
  close(): void | Promise<void>;
}

async function openReader(path: Buffer, size: number): Promise<FileReader> {
  if (size <= SYNC_READ_MAX) {
    const fd = openSync(path, OPEN_FLAGS);
    return {
      read: (buf, len, pos) => readSync(fd, buf, 0, len, pos),
      stat: () => fstatSync(fd, { bigint: true }),
      close: () => closeSync(fd),
    };
  }
  const fh = await open(path, OPEN_FLAGS);
  return {
    read: async (buf, len, pos) => (await fh.read(buf, 0, len, pos)).bytesRead,
    stat: () => fh.stat({ bigint: true }),
    close: () => fh.close(),
  };
}

/**
 * Reads the file, handing its chunks to `onChunk` in order (awaited: backpressure). `st` is
 * the lstat the walk saw; comparing it with fstat at the end tells whether the file changed
 * meanwhile. Large reads go to the feed's pool buffers; `onChunk` must retain a chunk it
 * keeps past its return (see `SharedBufferPool`), as the buffer is reused once released.
 */
export async function readChunks(
  path: Buffer,
  st: FileIdentity,
  feed: ReadFeed,
  onChunk: (chunk: Uint8Array) => Promise<void>,
): Promise<FileRead> {
  const expected = Number(st.size);
  const file = await sourceCall(path, () => openReader(path, expected));
  try {
    let pos = 0;
    for (;;) {
      // One byte more than expected, so a file read whole ends in a short read: no extra call.
      const len = pos <= expected ? Math.min(READ_SIZE, expected - pos + 1) : GROW_READ;
      const buf = feed.take(len);
      const bytesRead = await sourceCall(path, () => file.read(buf, buf.length, pos));
      if (bytesRead === 0) break;
      pos += bytesRead;
      for (const chunk of feed.push(buf.subarray(0, bytesRead))) await onChunk(chunk);
      feed.settle();
      if (bytesRead < buf.length && pos >= expected) break;
    }
    for (const chunk of feed.finish()) await onChunk(chunk);
    const end = await sourceCall(path, () => file.stat());
    const size = BigInt(pos);
    const changed =
      size !== st.size || end.size !== size || end.mtimeNs !== st.mtimeNs || end.ino !== st.ino;
    return { size: pos, changed };
  } finally {
    feed.releaseAll();
    await file.close();
  }
}

/** A pool of buffers for `readChunks`, keeping `spare` of them for reuse. */
export function readBufferPool(spare: number): SharedBufferPool {
  return new SharedBufferPool(READ_SIZE, spare);
}
