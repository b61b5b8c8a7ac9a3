import { CairnError } from '../errors.js';
import { type GearScanner, gearScannerFor } from './gear.js';

/** Chunk size bounds in bytes. `avg` is the FastCDC "normal size" where the mask loosens. */
export interface ChunkerParams {
  min: number;
  avg: number;
  max: number;
}

const MIN_CHUNK = 64;
const MAX_CHUNK = 64 * 1024 * 1024;

/**
 * Chosen with `compareChunkerParams` (bench/chunker.ts, `node dist/bench/chunker.js
 * --params`): 256 MiB of bench/data.ts mixed data, copies with 20 and 200 small (≤ 4 KiB)
 * inserts/deletes/overwrites; "new" is the bytes of a copy in chunks the original lacks,
 * i.e. what a second backup stores. MB/s: 1 GiB of mixed data in 8 MiB reads, one core,
 * median of 5, per CPU-second, all rows in one session (compare rows, not machines).
 *   min/avg/max    chunks  mean     new (20 edits)  new (200 edits)  MB/s
 *   64K/256K/1M      813   322 KiB    6.0 MiB          65.8 MiB       1790
 *   128K/512K/2M     399   657 KiB   11.8 MiB         113.1 MiB       1842
 *   256K/512K/2M     381   688 KiB   12.0 MiB         114.0 MiB       2303  <- default
 *   256K/1M/4M       202  1298 KiB   25.2 MiB         172.8 MiB       1846
 *   512K/1M/8M       188  1394 KiB   25.2 MiB         172.4 MiB       2203  (restic's bounds)
 *   512K/2M/8M       101  2595 KiB   42.1 MiB         215.9 MiB       1739
 * New bytes track the mean chunk size (about one chunk rewritten per edit), so halving the
 * restic-like sizes halves what a small change costs, for twice the chunks: ~1.5 million
 * per TiB, ~120 MB of on-disk index. 64K/256K/1M halves it again but doubles the index
 * once more. min = avg/2 hashes fewer bytes than min = avg/4 (+25% throughput) for a
 * dedup loss of ~2%; a small max also bounds the bytes a chunker holds pending.
 * With these defaults `node dist/bench/chunker.js` measured 2020 MB/s (random) and 2035 MB/s
 * (mixed) in 8 MiB reads, but 950–1210 MB/s in 1 MiB reads, where most chunks span reads
 * and are copied into freshly allocated memory (page faults are costly on this VM).
 */
export const DEFAULT_CHUNKER_PARAMS: Readonly<ChunkerParams> = Object.freeze({
  min: 256 * 1024,
  avg: 512 * 1024,
  max: 2 * 1024 * 1024,
});

/**
 * Normalized chunking level (FastCDC paper, NC-2): the mask has log2(avg) + 2 bits before
 * `avg` and log2(avg) - 2 after, pulling chunk sizes towards `avg`. At 256K/512K/2M on the
 * data above, NC-0/1/2/3 give mean chunks of 838/771/688/632 KiB and 21.0/13.7/12.0/10.7
 * MiB new after 20 edits: NC-2 gets most of the gain without drifting far below `avg`.
 */
const NORMALIZATION = 2;

const isPowerOfTwo = (n: number) => n > 0 && (n & (n - 1)) === 0;

export function validateChunkerParams(p: ChunkerParams): void {
  const { min, avg, max } = p;
  const fail = (why: string): never => {
    throw new CairnError(
      `invalid chunker parameters min=${min} avg=${avg} max=${max}: ${why}`,
      'Usage',
    );
  };
  if (![min, avg, max].every(Number.isSafeInteger)) fail('sizes must be integers');
  if (min < MIN_CHUNK) fail(`min must be at least ${MIN_CHUNK} bytes`);
  if (max > MAX_CHUNK) fail(`max must be at most ${MAX_CHUNK} bytes (64 MiB)`);
  if (!(min < avg && avg < max)) fail('need min < avg < max');
  if (!isPowerOfTwo(avg)) fail('avg must be a power of two');
}

/** Mask with the `bits` highest bits set: in a gear hash they depend on the most bytes. */
const topBits = (bits: number) => (~0 << (32 - bits)) | 0;

