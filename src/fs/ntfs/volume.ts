import { CairnError } from '../../errors.js';
import type { EntryType } from '../../files/tree.js';
import { parseNtfsBootSector } from '../../image/used-blocks/ntfs.js';
import { damaged, readAtOf, UnreadableFilesystem } from '../source.js';
import type {
  ByteSource,
  Extent,
  FsDirent,
  FsNode,
  FsStat,
  Volume,
  VolumeOptions,
} from '../types.js';
import {
  AT_DATA,
  AT_FILE_NAME,
  AT_REPARSE_POINT,
  AT_STANDARD_INFORMATION,
  ATTR_COMPRESSED,
  ATTR_ENCRYPTED,
  attributeExtents,
  ntfsTimeNs,
  RECORD_IS_DIR,
} from './attributes.js';
import { directoryNames } from './index-tree.js';
import { Mft, type MftFile } from './mft.js';
import { specialFile } from './special.js';

/*
 * NTFS, read-only. Times come from $STANDARD_INFORMATION, the content from the unnamed
 * $DATA attribute. NTFS keeps no POSIX owners or modes: entries get 0:0 and 0644/0755 (no
 * write bits when read-only). Compressed and encrypted files, and reparse points other
 * than symlinks, are flagged `unreadable` rather than read as the raw bytes they store.
 */

const ROOT_RECORD = 5;
const FILE_READONLY = 0x1;
const FILE_COMPRESSED = 0x800;
const FILE_ENCRYPTED = 0x4000;
const NAMESPACE_DOS = 2;

export async function openNtfs(
  source: ByteSource,
  opts: VolumeOptions = {},
): Promise<NtfsVolume | undefined> {
  const bs = await readAtOf(source)(0, 512);
  const layout = bs.length === 512 ? parseNtfsBootSector(bs) : undefined;
  if (!layout) return undefined;
  const ib = layout.indexBlockSize;
  if (layout.clusters * layout.clusterSize > source.size) {
    throw new UnreadableFilesystem('ntfs', 'it is larger than its volume');
  }
  if (ib < 512 || ib > 65536 || (ib & (ib - 1)) !== 0) {
    throw new UnreadableFilesystem('ntfs', `absurd index block size ${ib}`);
  }
  try {
    return new NtfsVolume(source, await Mft.open(source, layout), opts);
  } catch (err) {
    if (err instanceof CairnError && err.code === 'Damaged') {
      throw new UnreadableFilesystem('ntfs', err.message);
    }
    throw err;
  }
}

export class NtfsVolume implements Volume {
  readonly type = 'ntfs';
  readonly origin: number;
  readonly device: number;
  readonly notes: string[] = [];

  constructor(
    readonly source: ByteSource,
    readonly mft: Mft,
    opts: VolumeOptions,
  ) {
    this.origin = opts.origin ?? 0;
    this.device = opts.device ?? 0;
  }

  async root(): Promise<FsNode> {
    const node = await this.node(ROOT_RECORD);
    if (node?.stat.type !== 'dir') throw damaged('ntfs root record is not a directory');
    return node;
  }

  /** The file of MFT record `n` (checked against the sequence number a reference gives). */
  async node(n: number, sequence = 0): Promise<NtfsNode | undefined> {
    const file = await this.mft.file(n);
    if (sequence !== 0 && file.header.sequence !== sequence) {
      throw damaged(`directory entry for MFT record ${n} is stale (record reused)`);
    }
    return describe(this, file);
  }
}

async function describe(v: NtfsVolume, file: MftFile): Promise<NtfsNode | undefined> {
  const si = file.attrs.find((a) => a.type === AT_STANDARD_INFORMATION)?.value;
  if (!si || si.length < 0x30) {
    throw damaged(`MFT record ${file.number} has no standard information`);
  }
  const attrs = si.readUInt32LE(0x20);
  const isDir = (file.header.flags & RECORD_IS_DIR) !== 0;
  const data = attributeExtents(file.attrs, AT_DATA);
  const reparse = file.attrs.find((a) => a.type === AT_REPARSE_POINT);
  const special = await specialFile(v, file.number, attrs, isDir, data, reparse);
  if (special?.type === 'socket') return undefined;
  const type: EntryType = special?.type ?? (isDir ? 'dir' : 'file');
  let unreadable = special?.unreadable;
  if (type === 'file' && data) {
    if (data.flags & ATTR_ENCRYPTED || attrs & FILE_ENCRYPTED) unreadable ??= 'encrypted';
    if (data.flags & ATTR_COMPRESSED || attrs & FILE_COMPRESSED) unreadable ??= 'compressed';
  }
  const stat: FsStat = {
    type,
    mode: modeOf(type, attrs),
    uid: 0,
    gid: 0,
    size:
      type === 'file' ? (data?.size ?? 0) : type === 'symlink' ? (special?.target?.length ?? 0) : 0,
    mtimeNs: ntfsTimeNs(si, 0x08),
    ctimeNs: ntfsTimeNs(si, 0x10),
    inode: file.number,
    nlink: linkCount(file),
    device: v.device,
    ...(special?.rdev !== undefined ? { rdev: special.rdev } : {}),
    ...(unreadable ? { unreadable } : {}),
  };
  return new NtfsNode(v, file, stat, data?.extents ?? [], special?.target);
}

function modeOf(type: EntryType, fileAttrs: number): number {
  if (type === 'symlink') return 0o777;
  const write = fileAttrs & FILE_READONLY ? 0 : 0o200;
  return (type === 'dir' ? 0o555 : 0o444) | write;
}

/** Names of the file: its $FILE_NAMEs, DOS 8.3 aliases of long names not counted. */
function linkCount(file: MftFile): number {
  const names = file.attrs.filter(
    (a) =>
      a.type === AT_FILE_NAME &&
      a.value &&
      a.value.length > 0x41 &&
      a.value[0x41] !== NAMESPACE_DOS,
  );
  return Math.max(1, names.length);
}

class NtfsNode implements FsNode {
  constructor(
    readonly volume: NtfsVolume,
    private readonly file: MftFile,
    readonly stat: FsStat,
    private readonly data: Extent[],
    private readonly target: Buffer | undefined,
  ) {}

  async *extents(): AsyncGenerator<Extent> {
    if (this.stat.type !== 'file') {
      throw new CairnError(`MFT record ${this.file.number} is not a file`);
    }
    yield* this.data;
  }

  async *entries(): AsyncGenerator<FsDirent> {
    if (this.stat.type !== 'dir') {
      throw new CairnError(`MFT record ${this.file.number} is not a directory`);
    }
    const v = this.volume;
    for await (const e of directoryNames(v.mft, this.file)) {
      yield { name: e.name, load: () => v.node(e.record, e.sequence) };
    }
  }

  async readlink(): Promise<Buffer> {
    if (!this.target) throw new CairnError(`MFT record ${this.file.number} is not a symlink`);
    return this.target;
  }
}
