import { hex } from './blob.js';
import { IndexReplacer } from './index-replace.js';
import { segmentIdFromName } from './index-segment.js';
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

/**
 * Rebuilds the index from the packs alone: reads every pack's table of contents and replaces
 * all existing segments with new ones (see IndexReplacer: a crash at any point leaves a usable
 * index). The local view follows on its next sync.
 */
export async function rebuildIndex(repo: Repository): Promise<RebuildResult> {
  const { backend, sealer } = repo;
  const old: string[] = [];
  for await (const o of backend.list('index')) {
    const h = segmentIdFromName(o.name);
    if (h) old.push(h);
  }
  const replacer = new IndexReplacer(backend, sealer, old);
  const result: RebuildResult = {
    packs: 0,
    blobs: 0,
    segmentsWritten: 0,
    segmentsRemoved: 0,
    damaged: [],
  };
  for await (const o of backend.list('data')) {
    const pack = packIdFromName(o.name);
    if (!pack) continue;
    try {
      const entries = await readPackToc(backend, o.name, sealer, o.size);
      for (const e of entries) await replacer.add({ ...e, pack });
      result.packs++;
      result.blobs += entries.length;
    } catch (err) {
      result.damaged.push({ pack: hex(pack), error: (err as Error).message });
    }
  }
  const stats = await replacer.commit();
  result.segmentsWritten = stats.segmentsWritten;
  result.segmentsRemoved = stats.segmentsRemoved;
  return result;
}
