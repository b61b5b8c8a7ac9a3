import { CairnError, shortHex } from '../errors.js';
import { Semaphore } from '../util/semaphore.js';
import { type Backend, readRangeInto } from './backend/backend.js';
import { type BlobLocation, hex } from './blob.js';
import { MAX_BLOB_SIZE } from './blob-codec.js';
import { type BlobStore, checkChunkLength } from './blob-store.js';
import { packName } from './pack.js';
import { SharedBufferPool, SharedCarver } from './shared-buffers.js';
import type { OpenBlob } from './worker-pool.js';

/**
 * Reads close neighbours in a pack together: blobs further apart than this are read apart.
 * Backup stores a directory's small files one after the other, so one read serves many;
 * but the chunks of a larger file it read meanwhile lie between them. The bytes skipped over
 * are kept (RECENT_BYTES) for the requests that soon come for them, but few come in time:
 * restoring the bench tree (826 MB of packs) read 1304 MB in 2012 reads with gaps up to
 * 1 MiB (44 MB then served from the kept ranges), 933 MB in 2950 reads with 256 KiB, 864 MB
 * in 3535 with 64 KiB, 853 MB in 5285 with none. On a local disk a read costs little, so
 * 64 KiB; on remote storage each read is a request, so 1 MiB.
 */
const MAX_GAP = 64 << 10;
const REMOTE_MAX_GAP = 1 << 20;
/**
 * Pack bytes kept after a read, so blobs read over but not requested yet cost no read. With
 * 64 KiB gaps the bench tree restore served 1564 blobs (3.5 MB) from 4 MiB kept, 2270
 * (4.9 MB) from 32 MiB, at 33 MB more peak RSS: 4 MiB. The 1 MiB gaps of remote storage
 * skip more (44 MB served from 32 MiB kept).
 */
const RECENT_BYTES = 4 << 20;
const REMOTE_RECENT_BYTES = 32 << 20;
/** Largest coalesced read: bounds the memory of one read and the wait for its first blob. */
const MAX_RUN = 8 << 20;
/** Coalesced reads in flight. */
const READS_IN_FLIGHT = 4;
/**
 * Plaintext opened per worker message at most: about one default chunk, so the chunks of an
 * image restore's half window (8) go to both workers. Image restore of 1000 MiB, alternate
 * runs: 3.56–5.18 s with 4 MiB (a half window to one worker), 3.29–3.48 s with 1 MiB,
 * 3.16–3.47 s with 512 KiB.
 */
const OPEN_BYTES = 512 << 10;
/**
 * Shared memory is carved (see SharedCarver) out of pooled buffers, each reused once all
 * carved out of it is released: read ranges (up to MAX_RUN) and kept ranges out of
 * READ_BUFFERS, plaintext lent to the restore out of PLAIN_BUFFERS (all it has outstanding).
 */
const READ_BUFFER_SIZE = MAX_RUN;
const READ_BUFFERS = READS_IN_FLIGHT;
const PLAIN_BUFFER_SIZE = 4 << 20;
const PLAIN_BUFFERS = 16;
/**
 * Packs kept after a whole-pack read (see ChunkFetcherOptions.wholePacks): ~6 packs. Large
 * files read while small files stream past them in batches spread over up to four data
 * packs, which with the tree pack overflowed a 64 MiB cache: restoring the S3 bench tree
 * (242 MB, 8 data packs) read one pack whole and 15 ranges of it again (31 GETs, 4.8 s in
 * the bench); with 96 MiB each pack is read once (8 data GETs) at 21 MB more peak RSS
 * (335 -> 356 MB).
 */
const WHOLE_PACK_BYTES = 96 << 20;

export interface ChunkFetcherOptions {
  /**
   * Read each pack whole, once, and serve every blob asked of it from memory: for restoring
   * everything from remote storage, where each read is a request and backup order (restore
   * order) filled each pack. A pack asked of again after it was dropped (a chunk shared with
   * much later content) is read by ranges, as without this option.
   */
  wholePacks?: boolean;
}

