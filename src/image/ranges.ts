/**
 * Sorted, non-overlapping byte ranges [start, end), appended in order: the unused parts of
 * an image. Plain number arrays instead of objects: a fragmented terabyte filesystem can
 * have millions of free runs.
 */
export class ByteRanges {
  readonly starts: number[] = [];
  readonly ends: number[] = [];
  total = 0;

  get count(): number {
    return this.starts.length;
  }

  /** Appends [start, end); ranges must come in order. Touching ranges are merged. */
  add(start: number, end: number): void {
    if (end <= start) return;
    const n = this.starts.length;
    const last = n > 0 ? this.ends[n - 1]! : -1;
    if (start < last) throw new RangeError(`range [${start}, ${end}) added out of order`);
    if (start === last) this.ends[n - 1] = end;
    else {
      this.starts.push(start);
      this.ends.push(end);
    }
    this.total += end - start;
  }

  /** The parts of the ranges that lie inside [start, end), clipped to it, in order. */
  *within(start: number, end: number): Generator<[number, number]> {
    let lo = 0;
    let hi = this.starts.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.ends[mid]! <= start) lo = mid + 1;
      else hi = mid;
    }
    for (let i = lo; i < this.starts.length && this.starts[i]! < end; i++) {
      yield [Math.max(this.starts[i]!, start), Math.min(this.ends[i]!, end)];
    }
  }

  /** Appends all of `other`, which must lie after every range already here. */
  append(other: ByteRanges): void {
    for (let i = 0; i < other.count; i++) this.add(other.starts[i]!, other.ends[i]!);
  }
}

/** One step of reading an image: bytes to read (then zero `zero` sub-ranges) or zeros. */
export type ReadStep =
  | { kind: 'read'; offset: number; length: number; zero: [number, number][] }
  | { kind: 'zeros'; offset: number; length: number };

/**
 * Plans the reads of an image of `size` bytes whose `free` ranges are to be stored as
 * zeros: free runs of at least `minSkip` bytes are not read at all; shorter ones are read
 * with their neighbours (a separate request costs more than the bytes) and zeroed in the
 * buffer. Reads are at most `maxRead` bytes.
 */
export function* planReads(
  size: number,
  free: ByteRanges,
  maxRead: number,
  minSkip: number,
): Generator<ReadStep> {
  let pos = 0;
  let fi = 0;
  while (pos < size) {
    while (fi < free.count && free.ends[fi]! <= pos) fi++;
    if (fi < free.count && free.starts[fi]! <= pos) {
      const end = Math.min(free.ends[fi]!, size);
      if (end - pos >= minSkip) {
        yield { kind: 'zeros', offset: pos, length: end - pos };
        pos = end;
        continue;
      }
    }
    let end = Math.min(pos + maxRead, size);
    const zero: [number, number][] = [];
    for (let j = fi; j < free.count && free.starts[j]! < end; j++) {
      const s = Math.max(free.starts[j]!, pos);
      const e = Math.min(free.ends[j]!, size);
      if (e - s >= minSkip && s > pos) {
        end = s;
        break;
      }
      zero.push([s - pos, Math.min(e, end) - pos]);
    }
    yield { kind: 'read', offset: pos, length: end - pos, zero };
    pos = end;
  }
}
