import type { FileHandle } from 'node:fs/promises';
import { open, readFile } from 'node:fs/promises';
import { basename } from 'node:path';
import type { Readable } from 'node:stream';
import { CairnError } from '../errors.js';
import { allocShared } from '../repo/pack.js';
import { SharedBufferPool } from '../repo/shared-buffers.js';
import { ByteRanges, planReads } from './ranges.js';

export type SourceKind = 'file' | 'blockdev' | 'stdin';

/** A piece of the image in order: bytes read, or a run recorded as zeros without reading. */
export type Piece = { data: Buffer } | { zeros: number };

/**
 * 8 MiB reads: per-read overhead (a libuv round trip, a syscall) is noise at this size
 * (a 1 GiB file in page cache reads at ~3 GB/s here, far above what chunking and hashing
 * take), and the one read kept in flight ahead costs little memory.
 */
export const IMAGE_READ_SIZE = 8 << 20;
/**
 * Free runs shorter than this are read through and zeroed rather than skipped: on a disk a
 * seek and a second request cost more than reading a few hundred KiB.
 */
const MIN_SKIP = 256 << 10;
/** Bytes of a stream source kept to find its partition table before chunking starts. */
const STREAM_HEAD = 1 << 20;

/** A pool of buffers for `ImageSource.pieces`, keeping `spare` of them for reuse. */
export function imageReadPool(spare: number): SharedBufferPool {
  return new SharedBufferPool(IMAGE_READ_SIZE, spare);
}

export interface ImageSource {
  readonly kind: SourceKind;
  /** The default image name: the source's base name. */
  readonly name: string;
  /** Full size; undefined for streams until they end. */
  readonly size: number | undefined;
  /** Logical sector size of a block device (MBR addresses count in it); else 512. */
  readonly sectorSize: number;
  /** Bytes read from the source so far. */
  readonly bytesRead: number;
  /** Up to `length` bytes at `offset` (fewer at the end; streams: only within their head). */
  readAt(offset: number, length: number): Promise<Buffer>;
  /**
   * The image in order; `free` ranges become zeros without being read (seekable only).
   * Reads go to `buffers` (see `imageReadPool`) when given; the caller releases each piece.
   */
  pieces(free?: ByteRanges, buffers?: SharedBufferPool): AsyncIterable<Piece>;
  /**
   * Makes a pending `pieces` step fail at once: a stream may wait for input forever (file
   * reads finish by themselves; the caller checks its signal between them).
   */
  abort?(): void;
  close(): Promise<void>;
}

/** Opens a regular file or block device by path, or wraps a stream (stdin). */
export async function openSource(source: string | Readable, name?: string): Promise<ImageSource> {
  if (typeof source !== 'string') {
    if (!name) throw new CairnError('an image read from stdin needs a name (--name)', 'Usage');
    return new StreamSource(source, name);
  }
  const fh = await open(source, 'r');
  try {
    const st = await fh.stat();
    if (st.isFile()) return new FileSource(fh, 'file', basename(source), st.size, 512);
    if (st.isBlockDevice()) {
      const { size, sectorSize } = await deviceGeometry(fh, st.rdev);
      return new FileSource(fh, 'blockdev', basename(source), size, sectorSize);
    }
  } catch (err) {
    await fh.close();
    throw err;
  }
  await fh.close();
  throw new CairnError(`${source} is neither a regular file nor a block device`, 'Usage');
}

