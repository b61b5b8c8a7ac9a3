import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { CairnError } from '../errors.js';
import { asBuffer } from '../util/bytes.js';
import type { BlobLocation } from './blob.js';
import { workerModule } from './blob-task.js';
import type {
  BlobWorkerInit,
  BlobWorkerReply,
  BlobWorkerRequest,
  PlacedBlob,
} from './blob-worker.js';

/** A task run on a worker: its result and the IDs and lengths of the blobs it holds there. */
export interface TaskRun {
  job: number;
  worker: number;
  result: unknown;
  ids: Buffer[];
  lengths: number[];
}

/**
 * A worker's young generation. What a worker allocates (cipher output, hashes, messages) dies
 * young, so V8's default (48 MiB here) only let garbage pile up: with 4 MiB, peak RSS of
 * the bench tree's restore 338 → 269 MB and of its backup 350/355 → 301/262 MB, with no
 * change in CPU time or duration (backup 32.6–34.9 s user either way, alternate runs).
 */
const YOUNG_GENERATION_MB = 4;

/**
 * Worker threads that hash, compress and seal blobs so the main thread only reads and
 * chunks. A blob is sent to a worker once; the worker keeps it until the main thread,
 * having checked the index, asks it to seal or drop it.
 */
export class BlobWorkerPool {
  private readonly workers: Worker[] = [];
  private readonly waiting = new Map<number, (r: BlobWorkerReply) => void>();
  /** Task runs on each worker not yet sealed or dropped: a new run goes to the least busy. */
  private readonly runs: number[] = [];
  private nextJob = 1;
  /** Task-module imports sent to the workers, each settling once that import has. */
  private readonly loading: Promise<unknown>[] = [];
  private nextTask = 1;
  private failure: Error | undefined;

  constructor(init: BlobWorkerInit, size = defaultWorkerCount()) {
    for (let i = 0; i < size; i++) {
      const w = new Worker(workerModule('./blob-worker.js', import.meta.url), {
        workerData: init,
        resourceLimits: { maxYoungGenerationSizeMb: YOUNG_GENERATION_MB },
      });
      w.on('message', (r: BlobWorkerReply) => this.settle(r));
      w.on('error', (err) => this.fail(err));
      this.workers.push(w);
      this.runs.push(0);
    }
  }

  /** Imports a task module on every worker (see blob-task.ts); returns the task's number. */
  loadTask(module: URL, init: unknown): number {
    const task = this.nextTask++;
    for (let worker = 0; worker < this.workers.length; worker++) {
      const msg = { op: 'load', job: this.nextJob++, task, module: module.href, init } as const;
      this.loading.push(this.request(worker, msg).catch(() => undefined));
    }
    return task;
  }

  /**
   * Runs a task on the worker with the fewest runs outstanding (a run may wait on a disk
   * while the other worker computes). Its blobs stay there until `sealSome` or `drop`.
   */
  async produce(task: number, args: unknown): Promise<TaskRun> {
    const job = this.nextJob++;
    // Ties go round: with runs short enough that none is left outstanding, the first
    // worker would otherwise get every run.
    const n = this.workers.length;
    let worker = job % n;
    for (let k = 1; k < n; k++) {
      const w = (job + k) % n;
      if (this.runs[w]! < this.runs[worker]!) worker = w;
    }
    this.runs[worker]!++;
    try {
      const reply = await this.request(worker, { op: 'produce', job, task, args });
      const all = asBuffer(reply.ids!);
      const ids: Buffer[] = [];
      for (let at = 0; at < all.length; at += 32) ids.push(all.subarray(at, at + 32));
      return { job, worker, result: reply.result, ids, lengths: reply.lengths! };
    } catch (err) {
      this.runs[worker]!--;
      throw err;
    }
  }

