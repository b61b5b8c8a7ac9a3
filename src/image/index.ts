export {
  type ImageBackupEvent,
  type ImageBackupOptions,
  type ImageBackupSummary,
  imageBackup,
  imageSummaryNumbers,
} from './backup.js';
export { type ByteRange, changedBytes, changedRanges } from './compare.js';
export { describeImage, type ImageDescription } from './describe.js';
export {
  decodeManifest,
  decodeSegment,
  encodeManifest,
  encodeSegment,
  type ImageManifest,
  MAX_SEGMENT_ENTRIES,
  type ManifestEntry,
  ManifestSegment,
  type SegmentRef,
} from './manifest.js';
export { loadManifest, ManifestIndex, type PlacedEntry } from './manifest-reader.js';
export { type Partition, type PartitionTable, readPartitionTable } from './partitions.js';
export { type CatImageOptions, catImage, ImageReader, type ImageReaderOptions } from './reader.js';
export {
  type RestoreImageOptions,
  type RestoreImageResult,
  type RestoreProgress,
  restoreImage,
} from './restore.js';
export type { SourceKind } from './sources.js';
export type { VolumeUsage } from './used-blocks/index.js';
export { type VerifyOptions, verifyImage } from './verify.js';
