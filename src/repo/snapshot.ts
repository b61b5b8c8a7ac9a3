import type { IdHasher, Sealer } from '../crypto/index.js';
import { CairnError } from '../errors.js';
import type { Backend } from './backend/backend.js';
import { hex } from './blob.js';

/**
 * A snapshot document: `snapshots/<id>` holds seal(JSON); the ID is the (keyed) hash of the
 * JSON, so it names the content without revealing it.
 */
export interface Snapshot {
  time: string;
  hostname: string;
  username: string;
  kind: 'files' | 'image';
  /** File snapshots: the absolute source paths. */
  paths?: string[];
  /** Image snapshots: the image's name. */
  name?: string;
  tags: string[];
  parent?: string;
  /** Hex ID of the root tree (files) or image manifest (image). */
  root: string;
  /** Logical size in bytes: file bytes, or the image's full size. */
  size: number;
  summary?: Record<string, number>;
  /** Free-form extra facts, e.g. an image's partition table. */
  extra?: Record<string, unknown>;
}

export interface StoredSnapshot extends Snapshot {
  id: string;
}

export async function saveSnapshot(
  backend: Backend,
  sealer: Sealer,
  hashId: IdHasher,
  snap: Snapshot,
): Promise<string> {
  const json = Buffer.from(JSON.stringify(snap));
  const id = hex(hashId(json));
  try {
    await backend.write(`snapshots/${id}`, sealer.seal(json));
  } catch (err) {
    // Already stored with these very contents (two identical backups finished in the same
    // millisecond): its ID names its contents, so that snapshot is this one.
    const stored = await loadSnapshot(backend, sealer, hashId, id).catch(() => undefined);
    if (!stored) throw err;
  }
  return id;
}

export async function loadSnapshot(
  backend: Backend,
  sealer: Sealer,
  hashId: IdHasher,
  id: string,
): Promise<StoredSnapshot> {
  const what = `snapshot ${id.slice(0, 8)}`;
  const json = sealer.open(await backend.read(`snapshots/${id}`), what);
  if (hex(hashId(json)) !== id) {
    throw new CairnError(`${what} is damaged: content does not match its ID`, 'Damaged');
  }
  let snap: Snapshot;
  try {
    snap = JSON.parse(json.toString('utf8')) as Snapshot;
  } catch {
    throw new CairnError(`${what} is damaged: not JSON`, 'Damaged');
  }
  if (
    typeof snap !== 'object' ||
    snap === null ||
    (snap.kind !== 'files' && snap.kind !== 'image') ||
    typeof snap.time !== 'string' ||
    !/^[0-9a-f]{64}$/.test(snap.root ?? '') ||
    !Array.isArray(snap.tags)
  ) {
    throw new CairnError(`${what} is damaged: bad fields`, 'Damaged');
  }
  return { ...snap, id };
}

export async function listSnapshotIds(backend: Backend): Promise<string[]> {
  const ids: string[] = [];
  for await (const o of backend.list('snapshots')) {
    const m = /^snapshots\/([0-9a-f]{64})$/.exec(o.name);
    if (m) ids.push(m[1]!);
  }
  return ids;
}

export interface SnapshotFilter {
  host?: string;
  tags?: string[];
  paths?: string[];
  name?: string;
}

export function matchesFilter(s: Snapshot, f: SnapshotFilter): boolean {
  if (f.host !== undefined && s.hostname !== f.host) return false;
  if (f.tags?.some((t) => !s.tags.includes(t))) return false;
  if (f.paths?.length && !f.paths.every((p) => s.paths?.includes(p))) return false;
  if (f.name !== undefined && s.name !== f.name) return false;
  return true;
}

/** Oldest first, ties broken by ID so the order is stable. */
export function byTime(a: StoredSnapshot, b: StoredSnapshot): number {
  return a.time < b.time ? -1 : a.time > b.time ? 1 : a.id < b.id ? -1 : 1;
}

/** Resolves `latest`, a full ID or a unique prefix of ≥ 4 hex digits. */
export function resolveRef(
  ref: string,
  snapshots: readonly StoredSnapshot[],
  filter: SnapshotFilter = {},
): StoredSnapshot {
  if (ref === 'latest') {
    const matching = snapshots.filter((s) => matchesFilter(s, filter)).sort(byTime);
    const newest = matching.at(-1);
    if (!newest) throw new CairnError('no snapshot matches the filters for "latest"');
    return newest;
  }
  if (!/^[0-9a-f]{4,64}$/.test(ref)) {
    throw new CairnError(`invalid snapshot reference "${ref}": need an ID prefix or "latest"`);
  }
  const found = snapshots.filter((s) => s.id.startsWith(ref));
  if (found.length === 0) throw new CairnError(`no snapshot with ID ${ref}`);
  if (found.length > 1) throw new CairnError(`snapshot reference ${ref} is ambiguous`);
  return found[0]!;
}
