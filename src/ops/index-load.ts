import { createHash } from 'node:crypto';
import { CairnError, shortHex } from '../errors.js';
import { decodeSegment, segmentIdFromName } from '../repo/index-segment.js';
import type { Repository } from '../repo/repository.js';
import { BlobTable } from './scratch.js';

export interface LoadedIndex {
  table: BlobTable;
  /** Every segment in `index/`, live or superseded (hex names). */
  segments: string[];
  /** Listed segments that a newer one supersedes (left by an interrupted prune or repair). */
  superseded: string[];
  /** Segments that cannot be read: their entries are missing from `table`. */
  damaged: { segment: string; error: string }[];
  /** Entries loaded from live segments. */
  entries: number;
}

/**
 * Reads every index segment straight from the repository (not the local view, which is only
 * a cache) into a scratch table: the union of the segments no other segment supersedes. Each
 * segment is checked against its name (SHA-256 of its bytes) and its seal.
 */
export async function loadIndex(repo: Repository): Promise<LoadedIndex> {
  const segments: string[] = [];
  for await (const o of repo.backend.list('index')) {
    const h = segmentIdFromName(o.name);
    if (h) segments.push(h);
  }
  segments.sort();
  const table = await BlobTable.create(repo.cacheDir);
  try {
    // One pass suffices unless a listed segment is superseded (rare): then load again without.
    let loaded = await loadSegments(repo, table, segments, new Set());
    const listed = new Set(segments);
    const superseded = [...loaded.superseded].filter((h) => listed.has(h)).sort();
    if (superseded.length > 0) {
      await table.db.clear();
      loaded = await loadSegments(repo, table, segments, new Set(superseded));
    }
    return { table, segments, superseded, damaged: loaded.damaged, entries: loaded.entries };
  } catch (err) {
    await table.close();
    throw err;
  }
}

async function loadSegments(
  repo: Repository,
  table: BlobTable,
  segments: readonly string[],
  skip: ReadonlySet<string>,
) {
  const superseded = new Set<string>();
  const damaged: { segment: string; error: string }[] = [];
  let entries = 0;
  for (const h of segments) {
    if (skip.has(h)) continue;
    let seg: ReturnType<typeof decodeSegment>;
    try {
      seg = await readSegment(repo, h);
    } catch (err) {
      if (!(err instanceof CairnError) || err.code === 'Fatal') throw err;
      damaged.push({ segment: h, error: err.message });
      continue;
    }
    for (const s of seg.supersedes) superseded.add(s.toString('hex'));
    for (const e of seg.entries) await table.add(e);
    entries += seg.entries.length;
  }
  return { superseded, damaged, entries };
}

async function readSegment(repo: Repository, h: string) {
  const what = `index segment ${shortHex(h)}`;
  const stored = await repo.backend.read(`index/${h}`);
  if (createHash('sha256').update(stored).digest('hex') !== h) {
    throw new CairnError(`${what} is damaged: its content does not match its name`, 'Damaged');
  }
  return decodeSegment(stored, repo.sealer, what);
}