interface Plan extends ChunkerParams {
  maskS: number;
  maskL: number;
}

function plan(p: ChunkerParams): Plan {
  validateChunkerParams(p);
  const bits = Math.log2(p.avg);
  return {
    min: p.min,
    avg: p.avg,
    max: p.max,
    maskS: topBits(bits + NORMALIZATION),
    maskL: topBits(bits - NORMALIZATION),
  };
}

/**
 * Finds the end of the chunk starting at `chunkStart` in buf[0, end). `chunkStart` may be
 * negative when the chunk's first bytes arrived in earlier reads; `h` is then the hash over
 * those of its bytes past `min`. Bytes before `min` are never hashed (cut-point skipping).
 * Returns the exclusive end of the chunk, or -1 when `end` comes first (hash in `s.hash`).
 */
function scanChunk(
  s: GearScanner,
  p: Plan,
  buf: Uint8Array,
  chunkStart: number,
  end: number,
  h: number,
): number {
  const from = Math.max(chunkStart + p.min, 0);
  const hardEnd = chunkStart + p.max;
  const to = Math.min(hardEnd, end);
  const normalAt = chunkStart + p.avg;
  s.hash = h;
  let cut = -1;
  if (from < normalAt) cut = s.scan(buf, from, Math.min(normalAt, to), s.hash, p.maskS);
  if (cut < 0) cut = s.scan(buf, Math.max(from, normalAt), to, s.hash, p.maskL);
  if (cut < 0 && hardEnd <= end) {
    s.hash = 0;
    return hardEnd;
  }
  return cut;
}

/**
 * End (exclusive) of the chunk that starts at `start`, looking only at buf[start, end):
 * a content-defined cut, `start + max`, or -1 if `end` is reached first (the caller then
 * either supplies more bytes or, at end of input, takes buf[start, end) as the last chunk).
 */
export function findCut(
  buf: Uint8Array,
  start: number,
  end: number,
  params: ChunkerParams,
  table: Uint32Array,
): number {
  if (!(0 <= start && start <= end && end <= buf.length)) {
    throw new CairnError(`findCut range [${start}, ${end}) outside buffer of ${buf.length}`);
  }
  return scanChunk(gearScannerFor(table), plan(params), buf, start, end, 0);
}

/** Tails held by reference before they are copied together, bounding per-read overhead. */
const MAX_PIECES = 64;

/**
 * Splits a byte stream into content-defined chunks however it is divided into reads.
 *
 * Ownership: `push` keeps references to `data` (chunks inside one read are subarrays of it,
 * and an unfinished tail is held until a later push), so callers must not modify a buffer
 * after pushing it. In return, chunks are never overwritten later and are safe to keep.
 * Pending bytes never exceed `max`. A chunk that spans reads is copied once, when it is
 * complete; reads several times larger than `avg` keep most chunks zero-copy.
 */
export class Chunker {
  readonly #plan: Plan;
  readonly #scanner: GearScanner;
  /** The unfinished chunk: tails of earlier reads, or one subarray of #staging first. */
  #pieces: Uint8Array[] = [];
  #pendingLen = 0;
  /** Where many small tails are gathered (see #hold); reused, so never handed out. */
  #staging: Uint8Array | null = null;
  #hash = 0;

  constructor(params: ChunkerParams, table: Uint32Array) {
    this.#plan = plan(params);
    this.#scanner = gearScannerFor(table);
  }

