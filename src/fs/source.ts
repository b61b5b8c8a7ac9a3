import { CairnError } from '../errors.js';
import type { ReadAt } from '../image/partitions.js';
import type { ByteSource, Extent } from './types.js';

/**
 * Bounded access to a volume's bytes. Every pointer a filesystem gives us is checked here
 * before anything is read, so a hostile structure can make a read fail but never reach
 * outside the volume or allocate an absurd buffer.
 */

/** Largest single read: metadata (an ext block, an NTFS record, a FAT slice) or content. */
export const MAX_READ = 16 << 20;
/** File content is read in pieces of this size, a few ahead of the consumer. */
const PIECE = 1 << 20;
const READ_AHEAD = 4;
const ZEROS = Buffer.alloc(PIECE);

export function damaged(message: string): CairnError {
  return new CairnError(message, 'Damaged');
}

/** A filesystem was recognised, but its structures do not let us read it. */
export class UnreadableFilesystem extends CairnError {
  constructor(
    readonly fsType: string,
    why: string,
  ) {
    super(`${fsType} filesystem cannot be read: ${why}`, 'Damaged');
  }
}

/** Exactly `length` bytes at `offset`, or a Damaged error naming `what`. */
export async function readExact(
  src: ByteSource,
  offset: number,
  length: number,
  what: string,
): Promise<Buffer> {
  const valid =
    Number.isSafeInteger(offset) &&
    Number.isSafeInteger(length) &&
    offset >= 0 &&
    length >= 0 &&
    length <= MAX_READ &&
    offset + length <= src.size;
  if (!valid) throw damaged(`${what} (${offset}+${length}) lies outside the volume`);
  const buf = await src.read(offset, length);
  if (buf.length !== length) throw damaged(`${what}: short read at ${offset}`);
  return buf;
}

/** Bytes [start, start + length) of `src` as a source of their own (clamped to `src`). */
export function windowSource(src: ByteSource, start: number, length: number): ByteSource {
  const size = Math.max(0, Math.min(length, src.size - start));
  return {
    size,
    read(offset: number, len: number): Promise<Buffer> {
      const end = Math.min(offset + len, size);
      if (offset < 0 || end <= offset) return Promise.resolve(Buffer.alloc(0));
      return src.read(start + offset, end - offset);
    },
  };
}

/** The `ReadAt` the image layer's parsers take: clamped reads, never outside `src`. */
export function readAtOf(src: ByteSource): ReadAt {
  return (offset, length) => {
    const end = Math.min(offset + length, src.size);
    if (!(offset >= 0 && end > offset)) return Promise.resolve(Buffer.alloc(0));
    return src.read(offset, end - offset);
  };
}

/**
 * Extents cut to exactly `size` bytes: longer ones are truncated, and a missing tail is a
 * hole when `tailIsHole` (ext: blocks past the last extent were never written), an error
 * otherwise.
 */
export async function* fitExtents(
  extents: AsyncIterable<Extent> | Iterable<Extent>,
  size: number,
  tailIsHole: boolean,
  what: string,
): AsyncGenerator<Extent> {
  let pos = 0;
  for await (const e of extents) {
    if (pos >= size) return;
    const length = Math.min(e.length, size - pos);
    yield length === e.length ? e : cut(e, length);
    pos += length;
  }
  if (pos < size && !tailIsHole) throw damaged(`${what}: content ends ${size - pos} bytes early`);
  if (pos < size) yield { kind: 'hole', length: size - pos };
}

function cut(e: Extent, length: number): Extent {
  if (e.kind === 'inline') return { kind: 'inline', length, data: e.data.subarray(0, length) };
  return { ...e, length };
}

/** Merges neighbouring extents that continue each other (adjacent data, or two holes). */
export async function* mergeExtents(extents: AsyncIterable<Extent>): AsyncGenerator<Extent> {
  let held: Extent | undefined;
  for await (const e of extents) {
    if (held?.kind === 'hole' && e.kind === 'hole') {
      held = { kind: 'hole', length: held.length + e.length };
    } else if (
      held?.kind === 'data' &&
      e.kind === 'data' &&
      held.offset + held.length === e.offset
    ) {
      held = { kind: 'data', offset: held.offset, length: held.length + e.length };
    } else {
      if (held) yield held;
      held = e;
    }
  }
  if (held) yield held;
}

export interface ContentPiece {
  /** Offset in the file. */
  offset: number;
  data: Buffer;
}

/**
 * A file's bytes in order from its extents: data read in pieces, READ_AHEAD pieces in
 * flight so the image's chunk fetches overlap the consumer; holes as slices of one shared
 * zero buffer (never to be written to), or skipped when `skipHoles`.
 */
export async function* readContent(
  src: ByteSource,
  extents: AsyncIterable<Extent>,
  skipHoles = false,
): AsyncGenerator<ContentPiece> {
  const pending: Promise<ContentPiece>[] = [];
  let pos = 0;
  try {
    for await (const e of extents) {
      if (e.kind === 'hole' && skipHoles) {
        pos += e.length;
        continue;
      }
      for (let done = 0; done < e.length; done += PIECE) {
        const piece = pieceOf(src, e, done, Math.min(PIECE, e.length - done), pos + done);
        piece.catch(() => undefined);
        pending.push(piece);
        if (pending.length >= READ_AHEAD) yield await pending.shift()!;
      }
      pos += e.length;
    }
    while (pending.length > 0) yield await pending.shift()!;
  } finally {
    await Promise.allSettled(pending);
  }
}

/** Bytes [from, from + n) of an extent, placed at `at` in the file. */
function pieceOf(src: ByteSource, e: Extent, from: number, n: number, at: number) {
  if (e.kind === 'data') {
    return readExact(src, e.offset + from, n, 'file data').then((data) => ({ offset: at, data }));
  }
  const data = e.kind === 'inline' ? e.data.subarray(from, from + n) : ZEROS.subarray(0, n);
  return Promise.resolve({ offset: at, data });
}

/**
 * Random access into content laid out by extents (an NTFS attribute: the MFT itself, a
 * directory's index blocks): bytes at any offset, found by binary search.
 */
export class ExtentMap {
  private readonly starts: number[] = [];
  readonly size: number;

  constructor(
    private readonly src: ByteSource,
    readonly extents: Extent[],
  ) {
    let pos = 0;
    for (const e of extents) {
      this.starts.push(pos);
      pos += e.length;
    }
    this.size = pos;
  }

  async read(offset: number, length: number, what: string): Promise<Buffer> {
    if (!(offset >= 0 && length >= 0 && offset + length <= this.size && length <= MAX_READ)) {
      throw damaged(`${what} (${offset}+${length}) lies outside its attribute`);
    }
    const out = Buffer.alloc(length);
    let i = this.indexOf(offset);
    for (let pos = offset; pos < offset + length; i++) {
      const e = this.extents[i]!;
      const from = pos - this.starts[i]!;
      const n = Math.min(e.length - from, offset + length - pos);
      if (e.kind === 'data') {
        (await readExact(this.src, e.offset + from, n, what)).copy(out, pos - offset);
      } else if (e.kind === 'inline') e.data.copy(out, pos - offset, from, from + n);
      pos += n;
    }
    return out;
  }

  /** The extent holding `offset`: the last one starting at or before it. */
  private indexOf(offset: number): number {
    let lo = 0;
    let hi = this.starts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.starts[mid]! <= offset) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }
}
