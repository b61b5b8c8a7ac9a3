import type { Chunker } from '../chunker/index.js';
import { allocShared } from './pack.js';

/**
 * Read buffers in shared memory (chunks reach the hashing workers without a copy), handed
 * back and reused once nothing holds a view of them. Left to the garbage collector they pile
 * up: V8 does not count shared memory towards the pressure that starts a collection, and the
 * main thread's heap stays small, so a 1.8 GB file backup peaked at 479 MiB of dead read
 * buffers (RSS 742 MiB); a collection every 300 ms took a 655 MB backup from 350 to 224 MiB.
 *
 * Counting is by the buffer's memory, so any view of it (a chunk) can retain and release it;
 * views of other memory are ignored, which lets callers treat every chunk alike.
 */
export class SharedBufferPool {
  private readonly free: Buffer[] = [];
  private readonly users = new Map<ArrayBufferLike, number>();

  /** `spare`: buffers kept for reuse; past that, returned ones are left to the collector. */
  constructor(
    readonly size: number,
    private readonly spare = 4,
  ) {}

  /** A `size`-byte buffer with one reference, the caller's. Its old bytes remain. */
  take(): Buffer {
    const buf = this.free.pop() ?? allocShared(this.size);
    this.users.set(buf.buffer, 1);
    return buf;
  }

  /** One more reference to the pool buffer `view` lies in. */
  retain(view: Uint8Array): void {
    const n = this.users.get(view.buffer);
    if (n !== undefined) this.users.set(view.buffer, n + 1);
  }

  /** Keeps the buffer `view` lies in until `work` settles (retained before this returns). */
  async holding<T>(view: Uint8Array, work: () => Promise<T>): Promise<T> {
    this.retain(view);
    try {
      return await work();
    } finally {
      this.release(view);
    }
  }

  /** Drops a reference; with the last, the buffer goes back to the pool. */
  release(view: Uint8Array): void {
    const n = this.users.get(view.buffer);
    if (n === undefined) return;
    if (n > 1) {
      this.users.set(view.buffer, n - 1);
      return;
    }
    this.users.delete(view.buffer);
    if (this.free.length < this.spare) {
      this.free.push(Buffer.from(view.buffer as SharedArrayBuffer, 0, this.size));
    }
  }
}

/**
 * Carves pieces of any size out of a pool's buffers, one after another, so pieces much
 * smaller than a pool buffer share one instead of each holding (and touching) a whole one.
 * A buffer goes back to the pool once every piece of it is released and the carver has moved
 * on to the next; pieces are best released roughly in the order they were taken, as a
 * restore writes what it read, so that no buffer is kept for one piece long outstanding.
 */
export class SharedCarver {
  private current: Buffer | undefined;
  private used = 0;

  constructor(private readonly pool: SharedBufferPool) {}

  /**
   * `size` bytes of shared memory with one reference, the caller's (see the pool's
   * `retain`/`release`). A piece larger than a pool buffer is memory of its own.
   */
  take(size: number): Buffer {
    if (size > this.pool.size) return allocShared(size);
    if (!this.current || this.used + size > this.pool.size) {
      if (this.current) this.pool.release(this.current);
      this.current = this.pool.take();
      this.used = 0;
    }
    const piece = this.current.subarray(this.used, this.used + size);
    this.used += size;
    this.pool.retain(piece);
    return piece;
  }
}

/**
 * The pool buffers a reader pushed into a chunker, each released once the chunker keeps no
 * view of it (it holds an unfinished tail until a later push). The caller must retain the
 * chunks it keeps before calling `settle`.
 */
export class ChunkerFeed {
  private readonly held: Uint8Array[] = [];

  constructor(
    private readonly pool: SharedBufferPool,
    private readonly chunker: Chunker,
  ) {}

  /**
   * A pool buffer of `length` bytes at most, to fill and push. The chunker's unfinished
   * chunk is moved to the start of the pool buffer first (see Chunker.carryInto), so the
   * space returned may be shorter: a chunk then never spans two buffers, and none is copied
   * into fresh memory. Spanning chunks were so copied, then copied again to reach a worker
   * (shared memory does not need to be): for a backup of eight sparse 32 MiB files (2 MiB
   * chunks of zeros, each spanning reads) the main thread's malloc heap peaked at 68 MiB.
   */
  take(length: number): Buffer {
    const buf = this.pool.take();
    this.held.push(buf);
    const carried = this.chunker.carryInto(buf);
    return buf.subarray(carried, carried + Math.min(length, buf.length - carried));
  }

  /** Takes over the caller's reference to the pool buffer `data` views (if it does). */
  adopt(data: Uint8Array): void {
    this.held.push(data);
  }

  /** Chunks `data`, which may be a view of a taken buffer or any other memory. */
  push(data: Uint8Array): Uint8Array[] {
    return this.chunker.push(data);
  }

  finish(): Uint8Array[] {
    return this.chunker.finish();
  }

  /** Releases the buffers the chunker no longer holds. */
  settle(): void {
    for (let i = this.held.length - 1; i >= 0; i--) {
      const data = this.held[i]!;
      if (this.chunker.holds(data.buffer)) continue;
      this.pool.release(data);
      this.held.splice(i, 1);
    }
  }

  /** Releases every buffer: the chunker is finished or abandoned. */
  releaseAll(): void {
    for (const data of this.held) this.pool.release(data);
    this.held.length = 0;
  }
}