  /** Returns the chunks completed by `data`, in order. */
  push(data: Uint8Array): Uint8Array[] {
    const out: Uint8Array[] = [];
    if (data.length === 0) return out;
    const s = this.#scanner;
    let start = 0;
    if (this.#pendingLen > 0) {
      const cut = scanChunk(s, this.#plan, data, -this.#pendingLen, data.length, this.#hash);
      if (cut < 0) {
        this.#hold(data, s.hash);
        return out;
      }
      out.push(this.#takePending(data.subarray(0, cut)));
      start = cut;
    }
    for (;;) {
      const cut = scanChunk(s, this.#plan, data, start, data.length, 0);
      if (cut < 0) break;
      out.push(data.subarray(start, cut));
      start = cut;
    }
    if (start < data.length) this.#hold(data.subarray(start), s.hash);
    return out;
  }

  /**
   * Moves the unfinished chunk to the start of `into` and returns its length, so that bytes
   * the caller then places right after it in `into` continue it in place: the chunk it ends
   * is a view of `into`, not a new buffer (see #takePending). The move costs the copy that
   * joining the pieces would have cost. Moves nothing (returns 0) when the chunk would take
   * more than half of `into`.
   */
  carryInto(into: Uint8Array): number {
    const n = this.#pendingLen;
    if (n === 0 || n > into.length / 2) return 0;
    let at = 0;
    for (const piece of this.#pieces) {
      into.set(piece, at);
      at += piece.length;
    }
    this.#pieces = [into.subarray(0, n)];
    return n;
  }

  /** Whether the unfinished chunk still views `buffer` (memory a caller pushed). */
  holds(buffer: ArrayBufferLike): boolean {
    return this.#pieces.some((piece) => piece.buffer === buffer);
  }

  /** Returns the last, possibly short, chunk (none for empty input) and resets the chunker. */
  finish(): Uint8Array[] {
    if (this.#pendingLen === 0) return [];
    return [this.#takePending(new Uint8Array(0))];
  }

  #hold(tail: Uint8Array, hash: number): void {
    this.#hash = hash;
    this.#pieces.push(tail);
    this.#pendingLen += tail.length;
    if (this.#pieces.length > MAX_PIECES) this.#gather();
  }

  /**
   * Copies the pieces into #staging so tiny reads cannot pile up millions of views. The
   * staging buffer doubles as needed (up to max), so each byte is gathered at most once
   * more than it is ever copied.
   */
  #gather(): void {
    const pieces = this.#pieces;
    let staging = this.#staging;
    const inPlace = staging !== null && pieces[0]!.buffer === staging.buffer;
    let at = inPlace ? pieces[0]!.length : 0;
    if (staging === null || staging.length < this.#pendingLen) {
      const size = Math.max(this.#pendingLen, 2 * (staging?.length ?? 0), 64 * 1024);
      const grown = new Uint8Array(Math.min(size, this.#plan.max));
      if (inPlace) grown.set(pieces[0]!);
      staging = this.#staging = grown;
    }
    for (const piece of inPlace ? pieces.slice(1) : pieces) {
      staging.set(piece, at);
      at += piece.length;
    }
    this.#pieces = [staging.subarray(0, at)];
  }

  /**
   * The pending pieces plus `last` as one chunk; empties the pending state. Pieces that lie
   * one after another in the same memory (see carryInto) become one view of it, not a copy.
   */
  #takePending(last: Uint8Array): Uint8Array {
    const pieces = this.#pieces;
    if (last.length > 0) pieces.push(last);
    let chunk: Uint8Array;
    const first = pieces[0]!;
    if (first.buffer !== this.#staging?.buffer && adjacent(pieces)) {
      const length = this.#pendingLen + last.length;
      chunk = pieces.length === 1 ? first : Buffer.from(first.buffer, first.byteOffset, length);
    } else {
      chunk = Buffer.allocUnsafe(this.#pendingLen + last.length);
      let at = 0;
      for (const piece of pieces) {
        chunk.set(piece, at);
        at += piece.length;
      }
    }
    this.#pieces = [];
    this.#pendingLen = 0;
    this.#hash = 0;
    return chunk;
  }
}

/** True when each piece starts where the one before it ends, in the same memory. */
function adjacent(pieces: readonly Uint8Array[]): boolean {
  for (let i = 1; i < pieces.length; i++) {
    const a = pieces[i - 1]!;
    const b = pieces[i]!;
    if (b.buffer !== a.buffer || b.byteOffset !== a.byteOffset + a.length) return false;
  }
  return true;
}

/** Chunks an async byte stream; see `Chunker` for the buffer ownership rules. */
export async function* chunkStream(
  source: AsyncIterable<Uint8Array>,
  params: ChunkerParams,
  table: Uint32Array,
): AsyncGenerator<Uint8Array> {
  const chunker = new Chunker(params, table);
  for await (const data of source) yield* chunker.push(data);
  yield* chunker.finish();
}
