import { CairnError, shortHex } from '../errors.js';
import { childPath, displayText, rootPath } from '../files/paths.js';
import { decodeTree } from '../files/tree.js';
import { decodeSegment } from '../image/manifest.js';
import { hex } from '../repo/blob.js';
import type { Repository } from '../repo/repository.js';
import type { StoredSnapshot } from '../repo/snapshot.js';
import { readAnyCopy } from './blobs.js';
import type { Damage } from './check-packs.js';
import type { BlobTable } from './scratch.js';
import { decodeImageManifest, walkSnapshot } from './walk.js';

/** Paths listed per snapshot and cause; more are counted. */
const MAX_PATHS = 20;

/** Why something a snapshot needs is unusable: a pack (hex), `index` (in no pack) or a tree. */
export type Cause = { pack: string } | { index: true } | { malformed: string };

export interface Affected {
  snapshot: string;
  /** Files (`/a/b`), directories (`/a/` when unreadable) or image byte ranges, up to a limit. */
  paths: string[];
  more: number;
}

/** Causes (as JSON keys) → snapshot ID → affected paths. */
export type Attribution = Map<string, { cause: Cause; bySnapshot: Map<string, Affected> }>;

/**
 * Walks every snapshot once over its unique trees and manifest segments, recording for each
 * whether everything below it is usable, then lists, for the snapshots that are not intact,
 * the files and byte ranges that cannot be restored and why. The second walk only descends
 * where the first found damage, so it costs nothing on a healthy repository.
 */
export async function checkSnapshots(
  repo: Repository,
  table: BlobTable,
  damage: Damage,
  snapshots: readonly StoredSnapshot[],
): Promise<{ incomplete: StoredSnapshot[]; attribution: Attribution }> {
  const ctx = new Context(repo, table, damage);
  const bad: StoredSnapshot[] = [];
  for (const snap of snapshots) {
    const ok = await walkSnapshot(snap, {
      read: (id) => ctx.read(id),
      chunk: (id) => ctx.usable(id),
      seen: (id) => table.verdict(id),
      record: (id, ok) => table.setVerdict(id, ok),
    });
    if (!ok) bad.push(snap);
  }
  const out: Attribution = new Map();
  for (const snap of bad) {
    const add = (cause: Cause, path: string) => attribute(out, cause, snap.id, path);
    if (snap.kind === 'image') await ctx.imageDamage(snap, add);
    else await ctx.treeDamage(Buffer.from(snap.root, 'hex'), rootPath(), add);
  }
  return { incomplete: bad, attribution: out };
}

function attribute(out: Attribution, cause: Cause, snapshot: string, path: string): void {
  const key = JSON.stringify(cause);
  let c = out.get(key);
  if (!c) {
    c = { cause, bySnapshot: new Map() };
    out.set(key, c);
  }
  let a = c.bySnapshot.get(snapshot);
  if (!a) {
    a = { snapshot, paths: [], more: 0 };
    c.bySnapshot.set(snapshot, a);
  }
  if (a.paths.length < MAX_PATHS) a.paths.push(path);
  else a.more++;
}

type Add = (cause: Cause, path: string) => void;

class Context {
  constructor(
    private readonly repo: Repository,
    private readonly table: BlobTable,
    private readonly damage: Damage,
  ) {}

  usable(id: Buffer): boolean {
    return this.table.copies(id).some((c) => this.damage.usable(c));
  }

  /** Reads from a usable copy; a copy found damaged on the way is recorded as such. */
  read(id: Buffer): Promise<Buffer> {
    const copies = this.table.copies(id).filter((c) => this.damage.usable(c));
    return readAnyCopy(this.repo, id, copies, (loc, err) => this.damage.addCopy(loc, err.message));
  }

  /** Why blob `id` is unusable: its copies' packs, or `index` when it has none. */
  causes(id: Buffer): Cause[] {
    const copies = this.table.copies(id);
    if (copies.length === 0) return [{ index: true }];
    return [...new Set(copies.map((c) => hex(c.pack)))].map((pack) => ({ pack }));
  }

  /** Reads and decodes an object, or reports it (as `path`) and returns undefined. */
  private async open<T>(id: Buffer, path: string, add: Add, decode: (b: Buffer) => T) {
    let bytes: Buffer;
    try {
      bytes = await this.read(id);
    } catch (err) {
      if (!(err instanceof CairnError) || err.code === 'Fatal') throw err;
      for (const c of this.causes(id)) add(c, path);
      return undefined;
    }
    try {
      return decode(bytes);
    } catch (err) {
      if (!(err instanceof CairnError)) throw err;
      add({ malformed: err.message }, path);
      return undefined;
    }
  }

  async treeDamage(id: Buffer, path: Buffer, add: Add): Promise<void> {
    if (this.table.verdict(id) !== false) return;
    const dir = `${displayText(path).replace(/\/$/, '')}/`;
    const tree = await this.open(id, dir, add, (b) => decodeTree(b, `tree ${shortHex(id)}`));
    for (const e of tree?.entries ?? []) {
      const child = childPath(path, e.name);
      if (e.subtree) await this.treeDamage(e.subtree, child, add);
      const bad = (e.content ?? []).filter((p) => p.id && !this.usable(p.id));
      const causes = new Map(
        bad.flatMap((p) => this.causes(p.id!)).map((c) => [JSON.stringify(c), c]),
      );
      for (const c of causes.values()) add(c, displayText(child));
    }
  }

  async imageDamage(snap: StoredSnapshot, add: Add): Promise<void> {
    const root = Buffer.from(snap.root, 'hex');
    const name = snap.name ?? 'image';
    const ranges = new RangeMerger(name, add);
    const manifest = await this.open(root, `${name} (manifest)`, add, (b) =>
      decodeImageManifest(b, snap),
    );
    for (const ref of manifest?.segments ?? []) {
      if (this.table.verdict(ref.id) !== false) continue;
      const segAdd: Add = (cause) => ranges.add(cause, ref.start, ref.length);
      const what = `image manifest segment ${shortHex(ref.id)}`;
      const seg = await this.open(ref.id, '', segAdd, (b) => decodeSegment(b, ref, what));
      for (let i = 0; seg && i < seg.count; i++) {
        const { id, length } = seg.entry(i);
        if (!id || this.usable(Buffer.from(id))) continue;
        for (const c of this.causes(Buffer.from(id)))
          ranges.add(c, ref.start + seg.starts[i]!, length);
      }
    }
    ranges.flush();
  }
}

/** Adjacent damaged byte ranges of an image with the same cause, reported as one. */
class RangeMerger {
  private readonly open = new Map<string, { cause: Cause; start: number; end: number }>();

  constructor(
    private readonly name: string,
    private readonly report: Add,
  ) {}

  add(cause: Cause, start: number, length: number): void {
    const key = JSON.stringify(cause);
    const r = this.open.get(key);
    if (r && r.end === start) {
      r.end += length;
      return;
    }
    if (r) this.emit(r);
    this.open.set(key, { cause, start, end: start + length });
  }

  flush(): void {
    for (const r of this.open.values()) this.emit(r);
    this.open.clear();
  }

  private emit(r: { cause: Cause; start: number; end: number }): void {
    this.report(r.cause, `${this.name} bytes ${r.start}-${r.end - 1}`);
  }
}
