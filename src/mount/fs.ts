import { constants } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { shortHex } from '../errors.js';
import { loadTree } from '../files/browse.js';
import { jsonText } from '../files/paths.js';
import type { TreeEntry } from '../files/tree.js';
import type { Filesystem, FsNode } from '../fs/index.js';
import { loadManifest, ManifestIndex } from '../image/index.js';
import { hex } from '../repo/blob.js';
import type { BlobStore } from '../repo/blob-store.js';
import type { StoredSnapshot } from '../repo/snapshot.js';
import { type Attr, entryAttr, FsError, fsAttr } from './attr.js';
import { type ChunkCache, ContentReader, ImageWindowMap, PartsMap } from './content.js';
import { ImageFileTrees } from './image-files.js';
import {
  errorText,
  imageEntries,
  type SnapshotList,
  type SnapshotNode,
  type VNode,
} from './layout.js';
import { LoadCache } from './load-cache.js';

export { type Attr, FsError } from './attr.js';

const { errno } = osConstants;

type Node =
  | VNode
  | { type: 'entry'; entry: TreeEntry }
  | { type: 'image'; snap: StoredSnapshot; mtimeMs: number; start: number; size: number }
  /** Inside `<name>.files/`: `names` is its path there. */
  | { type: 'inner'; snap: StoredSnapshot; files: Filesystem; node: FsNode; names: string[] };

/** A directory of a file snapshot, by the names readdir shows. */
interface TreeDir {
  names: string[];
  byName: Map<string, TreeEntry>;
  subdirs: number;
}

/** An open file: a snapshot's file, an image, or a file inside an image. */
interface Reader {
  read(buf: Buffer, length: number, position: number): Promise<number>;
  close(): void;
}

/** Decoded directories kept, counted in entries. */
const DIR_CACHE_ENTRIES = 200_000;
/** Image manifests kept; each caches up to 64 decoded segments (≈ 10 MiB). */
const IMAGE_CACHE = 4;

/**
 * The read-only filesystem over a repository, by path as the FUSE high-level API asks:
 * the virtual directories of `layout.ts`, then a file snapshot's trees or an image
 * snapshot's `<name>.img` and `<name>-part<N>.img` files and `<name>.files/` (see
 * `image-files.ts`). Names that are not valid UTF-8
 * (the binding passes names as strings) are shown with each invalid byte as `\xNN`, as
 * `cairn ls` prints them; symlink targets are passed as UTF-8 text.
 */
export class SnapshotFs {
  private readonly dirs = new LoadCache<TreeDir>(DIR_CACHE_ENTRIES, (d) => 1 + d.names.length);
  private readonly images = new LoadCache<ManifestIndex>(IMAGE_CACHE, () => 1);
  private readonly handles = new Map<number, Reader>();
  private readonly inner: ImageFileTrees;
  private nextHandle = 1;
  private readonly uid = process.getuid?.() ?? 0;
  private readonly gid = process.getgid?.() ?? 0;

  constructor(
    private readonly store: BlobStore,
    private readonly list: SnapshotList,
    private readonly chunks: ChunkCache,
    private readonly onNotice: (message: string) => void = () => undefined,
  ) {
    this.inner = new ImageFileTrees((snap) => this.imageIndex(snap), chunks, onNotice);
  }

