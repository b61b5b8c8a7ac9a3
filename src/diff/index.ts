import { CairnError, shortHex } from '../errors.js';
import type { StoredSnapshot } from '../repo/snapshot.js';

export {
  type Change,
  changePath,
  type DiffError,
  DiffTally,
  type FileDiffEvent,
  type FileDiffSummary,
  fileSummaryJson,
  withSummary,
} from './changes.js';
export { entryModifier, type Modifier, sameContent, sameMetadata } from './entries.js';
export { sameFileContent, stretchesToCompare } from './file-content.js';
export { comparePaths, diffFilesystems, type FsDiffOptions } from './fs-diff.js';
export {
  diffImages,
  type ImageDiffEvent,
  type ImageDiffSummary,
  imageSummaryJson,
  type PartitionDiff,
} from './image-diff.js';
export {
  changedByteRanges,
  diffImageFiles,
  type ImageFilesDiffOptions,
} from './image-files.js';
export { diffLive, type LiveDiffOptions } from './live-diff.js';
export { diffTrees, storeTreeLoader, type TreeLoader } from './tree-diff.js';

/** Only snapshots of one kind can be compared: a tree of files is not a stream of bytes. */
export function checkSameKind(a: StoredSnapshot, b: StoredSnapshot): 'files' | 'image' {
  if (a.kind === b.kind) return a.kind;
  const what = (s: StoredSnapshot) =>
    `${shortHex(s.id)} is ${s.kind === 'files' ? 'a file' : 'an image'} snapshot`;
  throw new CairnError(`cannot compare snapshots of different kinds: ${what(a)}, ${what(b)}`);
}
