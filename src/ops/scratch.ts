import { randomBytes } from 'node:crypto';
import { mkdir, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Level } from 'level';
import type { BlobLocation } from '../repo/blob.js';
import { blobTypeCode, blobTypeFromCode, ID_SIZE } from '../repo/blob.js';

type Db = Level<Buffer, Buffer>;

/** Writes buffered before one LevelDB batch. */
const BATCH = 8192;

/**
 * A throw-away LevelDB under the cache directory, for what check, prune and stats must know
 * about every blob of a repository (locations, marks, verdicts): memory stays flat however
 * large the repository is. Reads are synchronous (getSync) because the walks make one per
 * blob; writes are buffered and readable before they reach the database.
 */
export class ScratchDb {
  private pending = new Map<string, Buffer>();

  private constructor(
    private readonly db: Db,
    private readonly dir: string,
  ) {}

  static async create(parent: string): Promise<ScratchDb> {
    await removeAbandoned(parent);
    const dir = join(parent, `scratch-${process.pid}-${randomBytes(8).toString('hex')}`);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const db: Db = new Level(dir, { keyEncoding: 'buffer', valueEncoding: 'buffer' });
    await db.open();
    return new ScratchDb(db, dir);
  }

  get(key: Buffer): Buffer | undefined {
    return this.pending.get(key.toString('latin1')) ?? this.db.getSync(key);
  }

  async put(key: Buffer, value: Buffer): Promise<void> {
    this.pending.set(key.toString('latin1'), value);
    if (this.pending.size >= BATCH) await this.flush();
  }

  /** Every key starting with `prefix`, in key order, with its value. */
  async *entries(prefix: Buffer): AsyncGenerator<[Buffer, Buffer]> {
    await this.flush();
    const end = Buffer.from(prefix);
    end[end.length - 1]!++;
    yield* this.db.iterator({ gte: prefix, lt: end });
  }

  async clear(): Promise<void> {
    this.pending.clear();
    await this.db.clear();
  }

  async close(): Promise<void> {
    await this.db.close();
    await rm(this.dir, { recursive: true, force: true });
  }

  private async flush(): Promise<void> {
    if (this.pending.size === 0) return;
    const ops = [...this.pending].map(([k, value]) => ({
      type: 'put' as const,
      key: Buffer.from(k, 'latin1'),
      value,
    }));
    this.pending = new Map();
    await this.db.batch(ops);
  }
}

/** Scratch databases of processes that died (killed during a check or prune) are removed. */
async function removeAbandoned(parent: string): Promise<void> {
  for (const name of await readdir(parent).catch(() => [])) {
    const pid = Number(/^scratch-(\d+)-/.exec(name)?.[1]);
    if (pid && !alive(pid)) await rm(join(parent, name), { recursive: true, force: true });
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Key spaces: copies by blob ID, entries by pack, marks and verdicts by ID. */
const COPIES = 0x6c; // 'l'
const BY_PACK = 0x70; // 'p'
const MARK = 0x75; // 'u'
const VERDICT = 0x76; // 'v'
/** A location without its ID: type, flags, offset, length, rawLength. */
const LOC_SIZE = 14;
const COPY_SIZE = ID_SIZE + LOC_SIZE;

/**
 * The index of a repository as check and prune see it: every copy of every blob (two
 * concurrent backups may both store one), entries grouped by pack, and per-ID marks (used
 * by a snapshot) and verdicts (a tree or manifest segment walked, and whether it is intact).
 */
export class BlobTable {
  constructor(readonly db: ScratchDb) {}

  static async create(parent: string): Promise<BlobTable> {
    return new BlobTable(await ScratchDb.create(parent));
  }

  /** Records a location; the same blob in the same pack twice (listed by two segments) once. */
  async add(loc: BlobLocation): Promise<void> {
    const key = prefixed(COPIES, loc.id);
    const before = this.db.get(key);
    for (let i = 0; before && i < before.length; i += COPY_SIZE) {
      if (loc.pack.equals(before.subarray(i, i + ID_SIZE))) return;
    }
    const copy = Buffer.concat([loc.pack, encodeLoc(loc)]);
    await this.db.put(key, before ? Buffer.concat([before, copy]) : copy);
    await this.db.put(prefixed(BY_PACK, loc.pack, loc.id), encodeLoc(loc));
  }

  /** Every indexed copy of a blob, in the order the segments listed them. */
  copies(id: Buffer): BlobLocation[] {
    const v = this.db.get(prefixed(COPIES, id));
    const out: BlobLocation[] = [];
    for (let i = 0; v && i < v.length; i += COPY_SIZE) {
      out.push(decodeLoc(id, v.subarray(i, i + ID_SIZE), v.subarray(i + ID_SIZE, i + COPY_SIZE)));
    }
    return out;
  }

  /** Indexed entries grouped by pack, packs in ID order. */
  async *packs(): AsyncGenerator<{ pack: Buffer; entries: BlobLocation[] }> {
    let pack: Buffer | undefined;
    let entries: BlobLocation[] = [];
    for await (const [k, v] of this.db.entries(Buffer.from([BY_PACK]))) {
      const p = k.subarray(1, 1 + ID_SIZE);
      if (pack && !pack.equals(p)) {
        yield { pack, entries };
        entries = [];
      }
      pack = Buffer.from(p);
      entries.push(decodeLoc(k.subarray(1 + ID_SIZE), pack, v));
    }
    if (pack) yield { pack, entries };
  }

  /** Marks a blob; true when it was not marked before. */
  async mark(id: Buffer): Promise<boolean> {
    if (this.isMarked(id)) return false;
    await this.db.put(prefixed(MARK, id), Buffer.alloc(0));
    return true;
  }

  isMarked(id: Buffer): boolean {
    return this.db.get(prefixed(MARK, id)) !== undefined;
  }

  verdict(id: Buffer): boolean | undefined {
    const v = this.db.get(prefixed(VERDICT, id));
    return v === undefined ? undefined : v[0] === 1;
  }

  async setVerdict(id: Buffer, ok: boolean): Promise<void> {
    await this.db.put(prefixed(VERDICT, id), Buffer.from([ok ? 1 : 0]));
  }

  close(): Promise<void> {
    return this.db.close();
  }
}

function prefixed(space: number, ...parts: Buffer[]): Buffer {
  return Buffer.concat([Buffer.from([space]), ...parts]);
}

function encodeLoc(loc: BlobLocation): Buffer {
  const b = Buffer.allocUnsafe(LOC_SIZE);
  b[0] = blobTypeCode(loc.type);
  b[1] = loc.flags;
  b.writeUInt32LE(loc.offset, 2);
  b.writeUInt32LE(loc.length, 6);
  b.writeUInt32LE(loc.rawLength, 10);
  return b;
}

function decodeLoc(id: Buffer, pack: Buffer, b: Buffer): BlobLocation {
  return {
    id: Buffer.from(id),
    pack: Buffer.from(pack),
    type: blobTypeFromCode(b[0]!)!,
    flags: b[1]!,
    offset: b.readUInt32LE(2),
    length: b.readUInt32LE(6),
    rawLength: b.readUInt32LE(10),
  };
}
