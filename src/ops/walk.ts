import { CairnError, shortHex } from '../errors.js';
import { decodeTree } from '../files/tree.js';
import {
  decodeManifest,
  decodeSegment,
  type ImageManifest,
  type SegmentRef,
} from '../image/manifest.js';
import type { StoredSnapshot } from '../repo/snapshot.js';

/**
 * What a walk over snapshots needs from its caller. Prune marks what it reaches, check
 * records whether everything below each tree is intact, stats adds up sizes: all three walk
 * the same graph (snapshot → trees → subtrees and data chunks; snapshot → image manifest →
 * manifest segments → data chunks), each tree and manifest segment once across snapshots.
 */
export interface WalkHooks {
  /** A tree or manifest blob's verified bytes; throws a CairnError when it cannot be read. */
  read(id: Buffer): Promise<Buffer>;
  /** A data chunk the snapshot references: whether it is usable. */
  chunk(id: Buffer): boolean | Promise<boolean>;
  /** The verdict recorded for a tree or manifest object walked before, if any. */
  seen(id: Buffer): boolean | undefined;
  /** Records a tree's or manifest object's verdict: true when it and all below are usable. */
  record(id: Buffer, ok: boolean): Promise<void>;
  /** A tree or manifest object that could not be read or decoded. */
  unreadable?(id: Buffer, err: CairnError): void;
}

/** Walks one snapshot; true when every object it references is usable. */
export function walkSnapshot(snap: StoredSnapshot, hooks: WalkHooks): Promise<boolean> {
  const root = Buffer.from(snap.root, 'hex');
  return snap.kind === 'image' ? walkImage(snap, root, hooks) : walkTree(root, hooks);
}

async function walkTree(id: Buffer, hooks: WalkHooks): Promise<boolean> {
  const known = hooks.seen(id);
  if (known !== undefined) return known;
  const bytes = await readOrReport(id, hooks);
  let ok = bytes !== undefined;
  const tree = bytes && decode(id, hooks, () => decodeTree(bytes, `tree ${shortHex(id)}`));
  if (bytes && !tree) ok = false;
  for (const e of tree?.entries ?? []) {
    if (e.subtree) ok = (await walkTree(e.subtree, hooks)) && ok;
    for (const part of e.content ?? []) if (part.id) ok = (await hooks.chunk(part.id)) && ok;
  }
  await hooks.record(id, ok);
  return ok;
}

async function walkImage(snap: StoredSnapshot, root: Buffer, hooks: WalkHooks): Promise<boolean> {
  const known = hooks.seen(root);
  if (known !== undefined) return known;
  const bytes = await readOrReport(root, hooks);
  const manifest = bytes && decode(root, hooks, () => decodeImageManifest(bytes, snap));
  let ok = manifest !== undefined;
  for (const ref of manifest?.segments ?? []) ok = (await walkSegment(ref, hooks)) && ok;
  await hooks.record(root, ok);
  return ok;
}

/** An image snapshot's top manifest, checked against the snapshot's size. */
export function decodeImageManifest(bytes: Buffer, snap: StoredSnapshot): ImageManifest {
  const what = `image manifest ${shortHex(snap.root)}`;
  const m = decodeManifest(bytes, what);
  if (m.size !== snap.size) {
    throw new CairnError(`${what} is damaged: its size differs from the snapshot's`, 'Damaged');
  }
  return m;
}

async function walkSegment(ref: SegmentRef, hooks: WalkHooks): Promise<boolean> {
  const known = hooks.seen(ref.id);
  if (known !== undefined) return known;
  const bytes = await readOrReport(ref.id, hooks);
  const what = `image manifest segment ${shortHex(ref.id)}`;
  const seg = bytes && decode(ref.id, hooks, () => decodeSegment(bytes, ref, what));
  let ok = seg !== undefined;
  for (let i = 0; seg && i < seg.count; i++) {
    const id = seg.entry(i).id;
    if (id) ok = (await hooks.chunk(Buffer.from(id))) && ok;
  }
  await hooks.record(ref.id, ok);
  return ok;
}

async function readOrReport(id: Buffer, hooks: WalkHooks): Promise<Buffer | undefined> {
  try {
    return await hooks.read(id);
  } catch (err) {
    if (!(err instanceof CairnError) || err.code === 'Fatal') throw err;
    hooks.unreadable?.(id, err);
    return undefined;
  }
}

function decode<T>(id: Buffer, hooks: WalkHooks, fn: () => T): T | undefined {
  try {
    return fn();
  } catch (err) {
    if (!(err instanceof CairnError)) throw err;
    hooks.unreadable?.(id, err);
    return undefined;
  }
}