  /**
   * Seals the blobs of a `produce` job at `keep` and drops the others. The sealed blobs are
   * written into `into` (shared memory) when they fit there; the views returned may lie in it.
   */
  async sealSome(job: number, worker: number, keep: number[], into?: Buffer): Promise<Sealed[]> {
    try {
      const reply = await this.request(worker, { op: 'seal-some', job, keep, into });
      return sealedBlobs(reply, into);
    } finally {
      this.runs[worker]!--;
    }
  }

  /** Drops a `produce` job's blobs: none of them is to be stored. */
  dropRun(job: number, worker: number): void {
    this.runs[worker]!--;
    this.drop(job, worker);
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

  /**
   * Opens blobs of one pack that lie in `sealed`, each at `at`, writing each plaintext at
   * `to` in `into` (shared memory): resolves to each blob's failure, if any (see OpenTarget
   * in blob-worker.ts). `sealed` in shared memory is handed over without a copy; anything
   * else is copied, the span the blobs lie in, so the caller may reuse it at once.
   */
  async openInto(sealed: Buffer, blobs: readonly OpenBlob[], into: Buffer): Promise<OpenFailures> {
    const job = this.nextJob++;
    let base = 0;
    let source: Uint8Array = sealed;
    const ids = new Uint8Array(32 * blobs.length);
    const pack = new Uint8Array(blobs[0]!.loc.pack);
    const transfer = [ids.buffer, pack.buffer];
    if (!(sealed.buffer instanceof SharedArrayBuffer)) {
      base = Math.min(...blobs.map((b) => b.at));
      const end = Math.max(...blobs.map((b) => b.at + b.loc.length));
      const copy = new Uint8Array(sealed.subarray(base, end));
      transfer.push(copy.buffer);
      source = copy;
    }
    const placed = blobs.map(({ at, to, loc }, i): PlacedBlob => {
      ids.set(loc.id, 32 * i);
      const { offset, length, rawLength, flags } = loc;
      return { at: at - base, to, offset, length, rawLength, flags };
    });
    const msg = { op: 'open-into', job, sealed: source, into, pack, ids, blobs: placed } as const;
    const reply = await this.request(job % this.workers.length, msg, transfer);
    return reply.failures!.map((f) => (f ? workerError(f) : undefined));
  }

  /** Seals a hashed blob, into `into` when it fits (as `sealSome`). */
  async seal(job: number, worker: number, into?: Buffer): Promise<Sealed> {
    const reply = await this.request(worker, { op: 'seal', job, into });
    return sealedBlobs(reply, into)[0]!;
  }

  drop(job: number, worker: number): void {
    this.workers[worker]!.postMessage({ op: 'drop', job } satisfies BlobWorkerRequest);
  }

  async close(): Promise<void> {
    // Not while a worker imports a task module: terminating a thread while a native addon
    // it imports (fs-xattr) initialises aborts the whole process.
    await Promise.all(this.loading);
    await Promise.all(this.workers.map((w) => w.terminate()));
  }

  private request(
    worker: number,
    msg: BlobWorkerRequest & { job: number },
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

/** A blob to open (see `openInto`): at `at` in the sealed bytes, to `to` in the output. */
export interface OpenBlob {
  at: number;
  to: number;
  loc: BlobLocation;
}

/** For each blob opened, why it could not be, or undefined. */
export type OpenFailures = (Error | undefined)[];

export interface Sealed {
  sealed: Buffer;
  flags: number;
}

/** The sealed blobs of a reply, one after another in `into` or in the transferred buffer. */
function sealedBlobs(reply: BlobWorkerReply, into: Buffer | undefined): Sealed[] {
  const all = reply.sealed ? asBuffer(reply.sealed) : into!;
  let at = 0;
  return reply.lengths!.map((length, i) => {
    const sealed = all.subarray(at, at + length);
    at += length;
    return { sealed, flags: reply.flags![i]! };
  });
}

/** Errors cross the thread boundary as text and code; rebuild the CairnError. */
function workerError(r: Pick<BlobWorkerReply, 'error' | 'code'>): Error {
  return r.code ? new CairnError(r.error!, r.code) : new Error(r.error);
}
