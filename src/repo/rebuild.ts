import { type BlobLocation, hex } from './blob.js';
import { encodeSegment, segmentIdFromName, segmentName } from './index-segment.js';
import { packIdFromName, readPackToc } from './pack.js';
import type { Repository } from './repository.js';

export interface RebuildResult {
  packs: number;
  blobs: number;
  segmentsWritten: number;
  segmentsRemoved: number;
  /** Packs whose table of contents could not be read, with the reason. */
  damaged: { pack: string; error: string }[];
}

const SEGMENT_ENTRIES = 32_768;

/**
 * Rebuilds the index from the packs alone: reads every pack's table of contents, writes new
 * segments that supersede all existing ones, and only then deletes the old segments, so a
 * crash at any point leaves a usable index. The local view follows on its next sync.
 */
export async function rebuildIndex(repo: Repository): Promise<RebuildResult> {
  const { backend, sealer } = repo;
  const old: Buffer[] = [];
  for await (const o of backend.list('index')) {
    const h = segmentIdFromName(o.name);
    if (h) old.push(Buffer.from(h, 'hex'));
  }
  const result: RebuildResult = {
    packs: 0,
    blobs: 0,
    segmentsWritten: 0,
    segmentsRemoved: 0,
    damaged: [],
  };
  let batch: BlobLocation[] = [];
  const writeBatch = async () => {
    const { id, bytes } = encodeSegment({ supersedes: old, entries: batch }, sealer);
    await backend.write(segmentName(id), bytes);
    result.segmentsWritten++;
    batch = [];
  };
  for await (const o of backend.list('data')) {
    const pack = packIdFromName(o.name);
    if (!pack) continue;
    try {
      const entries = await readPackToc(backend, o.name, sealer, o.size);
      for (const e of entries) batch.push({ ...e, pack });
      result.packs++;
      result.blobs += entries.length;
    } catch (err) {
      result.damaged.push({ pack: hex(pack), error: (err as Error).message });
    }
    if (batch.length >= SEGMENT_ENTRIES) await writeBatch();
  }
  if (batch.length > 0 || result.segmentsWritten === 0) await writeBatch();
  // New segments list the old ones as superseded, so their names never collide with them.
  for (const id of old) {
    await backend.delete(segmentName(id));
    result.segmentsRemoved++;
  }
  return result;
}