interface Request {
  id: Buffer;
  /** The length the referrer recorded (a tree's chunk list), to check; trees have none. */
  length: number | undefined;
  /** The caller gives the memory back (`release`); else it gets a copy of its own. */
  lent: boolean;
  resolve: (data: Buffer) => void;
  reject: (err: unknown) => void;
}

/** A located request; `at`: where its sealed bytes lie in the buffer it is opened from. */
interface Item {
  req: Request;
  loc: BlobLocation;
  at: number;
}

interface Run {
  pack: Buffer;
  start: number;
  end: number;
  items: Item[];
}

/**
 * Chunk reads for restores (of files and of images). Requests made in the same event-loop
 * turn are located, grouped by pack and sorted by offset; neighbours are fetched with one
 * backend read into shared memory, then opened and checked on the worker threads, several
 * a message, into shared memory lent to the caller (see `lend`): decryption and hashing use
 * every core, and the main thread only reads and writes, neither copying the bytes to the
 * workers nor collecting a buffer per chunk (profiled: those, and opening blobs under
 * 64 KiB itself, were 7.8 s of its 23.7 s in a restore of the bench tree). Restoring 20 000
 * small files thus takes a few dozen reads instead of 20 000 (measured: the per-read
 * open/pread/close was half of a small-file restore), and a large file's chunks, requested
 * a group at a time, come in a few reads per pack: on S3 each read is a request.
 */
export class ChunkFetcher {
  private queue: Request[] = [];
  private readonly reads = new Semaphore(READS_IN_FLIGHT);
  private readonly readBuffers = new SharedBufferPool(READ_BUFFER_SIZE, READ_BUFFERS);
  private readonly readSpace = new SharedCarver(this.readBuffers);
  private readonly plainBuffers = new SharedBufferPool(PLAIN_BUFFER_SIZE, PLAIN_BUFFERS);
  private readonly plainSpace = new SharedCarver(this.plainBuffers);
  private readonly recent: RecentRanges;
  private readonly packs: WholePacks | undefined;
  private readonly maxGap: number;

  constructor(
    private readonly backend: Backend,
    private readonly store: BlobStore,
    opts: ChunkFetcherOptions = {},
  ) {
    const remote = backend.traits?.remote === true;
    this.maxGap = remote ? REMOTE_MAX_GAP : MAX_GAP;
    this.recent = new RecentRanges(remote ? REMOTE_RECENT_BYTES : RECENT_BYTES, this.readBuffers);
    if (opts.wholePacks) {
      this.packs = new WholePacks(WHOLE_PACK_BYTES, (pack) =>
        this.reads.run(() => this.backend.read(packName(pack))),
      );
    }
  }

  /** The blob `id`, in memory of the caller's own: a chunk `length` bytes long, or a tree. */
  get(id: Buffer, length?: number): Promise<Buffer> {
    return this.request(id, length, false);
  }

  /**
   * The chunk `id`, `length` bytes long, in memory lent to the caller: give it back with
   * `release` once done with it (memory not given back is left to the collector).
   */
  lend(id: Buffer, length: number): Promise<Buffer> {
    return this.request(id, length, true);
  }

  /** Gives back a chunk `lend` returned; its memory is reused. */
  release(data: Uint8Array): void {
    this.plainBuffers.release(data);
  }

  /**
   * Lends all of a file's chunks now (undefined for holes), so they are read together. Each
   * is to be released as `lend`'s.
   */
  prefetch(
    parts: readonly { id: Buffer | null; length: number }[],
  ): (Promise<Buffer> | undefined)[] {
    return parts.map((part) => {
      if (!part.id) return undefined;
      const p = this.lend(part.id, part.length);
      // Awaited when the file is written; never, if creating the file failed.
      p.catch(() => undefined);
      return p;
    });
  }

