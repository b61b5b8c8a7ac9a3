import type { Sealer } from '../crypto/index.js';
import type { Backend } from './backend/backend.js';
import { type BlobLocation, hex } from './blob.js';
import { encodeSegment, segmentName } from './index-segment.js';

/** Entries per segment written by a replacement (as many as a backup's segments hold). */
const SEGMENT_ENTRIES = 32_768;

export interface ReplaceStats {
  segmentsWritten: number;
  segmentsRemoved: number;
}

/**
 * Replaces the whole index (prune, repair index) with the entries given to `add`. Every new
 * segment but the last names no superseded segments, so until the last one is durable the new
 * segments only add to the old index: the union is still a correct index. The last segment
 * supersedes all old ones at once; only then are they deleted. A crash at any point therefore
 * leaves a complete index, never the first part of a new one alone.
 */
export class IndexReplacer {
  private batch: BlobLocation[] = [];
  private readonly old: Set<string>;
  /**
   * Old segments a new one reproduced byte for byte (possible only without encryption, where
   * sealing is deterministic): they stay, and are neither superseded nor deleted.
   */
  private readonly reused = new Set<string>();
  readonly stats: ReplaceStats = { segmentsWritten: 0, segmentsRemoved: 0 };

  constructor(
    private readonly backend: Backend,
    private readonly sealer: Sealer,
    old: Iterable<string>,
    private readonly segmentEntries = SEGMENT_ENTRIES,
  ) {
    this.old = new Set(old);
  }

  /** Adds one entry; `loc.pack` must already be durable. */
  async add(loc: BlobLocation): Promise<void> {
    this.batch.push(loc);
    if (this.batch.length >= this.segmentEntries) await this.write([]);
  }

  /** Writes the last segment, superseding every old one, then deletes the old segments. */
  async commit(): Promise<ReplaceStats> {
    const replaced = [...this.old].filter((h) => !this.reused.has(h));
    await this.write(replaced.map((h) => Buffer.from(h, 'hex')));
    for (const h of replaced) {
      if (this.reused.has(h)) continue;
      await this.backend.delete(segmentName(Buffer.from(h, 'hex')));
      this.stats.segmentsRemoved++;
    }
    return this.stats;
  }

  private async write(supersedes: Buffer[]): Promise<void> {
    const { id, bytes } = encodeSegment({ supersedes, entries: this.batch }, this.sealer);
    this.batch = [];
    if (this.old.has(hex(id))) {
      this.reused.add(hex(id));
      return;
    }
    await this.backend.write(segmentName(id), bytes);
    this.stats.segmentsWritten++;
  }
}
