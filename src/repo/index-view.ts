import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Level } from 'level';
import type { Sealer } from '../crypto/index.js';
import { CairnError } from '../errors.js';
import type { Backend } from './backend/backend.js';
import { type BlobLocation, blobTypeCode, blobTypeFromCode, ID_SIZE } from './blob.js';
import { decodeSegment, segmentIdFromName } from './index-segment.js';

/**
 * The local, derived lookup table chunk ID → location, merged from the repository's index
 * segments into LevelDB. Losing it loses nothing: it is rebuilt from segments (and those
 * from packs). LevelDB admits one process per database, so the view lives in numbered
 * slots: a process that finds slot 0 busy (another backup, a mount) opens slot 1, and so on;
 * each slot is brought up to date incrementally, so a second concurrent process pays the
 * full merge only the first time.
 *
 * Keys: `c` ‖ id[32] → u8 type ‖ u8 flags ‖ pack[32] ‖ u32 offset ‖ u32 length ‖ u32 raw;
 *       `s` ‖ segment hex → '' (segment merged).
 */
const MAX_SLOTS = 16;
const BATCH = 8192;
const VALUE_SIZE = 2 + ID_SIZE + 12;

type Db = Level<Buffer, Buffer>;

export interface SyncStats {
  segmentsMerged: number;
  rebuilt: boolean;
}

export class IndexView {
  private constructor(
    private readonly db: Db,
    readonly path: string,
  ) {}

  static async open(dir: string): Promise<IndexView> {
    for (let slot = 0; slot < MAX_SLOTS; slot++) {
      const path = join(dir, `view-${slot}`);
      await mkdir(path, { recursive: true, mode: 0o700 });
      const db: Db = new Level(path, { keyEncoding: 'buffer', valueEncoding: 'buffer' });
      try {
        await db.open();
        return new IndexView(db, path);
      } catch (err) {
        const cause = (err as { cause?: { code?: string } }).cause;
        if (cause?.code === 'LEVEL_LOCKED') continue;
        // A corrupt view is only a cache: throw it away and start again.
        await rm(path, { recursive: true, force: true });
        const fresh: Db = new Level(path, { keyEncoding: 'buffer', valueEncoding: 'buffer' });
        await fresh.open();
        return new IndexView(fresh, path);
      }
    }
    throw new CairnError(`all ${MAX_SLOTS} index view slots in ${dir} are in use`);
  }

  async close(): Promise<void> {
    await this.db.close();
  }

  /**
   * Lookups are synchronous: LevelDB's getSync takes ~8–11 µs here against ~50 µs (130 µs
   * with busy worker threads) for the async get's thread-pool round trip, and a backup of
   * many small files makes one lookup per blob.
   */
  get(id: Uint8Array): BlobLocation | undefined {
    const v = this.db.getSync(chunkKey(id));
    return v === undefined ? undefined : decodeValue(Buffer.from(id), v);
  }

  has(id: Uint8Array): boolean {
    return this.db.getSync(chunkKey(id)) !== undefined;
  }

  /** Records entries of a segment this process has just written. */
  async addSegment(segmentHex: string, entries: readonly BlobLocation[]): Promise<void> {
    for (let i = 0; i < entries.length; i += BATCH) {
      const ops = entries.slice(i, i + BATCH).map((e) => put(chunkKey(e.id), encodeValue(e)));
      if (i + BATCH >= entries.length) ops.push(put(segmentKey(segmentHex), Buffer.alloc(0)));
      await this.db.batch(ops);
    }
    if (entries.length === 0) await this.db.put(segmentKey(segmentHex), Buffer.alloc(0));
  }

