import { CairnError, shortHex } from '../errors.js';
import type { BlobStore } from '../repo/blob-store.js';
import type { Snapshot } from '../repo/snapshot.js';
import { LruCache } from './lru.js';
import {
  decodeManifest,
  decodeSegment,
  type ImageManifest,
  type ManifestEntry,
  type ManifestSegment,
  type SegmentRef,
  searchStarts,
} from './manifest.js';

/** A manifest entry placed in the image. */
export interface PlacedEntry extends ManifestEntry {
  offset: number;
}

/** Decoded segments kept per open image: 64 × ≤ 4096 entries stays under ~10 MiB. */
const SEGMENT_CACHE = 64;

/** Loads the top manifest of an image snapshot and checks it against the snapshot's size. */
export async function loadManifest(
  store: BlobStore,
  snap: Pick<Snapshot, 'kind' | 'root' | 'size'>,
): Promise<ImageManifest> {
  if (snap.kind !== 'image') throw new CairnError(`snapshot is not an image (kind ${snap.kind})`);
  const what = `image manifest ${shortHex(snap.root)}`;
  const manifest = decodeManifest(await store.get(Buffer.from(snap.root, 'hex')), what);
  if (manifest.size !== snap.size) {
    throw new CairnError(
      `${what} is damaged: it covers ${manifest.size} bytes, the snapshot says ${snap.size}`,
      'Damaged',
    );
  }
  return manifest;
}

/** Segment access over one manifest: decoded segments cached, offset lookup in O(log n). */
export class ManifestIndex {
  private readonly cache = new LruCache<number, Promise<ManifestSegment>>(SEGMENT_CACHE);

  constructor(
    private readonly store: BlobStore,
    readonly manifest: ImageManifest,
  ) {}

  get size(): number {
    return this.manifest.size;
  }

  segment(i: number): Promise<ManifestSegment> {
    let seg = this.cache.get(i);
    if (!seg) {
      const ref = this.manifest.segments[i]!;
      const what = `image manifest segment ${shortHex(ref.id)}`;
      seg = this.store.get(ref.id).then((buf) => decodeSegment(buf, ref, what));
      // A failed load must not stay cached: the next caller retries and sees the error itself.
      seg.catch(() => {
        if (this.cache.peek(i) === seg) this.cache.delete(i);
      });
      this.cache.set(i, seg);
    }
    return seg;
  }

  /** The segment holding byte `offset` (0 ≤ offset < size). */
  segmentAt(offset: number): SegmentRef {
    return this.manifest.segments[searchStarts(this.manifest.starts, offset)]!;
  }

  /** The entry holding byte `offset` (0 ≤ offset < size). */
  async locate(offset: number): Promise<PlacedEntry> {
    if (!(offset >= 0 && offset < this.size)) {
      throw new RangeError(`offset ${offset} outside image of ${this.size} bytes`);
    }
    const s = searchStarts(this.manifest.starts, offset);
    const segStart = this.manifest.segments[s]!.start;
    const seg = await this.segment(s);
    const i = seg.find(offset - segStart);
    return { ...seg.entry(i), offset: segStart + seg.starts[i]! };
  }

  /** Entries in image order from the one holding `from`; the next segment loads early. */
  async *entries(from = 0): AsyncGenerator<PlacedEntry> {
    const segs = this.manifest.segments;
    if (from >= this.size) return;
    let s = searchStarts(this.manifest.starts, from);
    let next = this.segment(s);
    for (; s < segs.length; s++) {
      const seg = await next;
      if (s + 1 < segs.length) next = this.segment(s + 1);
      const base = segs[s]!.start;
      const first = base <= from ? seg.find(from - base) : 0;
      for (let i = first; i < seg.count; i++) {
        yield { ...seg.entry(i), offset: base + seg.starts[i]! };
      }
    }
  }
}
