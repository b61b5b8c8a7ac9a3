import type { TreeEntry } from '../files/tree.js';
import { type Modifier, uniqueBytes } from './entries.js';

/** One changed path. `before`/`after` are the entry on each side (absent where there is none). */
export interface Change {
  type: 'change';
  modifier: Modifier;
  /** Absolute, raw bytes, without a trailing slash. */
  path: Buffer;
  before?: TreeEntry;
  after?: TreeEntry;
}

/** Live paths only: something on disk that could not be read, so was not compared. */
export interface DiffError {
  type: 'error';
  path: Buffer;
  reason: string;
}

export interface FileDiffSummary {
  type: 'summary';
  filesAdded: number;
  filesRemoved: number;
  /** Regular files whose content differs (`M`). */
  filesChanged: number;
  dirsAdded: number;
  dirsRemoved: number;
  /** Symlinks, FIFOs and device nodes. */
  othersAdded: number;
  othersRemoved: number;
  /** Symlinks with another target, devices with another number. */
  othersChanged: number;
  /** `U` entries. */
  metadataChanged: number;
  /** `T` entries. */
  typesChanged: number;
  /**
   * Sizes of added files, plus the bytes of changed files in chunks the other side's
   * version of that file does not have.
   */
  addedBytes: number;
  removedBytes: number;
  /** Distinct chunks referenced by the reported entries of one side and not the other's. */
  chunksAdded: number;
  chunksRemoved: number;
  /** Live paths that could not be read. */
  errors: number;
}

export type FileDiffEvent = Change | DiffError | FileDiffSummary;

const SLASH = Buffer.from('/');

/** The path as restic prints it: a directory (on the new side, if any) ends in `/`. */
export function changePath(c: Change): Buffer {
  const entry = c.after ?? c.before;
  if (entry?.type !== 'dir' || c.path[c.path.length - 1] === 0x2f) return c.path;
  return Buffer.concat([c.path, SLASH]);
}

/**
 * Counts changes as they go by. Chunk sets hold only chunks of reported entries: unchanged
 * subtrees are never read, so a chunk that also lives in one of them still counts here.
 */
export class DiffTally {
  private readonly s: FileDiffSummary = {
    type: 'summary',
    filesAdded: 0,
    filesRemoved: 0,
    filesChanged: 0,
    dirsAdded: 0,
    dirsRemoved: 0,
    othersAdded: 0,
    othersRemoved: 0,
    othersChanged: 0,
    metadataChanged: 0,
    typesChanged: 0,
    addedBytes: 0,
    removedBytes: 0,
    chunksAdded: 0,
    chunksRemoved: 0,
    errors: 0,
  };
  private readonly chunksBefore = new Set<string>();
  private readonly chunksAfter = new Set<string>();

  add(e: Change | DiffError): void {
    if (e.type === 'error') {
      this.s.errors++;
      return;
    }
    const { before, after } = e;
    switch (e.modifier) {
      case '+':
        this.count(after!, 'Added');
        this.whole(after!, 'addedBytes', this.chunksAfter);
        break;
      case '-':
        this.count(before!, 'Removed');
        this.whole(before!, 'removedBytes', this.chunksBefore);
        break;
      case 'T':
        this.s.typesChanged++;
        this.whole(before!, 'removedBytes', this.chunksBefore);
        this.whole(after!, 'addedBytes', this.chunksAfter);
        break;
      case 'U':
        this.s.metadataChanged++;
        break;
      case 'M':
        if (after!.type !== 'file') this.s.othersChanged++;
        else {
          this.s.filesChanged++;
          this.bytes(before!, after!);
        }
        break;
    }
  }

  summary(): FileDiffSummary {
    const s = { ...this.s };
    for (const k of this.chunksAfter) if (!this.chunksBefore.has(k)) s.chunksAdded++;
    for (const k of this.chunksBefore) if (!this.chunksAfter.has(k)) s.chunksRemoved++;
    return s;
  }

  private count(entry: TreeEntry, which: 'Added' | 'Removed'): void {
    const kind = entry.type === 'file' ? 'files' : entry.type === 'dir' ? 'dirs' : 'others';
    this.s[`${kind}${which}`]++;
  }

  /** A file that is only on one side: all of its bytes and chunks. */
  private whole(entry: TreeEntry, bytes: 'addedBytes' | 'removedBytes', chunks: Set<string>) {
    if (entry.type !== 'file') return;
    this.s[bytes] += entry.size;
    addChunks(entry, chunks);
  }

  /**
   * A file whose content changed: the bytes in chunks the other version lacks. A live file
   * that was not read has no part list: its bytes are unknown and left out, not guessed.
   */
  private bytes(before: TreeEntry, after: TreeEntry): void {
    if (!before.content || !after.content) return;
    this.s.addedBytes += uniqueBytes(after.content, before.content);
    this.s.removedBytes += uniqueBytes(before.content, after.content);
    addChunks(before, this.chunksBefore);
    addChunks(after, this.chunksAfter);
  }
}

function addChunks(entry: TreeEntry, into: Set<string>): void {
  for (const p of entry.content ?? []) if (p.id) into.add(p.id.toString('latin1'));
}

/** The summary under the `diff --json` names (restic's style: snake case). */
export function fileSummaryJson(s: FileDiffSummary): Record<string, number> {
  return {
    files_added: s.filesAdded,
    files_removed: s.filesRemoved,
    files_changed: s.filesChanged,
    dirs_added: s.dirsAdded,
    dirs_removed: s.dirsRemoved,
    others_added: s.othersAdded,
    others_removed: s.othersRemoved,
    others_changed: s.othersChanged,
    metadata_changed: s.metadataChanged,
    types_changed: s.typesChanged,
    added_bytes: s.addedBytes,
    removed_bytes: s.removedBytes,
    chunks_added: s.chunksAdded,
    chunks_removed: s.chunksRemoved,
    errors: s.errors,
  };
}

/** Passes changes through, then yields their summary. */
export async function* withSummary(
  changes: AsyncIterable<Change | DiffError>,
): AsyncGenerator<FileDiffEvent> {
  const tally = new DiffTally();
  for await (const c of changes) {
    tally.add(c);
    yield c;
  }
  yield tally.summary();
}
