import { constants as osConstants } from 'node:os';
import { CairnError, shortHex } from '../errors.js';
import { jsonText } from '../files/paths.js';
import {
  type ByteSource,
  type Extent,
  type Filesystem,
  type FsNode,
  type OpenFile,
  openSnapshotFiles,
} from '../fs/index.js';
import type { ManifestIndex } from '../image/index.js';
import type { StoredSnapshot } from '../repo/snapshot.js';
import { FsError } from './attr.js';
import {
  type ChunkCache,
  copyContent,
  ImageWindowMap,
  prefetchRange,
  ReadAhead,
} from './content.js';
import { LoadCache } from './load-cache.js';

const { errno } = osConstants;

/** Image snapshots whose filesystems are kept open (each a few cached metadata blocks). */
const OPEN_IMAGES = 8;
/** Listed directories kept, counted in entries. */
const DIR_CACHE_ENTRIES = 100_000;

/** A listed directory inside an image, by the names readdir shows. */
interface ImageDir {
  names: string[];
  byName: Map<string, FsNode>;
}

/** What an image snapshot's `.files/` shows: its filesystems, or why there are none. */
type Opened = { files: Filesystem } | { files: undefined; why: string };

/**
 * The files inside image snapshots, for `<name>.files/`: read by cairn's own filesystem
 * readers (src/fs) straight from the mount's chunk cache, so listing a directory or
 * reading a file fetches only the chunks holding its metadata and bytes.
 *
 * An image with no filesystem cairn can read (unknown, or damaged) has no `.files/`: an
 * empty directory would look like an empty filesystem. Why is told once through `notice`.
 * A failure to read the repository itself is not remembered: the next look retries.
 */
export class ImageFileTrees {
  private readonly opened = new LoadCache<Opened>(OPEN_IMAGES, () => 1);
  private readonly dirs = new LoadCache<ImageDir>(DIR_CACHE_ENTRIES, (d) => 1 + d.names.length);
  private readonly told = new Set<string>();

  constructor(
    private readonly manifest: (snap: StoredSnapshot) => Promise<ManifestIndex>,
    private readonly chunks: ChunkCache,
    private readonly notice: (message: string) => void,
  ) {}

  /** The filesystems inside `snap`, or undefined when none is readable. */
  async files(snap: StoredSnapshot): Promise<Filesystem | undefined> {
    const opened = await this.opened.get(snap.id, () => this.open(snap));
    if (opened.files) return opened.files;
    if (!this.told.has(snap.id)) {
      this.told.add(snap.id);
      this.notice(`image snapshot ${shortHex(snap.id)} shows no files: ${opened.why}`);
    }
    return undefined;
  }

  /** The node at `names` (display names) below the root of `files`. */
  async lookup(snap: StoredSnapshot, files: Filesystem, names: string[]): Promise<FsNode> {
    let node = files.root;
    for (const [i, name] of names.entries()) {
      if (node.stat.type !== 'dir') throw new FsError(errno.ENOTDIR);
      const dir = await this.dir(snap, files, node, names.slice(0, i));
      const next = dir.byName.get(name);
      if (!next) throw new FsError(errno.ENOENT);
      node = next;
    }
    return node;
  }

  /** The names in directory `node`, found at `names`. */
  async list(
    snap: StoredSnapshot,
    files: Filesystem,
    node: FsNode,
    names: string[],
  ): Promise<string[]> {
    if (node.stat.type !== 'dir') throw new FsError(errno.ENOTDIR);
    return (await this.dir(snap, files, node, names)).names;
  }

  /** A regular file inside `snap`'s image, to read. */
  async openFile(snap: StoredSnapshot, files: Filesystem, node: FsNode): Promise<ImageFileReader> {
    const index = await this.manifest(snap);
    const file = await files.open(node);
    const extents = await files.extents(node);
    return new ImageFileReader(
      file,
      extents,
      new ImageWindowMap(index, 0, index.size),
      this.chunks,
    );
  }

  private async open(snap: StoredSnapshot): Promise<Opened> {
    const source = imageSource(await this.manifest(snap), this.chunks);
    try {
      const { files, volumes } = await openSnapshotFiles(source, snap);
      if (files) return { files };
      const why = volumes.map((v) => (v.partition ? `part${v.partition}: ${v.note}` : v.note));
      return { files: undefined, why: why.filter(Boolean).join('; ') || 'no volumes' };
    } catch (err) {
      if (!(err instanceof CairnError) || err.code !== 'Damaged') throw err;
      return { files: undefined, why: err.message };
    }
  }

  /** Keyed by path: what a path inside one snapshot names never changes. */
  private dir(
    snap: StoredSnapshot,
    files: Filesystem,
    node: FsNode,
    names: string[],
  ): Promise<ImageDir> {
    return this.dirs.get(`${snap.id}/${names.join('/')}`, async () => {
      const byName = new Map<string, FsNode>();
      // As in a file snapshot's trees: a UTF-8 name spelled like another's escaped form
      // keeps the first.
      for (const e of await files.readdir(node)) {
        const name = jsonText(e.name);
        if (!byName.has(name)) byName.set(name, e.node);
      }
      return { names: [...byName.keys()], byName };
    });
  }
}

/**
 * An open file inside an image, read as FUSE asks: into its buffer, at any offset. Once
 * reads are sequential, the chunks holding the file's next bytes (found through its
 * extents, in image offsets) are fetched ahead, as for a snapshot's own files.
 */
export class ImageFileReader {
  private readonly ahead: ReadAhead;

  constructor(
    private readonly file: OpenFile,
    extents: readonly Extent[],
    image: ImageWindowMap,
    cache: ChunkCache,
  ) {
    const starts: number[] = [];
    let at = 0;
    for (const e of extents) {
      starts.push(at);
      at += e.length;
    }
    this.ahead = new ReadAhead(file.stat.size, cache, async (from, until, stopped) => {
      for (const [i, e] of extents.entries()) {
        const start = starts[i]!;
        if (e.kind !== 'data' || start + e.length <= from || start >= until) continue;
        const lo = e.offset + Math.max(0, from - start);
        const hi = e.offset + Math.min(e.length, until - start);
        const reached = await prefetchRange(image, cache, lo, hi, stopped);
        if (reached < hi) return start + (reached - e.offset);
      }
      return until;
    });
  }

  async read(buf: Buffer, length: number, position: number): Promise<number> {
    this.ahead.track(position, Math.min(position + length, this.file.stat.size));
    const data = await this.file.read(position, length);
    data.copy(buf);
    return data.length;
  }

  close(): void {
    this.ahead.close();
  }
}

/**
 * An image's bytes through the mount's chunk cache, with no read-ahead: filesystem
 * metadata is read at scattered offsets, and a file's own reads ask for what they need.
 */
export function imageSource(index: ManifestIndex, chunks: ChunkCache): ByteSource {
  const map = new ImageWindowMap(index, 0, index.size);
  return {
    size: map.size,
    async read(offset: number, length: number): Promise<Buffer> {
      const end = Math.min(offset + length, map.size);
      if (!(offset >= 0 && end > offset)) return Buffer.alloc(0);
      const out = Buffer.alloc(end - offset);
      await copyContent(map, chunks, out, offset, end);
      return out;
    },
  };
}
