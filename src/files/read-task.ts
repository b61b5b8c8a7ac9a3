import { Chunker, type ChunkerParams, isAllZero } from '../chunker/index.js';
import type { BlobTaskOutput } from '../repo/blob-task.js';
import { asBuffer } from '../util/bytes.js';
import { type ReadFeed, readChunks } from './content.js';
import { SourceError, sourceCall } from './fsmeta.js';
import type { Xattr } from './tree.js';
import { readXattrs } from './xattrs.js';

/*
 * The blob task (see repo/blob-task.ts) that reads small files on a blob worker: xattrs,
 * bytes, chunks and zero runs, with synchronous calls, so neither the disk's wait nor the
 * syscalls' cost falls on the main thread, and their chunks are hashed, compressed and
 * sealed where they were read. This module runs on the workers only.
 */

export interface ReadTaskInit {
  params: ChunkerParams;
  table: Uint32Array;
}

/** A file to read, with the lstat the walk saw (to tell whether it changed meanwhile). */
export interface SmallFile {
  path: Uint8Array;
  size: bigint;
  mtimeNs: bigint;
  ino: bigint;
}

/** A chunk: the index of its blob in the run's output, or -1 for a run of zeros (a hole). */
export interface SmallPart {
  blob: number;
  length: number;
}

export type SmallFileResult =
  | { xattrs: Xattr[]; parts: SmallPart[]; size: number; changed: boolean }
  /** What the failed call threw: its errno code, else its message. */
  | { error: { code?: string; message: string } };

/**
 * A run's files are read into one arena, reused once the run's blobs are sealed: a buffer
 * per file is garbage that V8 collects late (ArrayBuffers live outside its heap), and with
 * them the workers' dead buffers were a large share of a backup's resident memory. Runs
 * hold at most the main thread's batch bytes (2 MiB) plus one file of up to 1 MiB; larger
 * runs (files that grew) get a buffer of their own.
 */
const ARENA_SIZE = 3 << 20;
/** Free arenas kept per worker; the main thread keeps four runs in flight over all workers. */
const SPARE_ARENAS = 2;
const spare: Buffer[] = [];

export function createTask(init: ReadTaskInit) {
  return async (files: SmallFile[]): Promise<BlobTaskOutput<SmallFileResult[]>> => {
    const need = files.reduce((n, f) => n + Number(f.size) + 1, 0);
    const arena = need <= ARENA_SIZE ? (spare.pop() ?? Buffer.allocUnsafe(ARENA_SIZE)) : undefined;
    const feed = new ArenaFeed(arena ?? Buffer.allocUnsafe(need));
    const blobs: Uint8Array[] = [];
    const result: SmallFileResult[] = [];
    for (const f of files) result.push(await readOne(f, init, feed, blobs));
    const release = () => {
      if (arena && spare.length < SPARE_ARENAS) spare.push(arena);
    };
    return { result, blobs, release };
  };
}

async function readOne(f: SmallFile, init: ReadTaskInit, feed: ArenaFeed, blobs: Uint8Array[]) {
  const path = asBuffer(f.path);
  const parts: SmallPart[] = [];
  try {
    const xattrs = await sourceCall(path, () => readXattrs(path, 'file'));
    feed.chunker = new Chunker(init.params, init.table);
    const read = await readChunks(path, f, feed, async (chunk) => {
      if (isAllZero(chunk)) {
        parts.push({ blob: -1, length: chunk.length });
      } else {
        parts.push({ blob: blobs.length, length: chunk.length });
        blobs.push(chunk);
      }
    });
    return { xattrs, parts, ...read };
  } catch (err) {
    // A failed filesystem call skips the file (the walk reports it); anything else fails the run.
    if (!(err instanceof SourceError)) throw err;
    const cause = err.cause as NodeJS.ErrnoException;
    blobs.length -= parts.filter((p) => p.blob >= 0).length;
    return { error: { code: cause.code, message: cause.message ?? String(cause) } };
  }
}

/** Read buffers cut from a run's arena, in order; past its end, buffers of their own. */
class ArenaFeed implements ReadFeed {
  chunker: Chunker | undefined;
  private at = 0;

  constructor(private readonly arena: Buffer) {}

  take(length: number): Buffer {
    if (this.at + length > this.arena.length) return Buffer.allocUnsafe(length);
    const buf = this.arena.subarray(this.at, this.at + length);
    this.at += length;
    return buf;
  }

  push(data: Uint8Array): Uint8Array[] {
    return this.chunker!.push(data);
  }

  finish(): Uint8Array[] {
    return this.chunker!.finish();
  }

  settle(): void {}

  releaseAll(): void {}
}