  private request(id: Buffer, length: number | undefined, lent: boolean): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      if (this.queue.length === 0) setImmediate(() => void this.flush());
      this.queue.push({ id, length, lent, resolve, reject });
    });
  }

  private async flush(): Promise<void> {
    const batch = this.queue;
    this.queue = [];
    const located = await Promise.all(batch.map((req) => this.locate(req)));
    const kept = new Map<Buffer, Item[]>();
    const whole = new Map<Promise<Buffer>, Item[]>();
    const found: Item[] = [];
    for (const item of located) {
      if (!item) continue;
      const range = this.recent.find(item.loc);
      const pack = range ? undefined : this.packs?.get(item.loc.pack);
      if (range) addTo(kept, range.bytes, { ...item, at: range.at });
      else if (pack) addTo(whole, pack, { ...item, at: item.loc.offset });
      else found.push(item);
    }
    const work: Promise<void>[] = [];
    for (const [bytes, items] of kept) {
      work.push(this.readBuffers.holding(bytes, () => this.open(bytes, items)));
    }
    for (const [pack, items] of whole) work.push(this.openFrom(pack, items));
    found.sort((a, b) => Buffer.compare(a.loc.pack, b.loc.pack) || a.loc.offset - b.loc.offset);
    const runs: Run[] = [];
    for (const item of found) {
      const { pack, offset, length } = item.loc;
      const run = runs.at(-1);
      const end = offset + length;
      if (run?.pack.equals(pack) && offset - run.end <= this.maxGap && end - run.start <= MAX_RUN) {
        run.end = Math.max(run.end, end);
        item.at = offset - run.start;
        run.items.push(item);
      } else runs.push({ pack, start: offset, end, items: [item] });
    }
    for (const run of runs) work.push(this.reads.run(() => this.read(run)));
    await Promise.all(work);
  }

  private async locate(req: Request): Promise<Item | undefined> {
    try {
      const loc = await this.store.locate(req.id);
      if (loc) return { req, loc, at: 0 };
      req.reject(new CairnError(`blob ${shortHex(req.id)} is not in the index`, 'Damaged'));
    } catch (err) {
      req.reject(err);
    }
    return undefined;
  }

  /** Reads a run into shared memory (kept a while, see RecentRanges) and opens its blobs. */
  private async read(run: Run): Promise<void> {
    const length = run.end - run.start;
    const bytes = this.readSpace.take(length);
    try {
      await readRangeInto(this.backend, packName(run.pack), { offset: run.start, length }, bytes);
      this.recent.add(run.pack, run.start, bytes);
      await this.open(bytes, run.items);
    } catch (err) {
      for (const { req } of run.items) req.reject(err);
    } finally {
      this.readBuffers.release(bytes);
    }
  }

  private async openFrom(pack: Promise<Buffer>, items: Item[]): Promise<void> {
    let bytes: Buffer;
    try {
      bytes = await pack;
    } catch (err) {
      for (const { req } of items) req.reject(err);
      return;
    }
    await this.open(bytes, items);
  }

  /** Opens blobs lying in `sealed` on the workers, up to OPEN_BYTES of plaintext a message. */
  private async open(sealed: Buffer, items: Item[]): Promise<void> {
    const groups: Item[][] = [];
    let size = OPEN_BYTES;
    for (const item of items) {
      const room = roomFor(item.loc);
      if (size + room > OPEN_BYTES) {
        groups.push([]);
        size = 0;
      }
      groups.at(-1)!.push(item);
      size += room;
    }
    await Promise.all(groups.map((group) => this.openGroup(sealed, group)));
  }

  private async openGroup(sealed: Buffer, group: Item[]): Promise<void> {
    const blobs: OpenBlob[] = [];
    let to = 0;
    for (const { loc, at } of group) {
      blobs.push({ at, to, loc });
      to += roomFor(loc);
    }
    const into = this.plainSpace.take(to);
    try {
      const failures = await this.store.openInto(sealed, blobs, into);
      for (const [i, { req, loc }] of group.entries()) {
        const failure = failures[i];
        if (failure) req.reject(failure);
        else this.deliver(req, into.subarray(blobs[i]!.to, blobs[i]!.to + loc.rawLength));
      }
    } catch (err) {
      for (const { req } of group) req.reject(err);
    } finally {
      this.plainBuffers.release(into);
    }
  }

  /** Resolves `req` with its plaintext, lent (retained for it) or copied. */
  private deliver(req: Request, data: Buffer): void {
    try {
      if (req.length !== undefined) checkChunkLength(data, req.id, req.length);
    } catch (err) {
      req.reject(err);
      return;
    }
    if (!req.lent) {
      // Not Buffer.from, whose copy out of shared memory ran at 1764 MiB/s against 2790 for
      // this (1 MiB, one core); in the mount's read-ahead it was 0.59 s of the main thread's
      // 1.9 s for 300 MB. A 300 MB file read through the mount with dd: 124-157 MB/s (median
      // 139 of 8) before, 141-192 (median 158 of 5) after; restic mount 124-140.
      const own = Buffer.allocUnsafeSlow(data.length);
      data.copy(own);
      req.resolve(own);
      return;
    }
    this.plainBuffers.retain(data);
    req.resolve(data);
  }
}

