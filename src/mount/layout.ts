import { isExtended, type Partition } from '../image/partitions.js';
import type { Repository } from '../repo/repository.js';
import { byTime, listSnapshotIds, loadSnapshot, type StoredSnapshot } from '../repo/snapshot.js';

/**
 * The directories above the snapshots:
 *
 *   ids/<short-id>/                     every snapshot by ID
 *   snapshots/<time>_<short-id>/        by time, oldest first in `ls`; `latest` → the newest
 *   hosts/<host>/<time>_<short-id>/     by host; `latest` → that host's newest
 *   tags/<tag>/<time>_<short-id>/       by tag;  `latest` → the newest with that tag
 *
 * <time> is the snapshot's time in UTC to the second, `2026-11-26T08:00:00Z`: ISO 8601 as
 * `snapshots --json` prints it (less the milliseconds), sorting by name sorts by time, and
 * it reads the same in every time zone. The only byte a name cannot hold is `/` (and NUL):
 * hosts and tags with one show it as `\x2f`.
 */
export type VNode = VirtualDir | VirtualLink | SnapshotNode;

export interface VirtualDir {
  type: 'vdir';
  mtimeMs: number;
  children: Map<string, VNode>;
}

export interface VirtualLink {
  type: 'vlink';
  mtimeMs: number;
  target: string;
}

export interface SnapshotNode {
  type: 'snapshot';
  snap: StoredSnapshot;
  mtimeMs: number;
}

/** Short IDs have at least this many hex digits, more where two snapshots share them. */
const SHORT_ID = 8;

/** `2026-11-26T08:00:00Z` for a snapshot time (ISO 8601, any zone or precision). */
export function timeName(time: string): string {
  const ms = Date.parse(time);
  if (Number.isNaN(ms)) return safeName(time);
  return `${new Date(ms).toISOString().slice(0, 19)}Z`;
}

