import { createCipheriv, createHash } from 'node:crypto';

/*
 * Deterministic benchmark data that looks like a disk or a home directory: blocks of
 * text-like content (words and lines, compresses ~3-4x), incompressible binary content
 * (AES-256-CTR keystream, fast and seedable) and runs of zeros, in blocks of 4 KiB–4 MiB.
 * The same (bytes, seed) always gives the same data, so runs and tools are comparable.
 */

export interface MixedDataOptions {
  /** Fraction of bytes in zero runs (default 0.1). */
  zeros?: number;
  /** Fraction of bytes that are text-like (default 0.45); the rest is random binary. */
  text?: number;
}

const MIN_BLOCK = 4 * 1024;
const MAX_BLOCK = 4 * 1024 * 1024;

/** xorshift32: tiny, fast and good enough to pick block kinds, sizes and words. */
export class Rng {
  #x: number;
  constructor(seed: number) {
    this.#x = (seed ^ 0x9e3779b9) | 0 || 1;
  }
  /** Uniform 32-bit unsigned integer. */
  next(): number {
    let x = this.#x;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.#x = x;
    return x >>> 0;
  }
  /** Uniform in [0, n) for n ≤ 2^32. */
  below(n: number): number {
    return Math.floor((this.next() / 0x1_0000_0000) * n);
  }
  /** Log-uniform in [lo, hi]: many small blocks, and most bytes in large ones. */
  logUniform(lo: number, hi: number): number {
    return Math.round(lo * (hi / lo) ** (this.next() / 0x1_0000_0000));
  }
}

/** Random bytes from AES-256-CTR under a key derived from (seed, stream). */
export function randomBlock(length: number, seed: number, stream: number): Buffer {
  const key = createHash('sha256').update(`cairn bench ${seed} ${stream}`).digest();
  const cipher = createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
  return cipher.update(Buffer.alloc(length));
}

/** A vocabulary with word frequencies skewed like natural language (few words are common). */
function vocabulary(rng: Rng): Buffer[] {
  const words: Buffer[] = [];
  for (let i = 0; i < 4096; i++) {
    const len = 2 + rng.below(4) + rng.below(6);
    let w = '';
    for (let j = 0; j < len; j++) w += String.fromCharCode(97 + rng.below(26));
    words.push(Buffer.from(w));
  }
  return words;
}

function textBlock(length: number, rng: Rng, words: Buffer[]): Buffer {
  const out = Buffer.allocUnsafe(length);
  let pos = 0;
  let lineStart = 0;
  while (pos < length) {
    // u^4 skews towards the start of the vocabulary, roughly Zipf-like.
    const u = rng.next() / 0x1_0000_0000;
    const word = words[Math.floor(u * u * u * u * words.length)]!;
    pos += word.copy(out, pos);
    if (pos >= length) break;
    if (pos - lineStart > 60 + rng.below(40)) {
      out[pos++] = 0x0a;
      lineStart = pos;
      continue;
    }
    if (rng.below(12) === 0 && pos + 1 < length) out[pos++] = 0x2c;
    out[pos++] = 0x20;
  }
  return out;
}

/** The mixed data as a sequence of blocks of varied kinds and sizes. */
export function* mixedBlocks(
  bytes: number,
  seed = 1,
  options: MixedDataOptions = {},
): Generator<Buffer> {
  const zeros = options.zeros ?? 0.1;
  const text = options.text ?? 0.45;
  const rng = new Rng(seed);
  const words = vocabulary(rng);
  let produced = 0;
  for (let stream = 0; produced < bytes; stream++) {
    const size = Math.min(rng.logUniform(MIN_BLOCK, MAX_BLOCK), bytes - produced);
    const u = rng.next() / 0x1_0000_0000;
    if (u < zeros) yield Buffer.alloc(size);
    else if (u < zeros + text) yield textBlock(size, rng, words);
    else yield randomBlock(size, seed, stream);
    produced += size;
  }
}

/** All of `mixedBlocks` in one buffer. */
export function generateMixedData(bytes: number, seed = 1, options?: MixedDataOptions): Buffer {
  const out = Buffer.allocUnsafe(bytes);
  let pos = 0;
  for (const block of mixedBlocks(bytes, seed, options)) pos += block.copy(out, pos);
  return out;
}

/** Replays `data` as reads of `readSize` bytes, `repeat` times (each read a fresh view). */
export async function* readsOf(
  data: Uint8Array,
  readSize = 1024 * 1024,
  repeat = 1,
): AsyncGenerator<Uint8Array> {
  for (let r = 0; r < repeat; r++) {
    for (let off = 0; off < data.length; off += readSize) {
      yield data.subarray(off, Math.min(off + readSize, data.length));
    }
  }
}

export type EditKind = 'insert' | 'delete' | 'overwrite';

export interface MutateOptions {
  /** Number of edits (default 200). */
  edits?: number;
  /** Largest edit in bytes (default 4096); sizes are uniform in [1, maxLength]. */
  maxLength?: number;
  seed?: number;
}

/**
 * A copy of `data` with small inserts, deletes and overwrites at random places, as when a
 * disk image or a set of files changes a little between two backups.
 */
export function mutate(data: Uint8Array, options: MutateOptions = {}): Buffer {
  const { edits = 200, maxLength = 4096, seed = 2 } = options;
  const rng = new Rng(seed);
  const at = Array.from({ length: edits }, () => rng.below(data.length)).sort((a, b) => a - b);
  const kinds: EditKind[] = ['insert', 'delete', 'overwrite'];
  const parts: Uint8Array[] = [];
  let cursor = 0;
  for (const [i, pos] of at.entries()) {
    if (pos < cursor) continue; // overlaps the previous delete or overwrite
    const len = 1 + rng.below(maxLength);
    const kind = kinds[rng.below(3)]!;
    parts.push(data.subarray(cursor, pos));
    if (kind !== 'delete') parts.push(randomBlock(len, seed, -1 - i));
    cursor = kind === 'insert' ? pos : Math.min(pos + len, data.length);
  }
  parts.push(data.subarray(cursor));
  return Buffer.concat(parts);
}
