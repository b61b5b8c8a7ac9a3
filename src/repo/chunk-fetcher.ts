import { CairnError, shortHex } from '../errors.js';
import { Semaphore } from '../util/semaphore.js';
import type { Backend } from './backend/backend.js';
import { type BlobLocation, hex } from './blob.js';
import { type BlobStore, checkChunkLength } from './blob-store.js';
import { packName } from './pack.js';

/**
 * Reads close neighbours in a pack together: blobs further apart than this are read apart.
 * Backup stores a directory's small files one after the other, so one read serves many;
 * but the chunks of a larger file it read meanwhile lie between them. The bytes skipped over
 * are kept (RECENT_BYTES) for the requests that soon come for them.
 */
const MAX_GAP = 1 << 20;
/** Pack bytes kept after a read, so blobs read over but not requested yet cost no read. */
const RECENT_BYTES = 32 << 20;
/** Largest coalesced read: bounds the memory of one read and the wait for its first blob. */
const MAX_RUN = 8 << 20;
/** Coalesced reads in flight. */
const READS_IN_FLIGHT = 4;
/** Packs kept after a whole-pack read (see ChunkFetcherOptions.wholePacks): ~4 packs. */
const WHOLE_PACK_BYTES = 64 << 20;

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
  resolve: (data: Buffer) => void;
  reject: (err: unknown) => void;
}

interface Run {
  pack: Buffer;
  start: number;
  end: number;
  items: { req: Request; loc: BlobLocation }[];
}

/**
 * Chunk reads for restores (of files and of images). Requests made in the same event-loop
 * turn are located, grouped by pack and sorted by offset; neighbours are fetched with one backend read, then opened
 * and checked one by one as BlobStore.get does (blobs from 64 KiB up on its worker
 * threads, so decryption and hashing use every core). Restoring 20 000 small files thus
 * takes a few dozen reads instead of 20 000 (measured: the per-read open/pread/close was half
 * of a small-file restore), and a large file's chunks, requested a group at a time, come in
 * a few reads per pack: on S3 each read is a request.
 */
export class ChunkFetcher {
  private queue: Request[] = [];
  private readonly reads = new Semaphore(READS_IN_FLIGHT);
  private readonly recent = new RecentRanges(RECENT_BYTES);
  private readonly packs: WholePacks | undefined;

  constructor(
    private readonly backend: Backend,
    private readonly store: BlobStore,
    opts: ChunkFetcherOptions = {},
  ) {
    if (opts.wholePacks) {
      this.packs = new WholePacks(WHOLE_PACK_BYTES, (pack) =>
        this.reads.run(() => this.backend.read(packName(pack))),
      );
    }
  }

  /** The blob `id`: a chunk its tree or manifest says is `length` bytes long, or a tree. */
  get(id: Buffer, length?: number): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      if (this.queue.length === 0) setImmediate(() => void this.flush());
      this.queue.push({ id, length, resolve, reject });
    });
  }

  /** Requests all of a file's chunks now (undefined for holes), so they are read together. */
  prefetch(
    parts: readonly { id: Buffer | null; length: number }[],
  ): (Promise<Buffer> | undefined)[] {
    return parts.map((part) => {
      if (!part.id) return undefined;
      const p = this.get(part.id, part.length);
      // Awaited when the file is written; never, if creating the file failed.
      p.catch(() => undefined);
      return p;
    });
  }

  private async flush(): Promise<void> {
    const batch = this.queue;
    this.queue = [];
    const runs: Run[] = [];
    const located = await Promise.all(batch.map((req) => this.locate(req)));
    const found: Run['items'] = [];
    for (const item of located) {
      if (!item) continue;
      const kept = this.recent.find(item.loc);
      const whole = kept ? undefined : this.packs?.get(item.loc.pack);
      if (kept) void this.open(item, kept);
      else if (whole) void this.openFrom(item, whole);
      else found.push(item);
    }
    found.sort((a, b) => Buffer.compare(a.loc.pack, b.loc.pack) || a.loc.offset - b.loc.offset);
    for (const item of found) {
      const { pack, offset, length } = item.loc;
      const run = runs.at(-1);
      const end = offset + length;
      if (run?.pack.equals(pack) && offset - run.end <= MAX_GAP && end - run.start <= MAX_RUN) {
        run.end = Math.max(run.end, end);
        run.items.push(item);
      } else runs.push({ pack, start: offset, end, items: [item] });
    }
    await Promise.all(runs.map((run) => this.reads.run(() => this.read(run))));
  }

  private async locate(req: Request): Promise<Run['items'][number] | undefined> {
    try {
      const loc = await this.store.locate(req.id);
      if (loc) return { req, loc };
      req.reject(new CairnError(`blob ${shortHex(req.id)} is not in the index`, 'Damaged'));
    } catch (err) {
      req.reject(err);
    }
    return undefined;
  }

  private async read(run: Run): Promise<void> {
    let bytes: Buffer;
    try {
      const range = { offset: run.start, length: run.end - run.start };
      bytes = await this.backend.read(packName(run.pack), range);
    } catch (err) {
      for (const { req } of run.items) req.reject(err);
      return;
    }
    this.recent.add(run.pack, run.start, bytes);
    await Promise.all(
      run.items.map((item) => {
        const at = item.loc.offset - run.start;
        return this.open(item, bytes.subarray(at, at + item.loc.length));
      }),
    );
  }

  private async openFrom(item: Run['items'][number], pack: Promise<Buffer>): Promise<void> {
    let bytes: Buffer;
    try {
      bytes = await pack;
    } catch (err) {
      item.req.reject(err);
      return;
    }
    const { offset, length } = item.loc;
    await this.open(item, bytes.subarray(offset, offset + length));
  }

  private async open({ req, loc }: Run['items'][number], sealed: Buffer): Promise<void> {
    try {
      req.resolve(checkLength(await this.store.open(sealed, loc), req));
    } catch (err) {
      req.reject(err);
    }
  }
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

/** The last pack ranges read, up to a total size; oldest dropped first. */
class RecentRanges {
  private readonly ranges: { pack: Buffer; start: number; bytes: Buffer }[] = [];
  private size = 0;

  constructor(private readonly limit: number) {}

  add(pack: Buffer, start: number, bytes: Buffer): void {
    this.ranges.push({ pack, start, bytes });
    this.size += bytes.length;
    while (this.size > this.limit) this.size -= this.ranges.shift()!.bytes.length;
  }

  /** The stored bytes of `loc`, when a kept range holds them. */
  find(loc: BlobLocation): Buffer | undefined {
    for (let i = this.ranges.length - 1; i >= 0; i--) {
      const r = this.ranges[i]!;
      const at = loc.offset - r.start;
      if (at >= 0 && at + loc.length <= r.bytes.length && r.pack.equals(loc.pack)) {
        return r.bytes.subarray(at, at + loc.length);
      }
    }
    return undefined;
  }
}

function checkLength(data: Buffer, req: Request): Buffer {
  return req.length === undefined ? data : checkChunkLength(data, req.id, req.length);
}