/** Reads exactly `length` bytes at `offset`, fewer only at end of file. */
export async function readFully(fh: FileHandle, buf: Buffer, offset: number): Promise<number> {
  let done = 0;
  while (done < buf.length) {
    const { bytesRead } = await fh.read(buf, done, buf.length - done, offset + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return done;
}

/**
 * A block device's size from sysfs (sectors × 512, whatever the logical sector size), or
 * where sysfs is missing by probing: a read past the end returns nothing.
 */
export async function deviceSize(fh: FileHandle, rdev: number): Promise<number> {
  return (await deviceGeometry(fh, rdev)).size;
}

async function deviceGeometry(fh: FileHandle, rdev: number) {
  const dev = BigInt(rdev);
  const major = Number(((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn));
  const minor = Number((dev & 0xffn) | ((dev >> 12n) & ~0xffn));
  const sys = `/sys/dev/block/${major}:${minor}`;
  const read = (name: string) => readFile(`${sys}/${name}`, 'utf8').then((t) => Number(t.trim()));
  // Partitions have no queue/ of their own; their disk's sector size is in ../queue.
  const sectorSize = await read('queue/logical_block_size')
    .catch(() => read('../queue/logical_block_size'))
    .catch(() => 512);
  const size = await read('size').then(
    (sectors) => sectors * 512,
    () => probeSize(fh),
  );
  return { size, sectorSize };
}

async function probeSize(fh: FileHandle): Promise<number> {
  const byte = Buffer.alloc(1);
  const readable = async (pos: number) => (await fh.read(byte, 0, 1, pos)).bytesRead === 1;
  let hi = 512;
  while (await readable(hi - 1)) hi *= 2;
  let lo = hi / 2;
  if (!(await readable(0))) return 0;
  // Invariant: byte lo - 1 is readable, byte hi - 1 is not.
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if (await readable(mid - 1)) lo = mid;
    else hi = mid;
  }
  return lo;
}

class FileSource implements ImageSource {
  bytesRead = 0;

  constructor(
    private readonly fh: FileHandle,
    readonly kind: SourceKind,
    readonly name: string,
    readonly size: number,
    readonly sectorSize: number,
  ) {}

  async readAt(offset: number, length: number): Promise<Buffer> {
    const buf = Buffer.alloc(Math.max(0, Math.min(length, this.size - offset)));
    return buf.subarray(0, await readFully(this.fh, buf, offset));
  }

  async *pieces(free = new ByteRanges(), buffers?: SharedBufferPool): AsyncGenerator<Piece> {
    let ahead: Promise<Piece> | undefined;
    for (const step of planReads(this.size, free, IMAGE_READ_SIZE, MIN_SKIP)) {
      const next: Promise<Piece> =
        step.kind === 'zeros'
          ? Promise.resolve({ zeros: step.length })
          : this.readStep(step.offset, step.length, step.zero, buffers);
      next.catch(() => undefined);
      if (ahead) yield await ahead;
      ahead = next;
    }
    if (ahead) yield await ahead;
  }

  private async readStep(
    offset: number,
    length: number,
    zero: [number, number][],
    buffers?: SharedBufferPool,
  ) {
    // Shared memory lets chunks reach the hashing workers without a copy.
    const buf =
      buffers && length <= buffers.size ? buffers.take().subarray(0, length) : allocShared(length);
    const got = await readFully(this.fh, buf, offset);
    this.bytesRead += got;
    if (got < length) {
      throw new CairnError(`${this.name} ended early: ${offset + got} of ${this.size} bytes`);
    }
    for (const [s, e] of zero) buf.fill(0, s, e);
    return { data: buf };
  }

  close(): Promise<void> {
    return this.fh.close();
  }
}

class StreamSource implements ImageSource {
  readonly kind = 'stdin';
  readonly sectorSize = 512;
  size: number | undefined;
  bytesRead = 0;
  private readonly iter: AsyncIterator<Buffer>;
  private head: Buffer | undefined;

  constructor(
    private readonly stream: Readable,
    readonly name: string,
  ) {
    this.iter = stream[Symbol.asyncIterator]();
    // Errors (an abort among them) can come while nobody waits on the iterator, which
    // would make them unhandled; the iterator still reports them to the next read.
    stream.on('error', () => undefined);
  }

  async readAt(offset: number, length: number): Promise<Buffer> {
    const head = await this.loadHead();
    return head.subarray(Math.min(offset, head.length), Math.min(offset + length, head.length));
  }

  async *pieces(free?: ByteRanges): AsyncGenerator<Piece> {
    if (free?.count) throw new CairnError('--used-only needs a seekable source, not a stream');
    const head = await this.loadHead();
    if (head.length > 0) yield { data: head };
    for (;;) {
      const r = await this.iter.next();
      if (r.done) break;
      this.bytesRead += r.value.length;
      yield { data: r.value };
    }
    this.size = this.bytesRead;
  }

  private async loadHead(): Promise<Buffer> {
    if (this.head) return this.head;
    const parts: Buffer[] = [];
    let n = 0;
    while (n < STREAM_HEAD) {
      const r = await this.iter.next();
      if (r.done) break;
      parts.push(r.value);
      n += r.value.length;
    }
    this.bytesRead += n;
    this.head = Buffer.concat(parts);
    return this.head;
  }

  abort(): void {
    this.stream.destroy(new CairnError('interrupted', 'Interrupted'));
  }

  async close(): Promise<void> {
    this.stream.destroy();
  }
}
