import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { CairnError } from '../errors.js';
import type { BlobLocation } from './blob.js';
import type { BlobWorkerInit, BlobWorkerReply, BlobWorkerRequest } from './blob-worker.js';

/**
 * Worker threads that hash, compress and seal blobs so the main thread only reads and
 * chunks. A blob is sent to a worker once; the worker keeps it until the main thread,
 * having checked the index, asks it to seal or drop it.
 */
export class BlobWorkerPool {
  private readonly workers: Worker[] = [];
  private readonly waiting = new Map<number, (r: BlobWorkerReply) => void>();
  private nextJob = 1;
  private failure: Error | undefined;

  constructor(init: BlobWorkerInit, size = defaultWorkerCount()) {
    for (let i = 0; i < size; i++) {
      const w = new Worker(workerScript(), { workerData: init });
      w.on('message', (r: BlobWorkerReply) => this.settle(r));
      w.on('error', (err) => this.fail(err));
      this.workers.push(w);
    }
  }

  /**
   * Sends `data` and returns its ID. Data in shared memory (see `allocShared` in pack.ts) is handed
   * over without a copy; the caller must not modify it until the blob is sealed or dropped.
   * Anything else is copied, so the caller may reuse its buffer at once.
   */
  async hash(data: Uint8Array): Promise<{ job: number; worker: number; id: Buffer }> {
    const job = this.nextJob++;
    const worker = job % this.workers.length;
    if (data.buffer instanceof SharedArrayBuffer) {
      const reply = await this.request(worker, { op: 'hash', job, data });
      return { job, worker, id: asBuffer(reply.id!) };
    }
    // A private copy we can transfer: Buffer#slice would share (and detach) the caller's memory.
    const copy = new Uint8Array(data);
    const reply = await this.request(worker, { op: 'hash', job, data: copy }, [copy.buffer]);
    return { job, worker, id: asBuffer(reply.id!) };
  }

  /** SHA-256 and, when `md5`, MD5 of bytes in shared memory, off the main thread. */
  async digests(data: Buffer, md5: boolean): Promise<{ sha256: Buffer; md5?: Buffer }> {
    const job = this.nextJob++;
    const reply = await this.request(job % this.workers.length, { op: 'digests', job, data, md5 });
    return { sha256: asBuffer(reply.id!), md5: reply.md5 && asBuffer(reply.md5) };
  }

  /** Opens, decompresses and verifies a sealed blob on a worker. */
  async open(sealed: Buffer, loc: BlobLocation): Promise<Buffer> {
    const job = this.nextJob++;
    const owned = sealed.byteOffset === 0 && sealed.byteLength === sealed.buffer.byteLength;
    const data = owned ? sealed : new Uint8Array(sealed);
    const transfer = data.buffer instanceof ArrayBuffer ? [data.buffer] : [];
    const reply = await this.request(
      job % this.workers.length,
      { op: 'open', job, sealed: data, loc },
      transfer,
    );
    return asBuffer(reply.data!);
  }

  async seal(job: number, worker: number): Promise<{ sealed: Buffer; flags: number }> {
    const reply = await this.request(worker, { op: 'seal', job });
    return { sealed: asBuffer(reply.sealed!), flags: reply.flags! };
  }

  drop(job: number, worker: number): void {
    this.workers[worker]!.postMessage({ op: 'drop', job } satisfies BlobWorkerRequest);
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
  }

  private request(
    worker: number,
    msg: BlobWorkerRequest,
    transfer: ArrayBuffer[] = [],
  ): Promise<BlobWorkerReply> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.waiting.set(msg.job, (r) => (r.error ? reject(workerError(r)) : resolve(r)));
      this.workers[worker]!.postMessage(msg, transfer);
    });
  }

  private settle(r: BlobWorkerReply): void {
    const done = this.waiting.get(r.job);
    this.waiting.delete(r.job);
    done?.(r);
  }

  private fail(err: Error): void {
    this.failure = err;
    for (const done of this.waiting.values()) done({ job: 0, error: err.message });
    this.waiting.clear();
  }
}

/**
 * One worker per core: the main thread's share (reading, chunking, index lookups) is
 * light next to hashing and compression, and the OS schedules it between them.
 */
function defaultWorkerCount(): number {
  return Math.max(1, availableParallelism());
}

/**
 * The compiled worker script. Under Vitest this module runs from `src/*.ts`, where no
 * worker script exists, so it uses the build in `dist/` (`npm test` builds first).
 */
function workerScript(): URL {
  const here = new URL('./blob-worker.js', import.meta.url);
  if (!import.meta.url.endsWith('.ts')) return here;
  return new URL(here.href.replace('/src/repo/', '/dist/src/repo/'));
}

/** A Buffer over the same memory (Buffer.from(Uint8Array) would copy). */
function asBuffer(a: Uint8Array): Buffer {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}

/** Errors cross the thread boundary as text and code; rebuild the CairnError. */
function workerError(r: BlobWorkerReply): Error {
  return r.code ? new CairnError(r.error!, r.code) : new Error(r.error);
}