  /**
   * Brings the view up to date with the repository's segments. When a merged segment has
   * disappeared (prune replaced it), the view is rebuilt from scratch, because its entries
   * may point into deleted packs.
   */
  async sync(backend: Backend, sealer: Sealer): Promise<SyncStats> {
    const listed = new Set<string>();
    for await (const o of backend.list('index')) {
      const h = segmentIdFromName(o.name);
      if (h) listed.add(h);
    }
    const merged = await this.mergedSegments();
    const rebuilt = [...merged].some((h) => !listed.has(h));
    if (rebuilt) {
      await this.db.clear();
      merged.clear();
    }
    const fresh = [...listed].filter((h) => !merged.has(h));
    const superseded = new Set<string>();
    for (const h of fresh) {
      const seg = decodeSegment(await backend.read(`index/${h}`), sealer, `index ${h.slice(0, 8)}`);
      for (const s of seg.supersedes) superseded.add(s.toString('hex'));
      await this.addSegment(h, seg.entries);
    }
    if ([...superseded].some((h) => listed.has(h) || merged.has(h))) {
      // A newer segment replaces one merged before or just now (an interrupted prune or
      // repair leaves replaced segments behind): start over without the replaced ones.
      await this.db.clear();
      return { segmentsMerged: await this.mergeExcept(backend, sealer, listed), rebuilt: true };
    }
    return { segmentsMerged: fresh.length, rebuilt };
  }

  private async mergeExcept(backend: Backend, sealer: Sealer, listed: Set<string>) {
    const segments = new Map<string, BlobLocation[]>();
    const superseded = new Set<string>();
    for (const h of listed) {
      const seg = decodeSegment(await backend.read(`index/${h}`), sealer, `index ${h.slice(0, 8)}`);
      for (const s of seg.supersedes) superseded.add(s.toString('hex'));
      segments.set(h, seg.entries);
    }
    let n = 0;
    for (const [h, entries] of segments) {
      // A replaced segment is recorded as merged with no entries, so the next sync neither
      // adds its entries nor starts over because of it again.
      await this.addSegment(h, superseded.has(h) ? [] : entries);
      if (!superseded.has(h)) n++;
    }
    return n;
  }

  private async mergedSegments(): Promise<Set<string>> {
    const out = new Set<string>();
    const opts = { gte: Buffer.from('s'), lt: Buffer.from('t') };
    for await (const key of this.db.keys(opts)) out.add(key.subarray(1).toString('latin1'));
    return out;
  }

  /** Every blob location, in ID order. */
  async *entries(): AsyncGenerator<BlobLocation> {
    const opts = { gte: Buffer.from('c'), lt: Buffer.from('d') };
    for await (const [k, v] of this.db.iterator(opts)) yield decodeValue(k.subarray(1), v);
  }
}

function put(key: Buffer, value: Buffer) {
  return { type: 'put' as const, key, value };
}

function chunkKey(id: Uint8Array): Buffer {
  const k = Buffer.allocUnsafe(1 + ID_SIZE);
  k[0] = 0x63; // 'c'
  k.set(id, 1);
  return k;
}

function segmentKey(h: string): Buffer {
  return Buffer.from(`s${h}`, 'latin1');
}

function encodeValue(e: BlobLocation): Buffer {
  const v = Buffer.allocUnsafe(VALUE_SIZE);
  v[0] = blobTypeCode(e.type);
  v[1] = e.flags;
  v.set(e.pack, 2);
  v.writeUInt32LE(e.offset, 2 + ID_SIZE);
  v.writeUInt32LE(e.length, 6 + ID_SIZE);
  v.writeUInt32LE(e.rawLength, 10 + ID_SIZE);
  return v;
}

function decodeValue(id: Buffer, v: Buffer): BlobLocation {
  const type = blobTypeFromCode(v[0]!);
  if (type === undefined || v.length !== VALUE_SIZE) {
    throw new CairnError('local index view is damaged; delete the cache directory', 'Damaged');
  }
  return {
    id: Buffer.from(id),
    type,
    flags: v[1]!,
    pack: Buffer.from(v.subarray(2, 2 + ID_SIZE)),
    offset: v.readUInt32LE(2 + ID_SIZE),
    length: v.readUInt32LE(6 + ID_SIZE),
    rawLength: v.readUInt32LE(10 + ID_SIZE),
  };
}
