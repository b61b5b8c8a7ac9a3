import { CairnError, shortHex } from '../errors.js';
import { childPath, rootPath } from '../files/paths.js';
import { type ImageFiles, openImageFiles, type VolumeInfo } from '../fs/index.js';
import { changedRanges } from '../image/compare.js';
import { loadManifest, ManifestIndex } from '../image/manifest-reader.js';
import { ByteRanges } from '../image/ranges.js';
import type { BlobStore } from '../repo/blob-store.js';
import type { Repository } from '../repo/repository.js';
import type { Snapshot, StoredSnapshot } from '../repo/snapshot.js';
import type { Change, DiffError } from './changes.js';
import { diffFilesystems } from './fs-diff.js';

export interface ImageFilesDiffOptions {
  /** Facts about a volume worth telling (e.g. a journal that needs recovery). */
  onNote?: (message: string) => void;
}

/**
 * The files added, removed and changed between the filesystems inside image snapshots A
 * and B (`part<N>/…` for whole disks), as `diffTrees` reports a file snapshot's. The byte
 * ranges where the images differ come from their chunk lists (no data read); then only the
 * filesystems' metadata and the files' bytes inside those ranges are read. A partition
 * whose filesystem is recognised but cannot be read on either side is one error, and its
 * files are not compared; an image with no readable filesystem at all is refused.
 */
export async function* diffImageFiles(
  repo: Repository,
  a: StoredSnapshot,
  b: StoredSnapshot,
  opts: ImageFilesDiffOptions = {},
): AsyncGenerator<Change | DiffError> {
  // The store first, alone: concurrent first calls could see an index not yet synced.
  const store = await repo.blobs();
  const [fa, fb, changed] = await Promise.all([
    openImageFiles(repo, a),
    openImageFiles(repo, b),
    changedByteRanges(store, a, b),
  ]);
  const sides = [
    { snap: a, image: fa },
    { snap: b, image: fb },
  ];
  for (const { snap, image } of sides) {
    for (const v of image.volumes) {
      if (v.readable && v.note) opts.onNote?.(`${where(v, snap)}: ${v.note}`);
    }
  }
  const [fsA, fsB] = sides.map((s) => filesOf(s.image, s.snap));
  const skip = unreadableVolumes(sides);
  yield* skip;
  yield* diffFilesystems(fsA!, fsB!, changed, { skip: skip.map((e) => e.path) });
}

/** Where images A and B differ, from their chunk lists alone (see `changedRanges`). */
export async function changedByteRanges(
  store: BlobStore,
  a: Snapshot,
  b: Snapshot,
): Promise<ByteRanges> {
  const [ma, mb] = await Promise.all([loadManifest(store, a), loadManifest(store, b)]);
  const ranges = new ByteRanges();
  const pairs = changedRanges(new ManifestIndex(store, ma), new ManifestIndex(store, mb));
  for await (const r of pairs) ranges.add(r.offset, r.offset + r.length);
  return ranges;
}

function filesOf(side: ImageFiles, snap: StoredSnapshot) {
  if (side.files) return side.files;
  const why = side.volumes.map((v) => v.note).filter(Boolean);
  throw new CairnError(
    `no readable filesystem in image snapshot ${shortHex(snap.id)}: ${why.join('; ')}`,
  );
}

/**
 * Partitions with a filesystem recognised but unreadable on one side or both: comparing
 * them would list every file of the readable side as added or removed.
 */
function unreadableVolumes(sides: { snap: StoredSnapshot; image: ImageFiles }[]): DiffError[] {
  const out = new Map<number, DiffError>();
  for (const { snap, image } of sides) {
    for (const v of image.volumes) {
      if (v.partition === undefined || v.readable || !v.type || out.has(v.partition)) continue;
      const path = childPath(rootPath(), Buffer.from(`part${v.partition}`));
      const reason = `${v.note ?? 'unreadable'} (in image snapshot ${shortHex(snap.id)})`;
      out.set(v.partition, { type: 'error', path, reason });
    }
  }
  return [...out.entries()].sort(([x], [y]) => x - y).map(([, e]) => e);
}

function where(v: VolumeInfo, snap: StoredSnapshot): string {
  const volume = v.partition === undefined ? 'image' : `part${v.partition}`;
  return `${volume} of image snapshot ${shortHex(snap.id)}`;
}
