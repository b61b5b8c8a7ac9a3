import type { Extent, OpenFile } from '../fs/index.js';
import type { ByteRanges } from '../image/ranges.js';

/** Largest stretch of a file read from each side at once. */
const PIECE = 1 << 20;

/**
 * Whether two versions of a regular file, each inside one of two images, hold the same
 * bytes, reading as little as possible. Outside `changed` (the image byte ranges where the
 * two images differ) both images hold the same bytes, so a stretch stored at the same image
 * offset on both sides is equal unread where it lies outside every changed range, as is a
 * hole on both sides. Only the rest is read, from both sides, and compared.
 */
export async function sameFileContent(
  a: OpenFile,
  b: OpenFile,
  changed: ByteRanges,
): Promise<boolean> {
  if (a.stat.size !== b.stat.size) return false;
  for (const [pos, length] of stretchesToCompare(a.extents, b.extents, a.stat.size, changed)) {
    for (let at = pos; at < pos + length; at += PIECE) {
      const n = Math.min(PIECE, pos + length - at);
      const [x, y] = await Promise.all([a.read(at, n), b.read(at, n)]);
      if (!x.equals(y)) return false;
    }
  }
  return true;
}

/**
 * The stretches `[file offset, length]` of a file of `size` bytes, laid out as `a` on one
 * side and `b` on the other (data offsets in image bytes), that may differ and so must be
 * read: none when both layouts are the same and clear of `changed`. Adjacent stretches are
 * merged, so reads are as large as the layouts allow.
 */
export function* stretchesToCompare(
  a: readonly Extent[],
  b: readonly Extent[],
  size: number,
  changed: ByteRanges,
): Generator<[number, number]> {
  let held: [number, number] | undefined;
  const take = function* (pos: number, length: number): Generator<[number, number]> {
    if (held && held[0] + held[1] === pos) {
      held[1] += length;
      return;
    }
    if (held) yield held;
    held = [pos, length];
  };
  let pos = 0;
  for (const [x, y, n] of alignedPieces(a, b)) {
    for (const [from, length] of differing(x, y, n, changed)) yield* take(pos + from, length);
    pos += n;
  }
  // Layouts that cover less than the size (never from the readers, which fit extents to
  // it) leave a tail nothing vouches for.
  if (pos < size) yield* take(pos, size - pos);
  if (held) yield held;
}

/** An extent seen from `skip` bytes into it. */
type At = { e: Extent; skip: number };

/** Both layouts cut at every extent edge of either: pieces of `n` bytes, side by side. */
function* alignedPieces(a: readonly Extent[], b: readonly Extent[]): Generator<[At, At, number]> {
  let i = 0;
  let j = 0;
  let skipA = 0;
  let skipB = 0;
  while (i < a.length && j < b.length) {
    const x = a[i]!;
    const y = b[j]!;
    const n = Math.min(x.length - skipA, y.length - skipB);
    if (n > 0) yield [{ e: x, skip: skipA }, { e: y, skip: skipB }, n];
    skipA += Math.max(n, 0);
    skipB += Math.max(n, 0);
    if (skipA >= x.length) [i, skipA] = [i + 1, 0];
    if (skipB >= y.length) [j, skipB] = [j + 1, 0];
  }
}

/** Parts `[offset in the piece, length]` of an aligned piece that may differ. */
function* differing(x: At, y: At, n: number, changed: ByteRanges): Generator<[number, number]> {
  if (x.e.kind === 'hole' && y.e.kind === 'hole') return;
  if (x.e.kind === 'data' && y.e.kind === 'data' && x.e.offset + x.skip === y.e.offset + y.skip) {
    const at = x.e.offset + x.skip;
    for (const [s, e] of changed.within(at, at + n)) yield [s - at, e - s];
    return;
  }
  yield [0, n];
}