/** A host or tag as one path component. */
export function safeName(text: string): string {
  const name = text.replace(/[/\0]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
  if (name === '' || name === '.' || name === '..') return `${name}_`;
  return name;
}

/** The shortest prefix of each ID (at least SHORT_ID digits) that no other ID shares. */
export function shortIds(ids: readonly string[]): Map<string, string> {
  const sorted = [...ids].sort();
  const out = new Map<string, string>();
  const common = (a = '', b = '') => {
    let i = 0;
    while (i < a.length && a[i] === b[i]) i++;
    return i;
  };
  for (const [i, id] of sorted.entries()) {
    const shared = Math.max(common(id, sorted[i - 1]), common(id, sorted[i + 1]));
    out.set(id, id.slice(0, Math.max(SHORT_ID, shared + 1)));
  }
  return out;
}

/** The whole tree above the snapshots, from a list of them. */
export function buildLayout(
  snapshots: readonly StoredSnapshot[],
  emptyMtimeMs: number,
): VirtualDir {
  const sorted = [...snapshots].sort(byTime);
  const short = shortIds(sorted.map((s) => s.id));
  const dir = (): VirtualDir => ({ type: 'vdir', mtimeMs: emptyMtimeMs, children: new Map() });
  const root = dir();
  const ids = dir();
  const all = dir();
  const hosts = dir();
  const tags = dir();
  root.children.set('ids', ids).set('snapshots', all).set('hosts', hosts).set('tags', tags);
  const sub = (parent: VirtualDir, name: string): VirtualDir => {
    let d = parent.children.get(name);
    if (d?.type !== 'vdir') {
      d = dir();
      parent.children.set(name, d);
    }
    return d;
  };
  for (const snap of sorted) {
    const mtimeMs = Date.parse(snap.time) || 0;
    const node: SnapshotNode = { type: 'snapshot', snap, mtimeMs };
    const name = `${timeName(snap.time)}_${short.get(snap.id)}`;
    ids.children.set(short.get(snap.id)!, node);
    const places = [all, sub(hosts, safeName(snap.hostname))];
    for (const tag of new Set(snap.tags)) places.push(sub(tags, safeName(tag)));
    // Oldest first: each `latest` ends up naming the newest snapshot of its directory.
    for (const place of places) {
      place.children.set(name, node);
      // Re-inserted, so `latest` is listed after the snapshots.
      place.children.delete('latest');
      place.children.set('latest', { type: 'vlink', mtimeMs, target: name });
    }
  }
  stampTimes(root);
  return root;
}

/** A directory's mtime is that of the newest snapshot below it. */
function stampTimes(dir: VirtualDir): number {
  if (dir.children.size === 0) return dir.mtimeMs;
  let newest = 0;
  for (const child of dir.children.values()) {
    newest = Math.max(newest, child.type === 'vdir' ? stampTimes(child) : child.mtimeMs);
  }
  dir.mtimeMs = newest;
  return newest;
}

/** What an image snapshot's directory holds: raw bytes, or the files inside them. */
export type ImageEntry = { kind: 'img'; start: number; size: number } | { kind: 'files' };

/**
 * An image snapshot's directory: the whole image as `<name>.img`; each partition the
 * backup found (not MBR extended containers, which hold no filesystem) as a window onto it,
 * `<name>-part<N>.img`; and, when `withFiles` (a filesystem inside is readable), the files
 * inside as `<name>.files/` (`part<N>/` in it for a partitioned disk).
 */
export function imageEntries(snap: StoredSnapshot, withFiles: boolean): Map<string, ImageEntry> {
  const base = safeName(snap.name ?? 'image');
  const out = new Map<string, ImageEntry>([
    [`${base}.img`, { kind: 'img', start: 0, size: snap.size }],
  ]);
  const parts = snap.extra?.partitions;
  for (const p of Array.isArray(parts) ? (parts as Partition[]) : []) {
    const valid =
      Number.isSafeInteger(p.number) &&
      Number.isSafeInteger(p.start) &&
      Number.isSafeInteger(p.size) &&
      p.start >= 0 &&
      p.start + p.size <= snap.size;
    if (valid && !isExtended(p)) {
      out.set(`${base}-part${p.number}.img`, { kind: 'img', start: p.start, size: p.size });
    }
  }
  if (withFiles) out.set(`${base}.files`, { kind: 'files' });
  return out;
}

/**
 * The repository's snapshots, re-read when older than `refreshMs`. A snapshot is published
 * only after the index view has merged the segments written before it (a backup writes its
 * index before its snapshot), so every blob of a listed snapshot can be found. Only new
 * snapshot documents are read; concurrent callers share one refresh.
 */
export class SnapshotList {
  private layout: VirtualDir;
  private readonly known = new Map<string, StoredSnapshot>();
  /** Snapshot documents that could not be read: reported once, not retried. */
  private readonly broken = new Set<string>();
  private readAt = 0;
  private pending: Promise<VirtualDir> | undefined;

  constructor(
    private readonly repo: Repository,
    private readonly opts: { refreshMs: number; onNotice(message: string): void },
    private readonly startedMs = Date.now(),
  ) {
    this.layout = buildLayout([], startedMs);
  }

  /** The layout, re-read first if it is older than the refresh interval. */
  current(): Promise<VirtualDir> {
    if (Date.now() - this.readAt < this.opts.refreshMs) return Promise.resolve(this.layout);
    this.pending ??= this.refresh().finally(() => {
      this.pending = undefined;
    });
    return this.pending;
  }

  private async refresh(): Promise<VirtualDir> {
    const started = Date.now();
    const { backend, sealer, hashId } = this.repo;
    const ids = await listSnapshotIds(backend);
    const fresh = ids.filter((id) => !this.known.has(id) && !this.broken.has(id));
    const loaded = await Promise.allSettled(
      fresh.map((id) => loadSnapshot(backend, sealer, hashId, id)),
    );
    if (fresh.length > 0) await (await this.repo.indexView()).sync(backend, sealer);
    const listed = new Set(ids);
    for (const id of this.known.keys()) if (!listed.has(id)) this.known.delete(id);
    for (const [i, r] of loaded.entries()) {
      if (r.status === 'fulfilled') this.known.set(r.value.id, r.value);
      else {
        this.broken.add(fresh[i]!);
        this.opts.onNotice(`snapshot ${fresh[i]!.slice(0, 8)} left out: ${errorText(r.reason)}`);
      }
    }
    this.layout = buildLayout([...this.known.values()], this.startedMs);
    this.readAt = started;
    return this.layout;
  }
}

export function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
