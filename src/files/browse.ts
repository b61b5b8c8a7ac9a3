import { fstatSync, readSync } from 'node:fs';
import { isAllZero } from '../chunker/index.js';
import type { IdHasher } from '../crypto/index.js';
import { CairnError, shortHex } from '../errors.js';
import type { BlobStore } from '../repo/blob-store.js';
import type { StoredSnapshot } from '../repo/snapshot.js';
import { childPath, jsonText, rootPath, splitUserPath } from './paths.js';
import { decodeTree, type Tree, type TreeEntry } from './tree.js';

/** An entry of a file snapshot with its absolute path (raw bytes). */
export interface Located {
  path: Buffer;
  entry: TreeEntry;
}

/** What a path names in a snapshot: the root (no entry of its own) or an entry. */
export type Found = { path: Buffer; entry: TreeEntry } | { path: Buffer; entry: undefined };

/** Chunk reads kept in flight ahead of the consumer while streaming a file. */
const READ_AHEAD = 4;
/** Holes are produced in slices of this size, all views of one zero-filled buffer. */
const ZERO_SLICE = 1 << 20;
let zeros: Buffer | undefined;

export async function loadTree(store: BlobStore, id: Buffer): Promise<Tree> {
  return decodeTreeBlob(id, await store.get(id));
}

/** The tree stored as blob `id`, however its bytes were fetched. */
export function decodeTreeBlob(id: Buffer, bytes: Buffer): Tree {
  return decodeTree(bytes, `tree ${shortHex(id)}`);
}

export function rootTreeId(snap: StoredSnapshot): Buffer {
  if (snap.kind !== 'files') {
    throw new CairnError(`snapshot ${shortHex(snap.id)} is an image snapshot, not a file snapshot`);
  }
  return Buffer.from(snap.root, 'hex');
}

/**
 * Finds the entry a user-given path names. A component matches a name with the same bytes
 * or, so that names which are not UTF-8 can be typed, the name's `\xNN`-escaped form as
 * `ls` prints it.
 */
export async function findEntry(
  store: BlobStore,
  root: Buffer,
  path: string,
): Promise<Found | undefined> {
  let found: Found = { path: rootPath(), entry: undefined };
  let tree = root;
  for (const component of splitUserPath(path)) {
    if (found.entry && found.entry.type !== 'dir') return undefined;
    const { entries } = await loadTree(store, tree);
    const raw = Buffer.from(component);
    const entry =
      entries.find((e) => e.name.equals(raw)) ??
      entries.find((e) => jsonText(e.name) === component);
    if (!entry) return undefined;
    found = { path: childPath(found.path, entry.name), entry };
    if (entry.type === 'dir') tree = entry.subtree!;
  }
  return found;
}

/** Every entry below the tree `id`, depth first, each directory before its contents. */
export async function* walkTree(
  store: BlobStore,
  id: Buffer,
  base: Buffer = rootPath(),
): AsyncGenerator<Located> {
  const { entries } = await loadTree(store, id);
  for (const entry of entries) {
    const path = childPath(base, entry.name);
    yield { path, entry };
    if (entry.type === 'dir') yield* walkTree(store, entry.subtree!, path);
  }
}

/** The entry `found` names (unless it is the root), then everything below it. */
export async function* walkFrom(
  store: BlobStore,
  root: Buffer,
  found: Found,
): AsyncGenerator<Located> {
  if (!found.entry) {
    yield* walkTree(store, root);
    return;
  }
  yield { path: found.path, entry: found.entry };
  if (found.entry.type === 'dir') yield* walkTree(store, found.entry.subtree!, found.path);
}

/**
 * Hard links: the first entry seen with a given (device, inode) and nlink > 1 is the
 * original; later ones are links to its path.
 */
export class HardlinkTracker {
  private readonly seen = new Map<string, Buffer>();

  /** The original's path when `entry` is a later link to it; otherwise records `path`. */
  linkTarget(entry: TreeEntry, path: Buffer): Buffer | undefined {
    if (entry.type === 'dir' || entry.nlink <= 1) return undefined;
    const key = `${entry.device}:${entry.inode}`;
    const first = this.seen.get(key);
    if (first) return first;
    this.seen.set(key, path);
    return undefined;
  }
}

/**
 * A file's bytes, in order, chunk by chunk: stored chunks are fetched READ_AHEAD at a time
 * so the repository's latency hides behind the consumer; holes come out as zeros, in slices
 * of one shared zero buffer (a hole may be far larger than memory).
 */
export async function* readFileContent(store: BlobStore, entry: TreeEntry): AsyncGenerator<Buffer> {
  const parts = entry.content ?? [];
  const pending: (Promise<Buffer> | number)[] = [];
  let next = 0;
  const fill = () => {
    while (next < parts.length && pending.length < READ_AHEAD) {
      const part = parts[next++]!;
      if (!part.id) {
        pending.push(part.length);
        continue;
      }
      const p = store.get(part.id, part.length);
      // Reads ahead that are never awaited (the consumer stopped) must not go unhandled.
      p.catch(() => undefined);
      pending.push(p);
    }
  };
  fill();
  while (pending.length > 0) {
    const item = pending.shift()!;
    if (typeof item !== 'number') {
      const data = await item;
      fill();
      yield data;
      continue;
    }
    fill();
    zeros ??= Buffer.alloc(ZERO_SLICE);
    for (let left = item; left > 0; left -= ZERO_SLICE) {
      yield zeros.subarray(0, Math.min(left, ZERO_SLICE));
    }
  }
}

/**
 * Reads a copy of a file back through `fd` (opened for reading) and checks every chunk against
 * its ID and every hole for zeros (restore --verify). Throws a Damaged error naming the first difference.
 */
export function verifyFile(
  hashId: IdHasher,
  fd: number,
  entry: Pick<TreeEntry, 'size' | 'content'>,
): void {
  const { size } = fstatSync(fd);
  if (size !== entry.size) {
    throw new CairnError(`verify: restored size ${size} differs from ${entry.size}`, 'Damaged');
  }
  let offset = 0;
  for (const part of entry.content ?? []) {
    for (let done = 0; done < part.length; ) {
      // A hole is checked a MiB at a time; a chunk is read whole to hash it.
      const n = part.id ? part.length : Math.min(part.length - done, 1 << 20);
      const buf = Buffer.allocUnsafe(n);
      const bytesRead = readSync(fd, buf, 0, n, offset + done);
      const ok = part.id
        ? bytesRead === n && hashId(buf).equals(part.id)
        : isAllZero(buf.subarray(0, bytesRead)) && bytesRead === n;
      if (!ok) {
        const what = part.id ? `chunk ${shortHex(part.id)}` : 'a hole';
        throw new CairnError(
          `verify: restored bytes at offset ${offset} do not match ${what}`,
          'Damaged',
        );
      }
      done += n;
    }
    offset += part.length;
  }
}