  async getattr(path: string): Promise<Attr> {
    const node = await this.resolve(path);
    switch (node.type) {
      case 'entry':
        return entryAttr(node.entry);
      case 'inner':
        return fsAttr(node.node.stat);
      case 'image':
        // Only for whoever mounted: other users (allow_other) see what the permissions
        // recorded inside the image let them see, in `.files/`, not every byte of it.
        return this.virtual(constants.S_IFREG | 0o400, node.mtimeMs, node.size);
      case 'vlink':
        return this.virtual(constants.S_IFLNK | 0o777, node.mtimeMs, node.target.length);
      case 'vdir': {
        const subdirs = [...node.children.values()].filter((c) => c.type !== 'vlink').length;
        return { ...this.virtual(constants.S_IFDIR | 0o555, node.mtimeMs, 0), nlink: 2 + subdirs };
      }
      case 'snapshot': {
        // An image's `.files/` is known only once its filesystem is opened, which a stat
        // of every snapshot directory should not cost: 1, a directory's "not counted".
        const nlink = node.snap.kind === 'files' ? 2 + (await this.rootDir(node.snap)).subdirs : 1;
        return { ...this.virtual(constants.S_IFDIR | 0o555, node.mtimeMs, 0), nlink };
      }
    }
  }

  async readdir(path: string): Promise<string[]> {
    const node = await this.resolve(path);
    let names: Iterable<string>;
    if (node.type === 'vdir') names = node.children.keys();
    else if (node.type === 'snapshot' && node.snap.kind === 'image') {
      names = imageEntries(node.snap, await this.hasFiles(node.snap)).keys();
    } else if (node.type === 'inner') {
      names = await this.inner.list(node.snap, node.files, node.node, node.names);
    } else if (node.type === 'snapshot') names = (await this.rootDir(node.snap)).names;
    else if (node.type === 'entry' && node.entry.type === 'dir') {
      names = (await this.treeDir(node.entry.subtree!)).names;
    } else throw new FsError(errno.ENOTDIR);
    return ['.', '..', ...names];
  }

  async readlink(path: string): Promise<string> {
    const node = await this.resolve(path);
    if (node.type === 'vlink') return node.target;
    if (node.type === 'entry' && node.entry.type === 'symlink') {
      return node.entry.target!.toString('utf8');
    }
    if (node.type === 'inner' && node.node.stat.type === 'symlink') {
      return (await node.files.readlink(node.node)).toString('utf8');
    }
    throw new FsError(errno.EINVAL);
  }

  /** Opens a file for reading; returns its handle. */
  async open(path: string, flags: number): Promise<number> {
    if (flags & (constants.O_WRONLY | constants.O_RDWR)) throw new FsError(errno.EROFS);
    const node = await this.resolve(path);
    let reader: Reader;
    if (node.type === 'inner' && node.node.stat.type === 'file') {
      reader = await this.inner.openFile(node.snap, node.files, node.node);
    } else if (node.type === 'inner') {
      throw new FsError(node.node.stat.type === 'dir' ? errno.EISDIR : errno.EINVAL);
    } else if (node.type === 'entry' && node.entry.type === 'file') {
      reader = new ContentReader(new PartsMap(node.entry.content ?? []), this.chunks);
    } else if (node.type === 'image') {
      const index = await this.imageIndex(node.snap);
      reader = new ContentReader(new ImageWindowMap(index, node.start, node.size), this.chunks);
    } else {
      throw new FsError(node.type === 'vlink' ? errno.EINVAL : errno.EISDIR);
    }
    const fh = this.nextHandle++;
    this.handles.set(fh, reader);
    return fh;
  }

  async read(fh: number, buf: Buffer, length: number, position: number): Promise<number> {
    const reader = this.handles.get(fh);
    if (!reader) throw new FsError(errno.EBADF);
    return reader.read(buf, length, position);
  }

  release(fh: number): void {
    this.handles.get(fh)?.close();
    this.handles.delete(fh);
  }

  async listxattr(path: string): Promise<string[]> {
    const node = await this.resolve(path);
    if (node.type !== 'entry') return [];
    return node.entry.xattrs.map((x) => x.name.toString('utf8'));
  }

  /** An extended attribute's value, or undefined when the node has none of that name. */
  async getxattr(path: string, name: string): Promise<Buffer | undefined> {
    const node = await this.resolve(path);
    if (node.type !== 'entry') return undefined;
    return node.entry.xattrs.find((x) => x.name.toString('utf8') === name)?.value;
  }

