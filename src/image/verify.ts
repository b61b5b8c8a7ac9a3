import type { FileHandle } from 'node:fs/promises';
import { open } from 'node:fs/promises';
import { isAllZero } from '../chunker/index.js';
import type { IdHasher } from '../crypto/index.js';
import type { Repository } from '../repo/repository.js';
import type { Snapshot } from '../repo/snapshot.js';
import type { ByteRange } from './compare.js';
import { loadManifest, ManifestIndex, type PlacedEntry } from './manifest-reader.js';
import { readTarget } from './target.js';
import { OrderedWindow } from './window.js';

/** Reads in flight while earlier ones are hashed: keeps the device queue non-empty. */
const READS_AHEAD = 8;
const BYTES_AHEAD = 64 << 20;
const HOLE_PIECE = 8 << 20;
const PROGRESS_EVERY_MS = 100;

export interface VerifyOptions {
  onProgress?: (bytesDone: number) => void;
}

/**
 * Reads a restored image back and returns the entries (chunks by their ID, holes as zeros)
 * whose bytes do not match the snapshot, in order. An empty list means every byte checked.
 */
export async function verifyImage(
  repo: Repository,
  snap: Snapshot,
  target: string,
  opts: VerifyOptions = {},
): Promise<ByteRange[]> {
  const store = await repo.blobs();
  const index = new ManifestIndex(store, await loadManifest(store, snap));
  const fh = await open(target, 'r');
  try {
    return await verifyTarget(repo.hashId, index, fh, opts);
  } finally {
    await fh.close();
  }
}

export async function verifyTarget(
  hashId: IdHasher,
  index: ManifestIndex,
  fh: FileHandle,
  opts: VerifyOptions,
): Promise<ByteRange[]> {
  const bad: ByteRange[] = [];
  const window = new OrderedWindow<{ entry: PlacedEntry; ok: boolean }>(READS_AHEAD, BYTES_AHEAD);
  let done = 0;
  let lastReport = 0;
  const take = async () => {
    const { entry, ok } = await window.shift();
    if (!ok) bad.push({ offset: entry.offset, length: entry.length });
    done += entry.length;
    if (Date.now() - lastReport >= PROGRESS_EVERY_MS) {
      lastReport = Date.now();
      opts.onProgress?.(done);
    }
  };
  try {
    for await (const entry of index.entries()) {
      window.push(checkEntry(hashId, fh, entry), entry.id ? entry.length : 0);
      while (window.full) await take();
    }
    while (window.size > 0) await take();
  } catch (err) {
    await window.settle();
    throw err;
  }
  opts.onProgress?.(done);
  return bad;
}

async function checkEntry(
  hashId: IdHasher,
  fh: FileHandle,
  entry: PlacedEntry,
): Promise<{ entry: PlacedEntry; ok: boolean }> {
  if (entry.id) {
    const have = await readTarget(fh, entry.offset, entry.length);
    return { entry, ok: have.length === entry.length && hashId(have).equals(entry.id) };
  }
  const end = entry.offset + entry.length;
  for (let off = entry.offset; off < end; off += HOLE_PIECE) {
    const n = Math.min(HOLE_PIECE, end - off);
    const have = await readTarget(fh, off, n);
    if (have.length !== n || !isAllZero(have)) return { entry, ok: false };
  }
  return { entry, ok: true };
}
