import type { BlobStore } from '../repo/blob-store.js';
import {
  encodeManifest,
  encodeSegment,
  MAX_SEGMENT_ENTRIES,
  type ManifestEntry,
  type SegmentRef,
} from './manifest.js';

/**
 * A segment ends after a chunk whose ID has its first SEGMENT_CUT_BITS bits zero, so
 * segments average 2^8 = 256 entries (≈ 9 KiB, 256 MiB of image at 1 MiB chunks). Small
 * enough that one changed chunk rewrites little, large enough that the top manifest of a
 * 1 TiB image lists only ~4 000 segments. IDs are keyed hashes in encrypted repositories,
 * so cut positions reveal nothing about content.
 */
const SEGMENT_CUT_BITS = 8;
const CUT_MASK = (0xffff << (16 - SEGMENT_CUT_BITS)) & 0xffff;

export interface ManifestWriteStats {
  segments: number;
  segmentsNew: number;
  storedSize: number;
}

/**
 * Collects an image's entries in order, merges adjacent holes, and stores segments as they
 * fill. `finish` stores the top manifest and returns its ID.
 */
export class ManifestWriter {
  readonly stats: ManifestWriteStats = { segments: 0, segmentsNew: 0, storedSize: 0 };
  private entries: ManifestEntry[] = [];
  private entriesLength = 0;
  private pendingHole = 0;
  private readonly segments: SegmentRef[] = [];
  private offset = 0;

  constructor(private readonly store: BlobStore) {}

  /** Logical bytes recorded so far. */
  get size(): number {
    return this.offset + this.entriesLength + this.pendingHole;
  }

  async add(entry: ManifestEntry): Promise<void> {
    if (entry.length === 0) return;
    if (!entry.id) {
      this.pendingHole += entry.length;
      return;
    }
    await this.flushHole();
    this.push(entry);
    if ((entry.id.readUInt16BE(0) & CUT_MASK) === 0 || this.entries.length >= MAX_SEGMENT_ENTRIES) {
      await this.cut();
    }
  }

  async finish(): Promise<{ id: Buffer; size: number }> {
    await this.flushHole();
    await this.cut();
    const top = encodeManifest(this.offset, this.segments);
    const put = await this.store.put('manifest', top);
    this.stats.storedSize += put.storedSize;
    return { id: put.id, size: this.offset };
  }

  private push(entry: ManifestEntry): void {
    this.entries.push(entry);
    this.entriesLength += entry.length;
  }

  private async flushHole(): Promise<void> {
    if (this.pendingHole === 0) return;
    this.push({ id: null, length: this.pendingHole });
    this.pendingHole = 0;
    if (this.entries.length >= MAX_SEGMENT_ENTRIES) await this.cut();
  }

  private async cut(): Promise<void> {
    if (this.entries.length === 0) return;
    const put = await this.store.put('manifest', encodeSegment(this.entries));
    this.segments.push({
      id: put.id,
      start: this.offset,
      length: this.entriesLength,
      entries: this.entries.length,
    });
    this.stats.segments++;
    if (put.added) this.stats.segmentsNew++;
    this.stats.storedSize += put.storedSize;
    this.offset += this.entriesLength;
    this.entries = [];
    this.entriesLength = 0;
  }
}
