/*
 * Read-only filesystem readers over image snapshots (or any random-access byte source):
 * ext2/3/4, FAT12/16/32 and NTFS, behind one path-based interface. Nothing here mounts,
 * writes or needs privileges; every structure read from an image is validated, so a
 * damaged or hostile image fails with a Damaged CairnError instead of hanging or reading
 * outside its bounds.
 */
export { openFilesystem } from './detect.js';
export { treeEntry } from './entry.js';
export { type ExtractOptions, extractFiles } from './extract.js';
export {
  type DirEntry,
  Filesystem,
  imageExtents,
  type OpenFile,
  type WalkEntry,
  type WalkOptions,
} from './filesystem.js';
export {
  type DiskFiles,
  type ImageFiles,
  openDiskFiles,
  openImageFiles,
  openSnapshotFiles,
  type VolumeInfo,
} from './image.js';
export { UnreadableFilesystem, windowSource } from './source.js';
export type {
  ByteSource,
  Extent,
  FsDirent,
  FsNode,
  FsStat,
  FsType,
  Volume,
  VolumeOptions,
} from './types.js';