/** Plaintext room for a blob: none for one too large to accept (its worker refuses it). */
function roomFor(loc: BlobLocation): number {
  return loc.rawLength > MAX_BLOB_SIZE ? 0 : loc.rawLength;
}

function addTo<K>(map: Map<K, Item[]>, key: K, item: Item): void {
  const items = map.get(key);
  if (items) items.push(item);
  else map.set(key, [item]);
}

/**
 * Whole packs, read once each and kept up to a total size (least recently used dropped
 * first, never one still being read); `get` gives undefined for a pack dropped before, to
 * be read by ranges.
 */
class WholePacks {
  private readonly kept = new Map<string, { bytes: Promise<Buffer>; size: number }>();
  private readonly dropped = new Set<string>();
  private size = 0;

  constructor(
    private readonly limit: number,
    private readonly read: (pack: Buffer) => Promise<Buffer>,
  ) {}

  get(pack: Buffer): Promise<Buffer> | undefined {
    const key = hex(pack);
    const kept = this.kept.get(key);
    if (kept) {
      // Most recently used last: a pack still in use (the trees') outlives those done with.
      this.kept.delete(key);
      this.kept.set(key, kept);
      return kept.bytes;
    }
    if (this.dropped.has(key)) return undefined;
    const entry = { bytes: this.read(pack), size: 0 };
    this.kept.set(key, entry);
    entry.bytes.then(
      (b) => {
        entry.size = b.length;
        this.size += b.length;
        this.trim();
      },
      () => this.kept.delete(key),
    );
    return entry.bytes;
  }

  private trim(): void {
    for (const [key, entry] of this.kept) {
      if (this.size <= this.limit) return;
      if (entry.size === 0) continue;
      this.kept.delete(key);
      this.dropped.add(key);
      this.size -= entry.size;
    }
  }
}

/**
 * The last pack ranges read, up to a total size (oldest dropped first), each retained in the
 * pool its shared memory was carved from until dropped.
 */
class RecentRanges {
  private readonly ranges: { pack: Buffer; start: number; bytes: Buffer }[] = [];
  private size = 0;

  constructor(
    private readonly limit: number,
    private readonly pool: SharedBufferPool,
  ) {}

  add(pack: Buffer, start: number, bytes: Buffer): void {
    this.pool.retain(bytes);
    this.ranges.push({ pack, start, bytes });
    this.size += bytes.length;
    while (this.size > this.limit) {
      const dropped = this.ranges.shift()!.bytes;
      this.size -= dropped.length;
      this.pool.release(dropped);
    }
  }

  /** The range holding the stored bytes of `loc`, and where they lie in it. */
  find(loc: BlobLocation): { bytes: Buffer; at: number } | undefined {
    for (let i = this.ranges.length - 1; i >= 0; i--) {
      const r = this.ranges[i]!;
      const at = loc.offset - r.start;
      if (at >= 0 && at + loc.length <= r.bytes.length && r.pack.equals(loc.pack)) {
        return { bytes: r.bytes, at };
      }
    }
    return undefined;
  }
}