  private async resolve(path: string): Promise<Node> {
    const parts = path.split('/').filter((p) => p !== '');
    let node: VNode = await this.list.current();
    let i = 0;
    while (i < parts.length && node.type === 'vdir') {
      const next: VNode | undefined = node.children.get(parts[i++]!);
      if (!next) throw new FsError(errno.ENOENT);
      node = next;
    }
    if (i === parts.length) return node;
    // The kernel resolves symlinks itself: it never asks for a path through one.
    if (node.type !== 'snapshot') throw new FsError(errno.ENOTDIR);
    return this.resolveInSnapshot(node, parts.slice(i));
  }

  private async resolveInSnapshot(node: SnapshotNode, names: string[]): Promise<Node> {
    if (node.snap.kind === 'image') return this.resolveInImage(node, names);
    let dir = await this.rootDir(node.snap);
    let entry: TreeEntry | undefined;
    for (const name of names) {
      if (entry) {
        if (entry.type !== 'dir') throw new FsError(errno.ENOTDIR);
        dir = await this.treeDir(entry.subtree!);
      }
      entry = dir.byName.get(name);
      if (!entry) throw new FsError(errno.ENOENT);
    }
    return { type: 'entry', entry: entry! };
  }

  private async resolveInImage(node: SnapshotNode, names: string[]): Promise<Node> {
    const { snap } = node;
    const entry = imageEntries(snap, true).get(names[0]!);
    if (entry?.kind === 'img' && names.length === 1) {
      return { type: 'image', snap, mtimeMs: node.mtimeMs, start: entry.start, size: entry.size };
    }
    const files = entry?.kind === 'files' ? await this.inner.files(snap) : undefined;
    if (!files) throw new FsError(entry?.kind === 'img' ? errno.ENOTDIR : errno.ENOENT);
    const inner = names.slice(1);
    return {
      type: 'inner',
      snap,
      files,
      node: await this.inner.lookup(snap, files, inner),
      names: inner,
    };
  }

  /**
   * Whether `<name>.files/` is shown. A failure to read the repository leaves it out of
   * this listing (told), so `<name>.img` can still be listed and read.
   */
  private async hasFiles(snap: StoredSnapshot): Promise<boolean> {
    try {
      return (await this.inner.files(snap)) !== undefined;
    } catch (err) {
      const what = `image snapshot ${shortHex(snap.id)}`;
      this.onNotice(`${what}: the files inside are not shown: ${errorText(err)}`);
      return false;
    }
  }

  private rootDir(snap: StoredSnapshot): Promise<TreeDir> {
    return this.treeDir(Buffer.from(snap.root, 'hex'));
  }

  private treeDir(id: Buffer): Promise<TreeDir> {
    return this.dirs.get(hex(id), async () => {
      const { entries } = await loadTree(this.store, id);
      const byName = new Map<string, TreeEntry>();
      // A UTF-8 name spelled like another's escaped form keeps the first: both stay
      // reachable through `cairn ls` and `restore`, one of them here.
      for (const e of entries) if (!byName.has(jsonText(e.name))) byName.set(jsonText(e.name), e);
      const subdirs = entries.filter((e) => e.type === 'dir').length;
      return { names: [...byName.keys()], byName, subdirs };
    });
  }

  private imageIndex(snap: StoredSnapshot): Promise<ManifestIndex> {
    return this.images.get(snap.id, async () => {
      return new ManifestIndex(this.store, await loadManifest(this.store, snap));
    });
  }

  /** Attributes of something cairn made up (not backed up): owned by whoever mounted. */
  private virtual(mode: number, mtimeMs: number, size: number): Attr {
    return {
      mode,
      uid: this.uid,
      gid: this.gid,
      size,
      nlink: 1,
      mtimeMs,
      ctimeMs: mtimeMs,
      rdev: 0,
      blocks: Math.ceil(size / 512),
    };
  }
}
