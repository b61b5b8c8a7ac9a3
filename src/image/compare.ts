import type { ManifestIndex } from './manifest-reader.js';

export interface ByteRange {
  offset: number;
  length: number;
}

/**
 * The byte ranges where image B differs from image A, in order and merged. Segments with
 * the same ID at the same offset are skipped without being loaded, so comparing two
 * versions of a large image costs in proportion to what changed. Holes equal holes wherever
 * they lie; chunks are equal when they have the same ID at the same offset. Bytes past the
 * end of the shorter image count as changed.
 */
export async function* changedRanges(
  a: ManifestIndex,
  b: ManifestIndex,
): AsyncGenerator<ByteRange> {
  const end = Math.max(a.size, b.size);
  const common = Math.min(a.size, b.size);
  let pending: ByteRange | undefined;
  const mark = function* (offset: number, length: number): Generator<ByteRange> {
    if (pending && pending.offset + pending.length === offset) {
      pending.length += length;
      return;
    }
    if (pending) yield pending;
    pending = { offset, length };
  };
  let pos = 0;
  while (pos < common) {
    const sa = a.segmentAt(pos);
    const sb = b.segmentAt(pos);
    if (sa.start === sb.start && sa.length === sb.length && sa.id.equals(sb.id)) {
      pos = sa.start + sa.length;
      continue;
    }
    const [ea, eb] = await Promise.all([a.locate(pos), b.locate(pos)]);
    const stop = Math.min(ea.offset + ea.length, eb.offset + eb.length);
    const same =
      (!ea.id && !eb.id) ||
      (ea.id !== null &&
        eb.id !== null &&
        ea.offset === eb.offset &&
        ea.length === eb.length &&
        ea.id.equals(eb.id));
    if (!same) yield* mark(pos, stop - pos);
    pos = stop;
  }
  if (end > common) yield* mark(common, end - common);
  if (pending) yield pending;
}

/** Total bytes of `changedRanges`. */
export async function changedBytes(a: ManifestIndex, b: ManifestIndex): Promise<number> {
  let n = 0;
  for await (const r of changedRanges(a, b)) n += r.length;
  return n;
}
