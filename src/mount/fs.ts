import { constants } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { loadTree } from '../files/browse.js';
import { jsonText } from '../files/paths.js';
import type { TreeEntry } from '../files/tree.js';
import { loadManifest, ManifestIndex, type Partition } from '../image/index.js';
import { LruCache } from '../image/lru.js';
import { isExtended } from '../image/partitions.js';
import { hex } from '../repo/blob.js';
import type { BlobStore } from '../repo/blob-store.js';
import type { StoredSnapshot } from '../repo/snapshot.js';
import { type ChunkCache, ContentReader, ImageWindowMap, PartsMap } from './content.js';
import { type SnapshotList, type SnapshotNode, safeName, type VNode } from './layout.js';

const { errno } = osConstants;

/** An error a filesystem call answers with: `errno` as the kernel knows it (positive). */
export class FsError extends Error {
  constructor(readonly errno: number) {
    super(`errno ${errno}`);
  }
}

/** What stat shows of a node. */
export interface Attr {
  /** File type and permission bits, as st_mode. */
  mode: number;
  uid: number;
  gid: number;
  size: number;
  nlink: number;
  mtimeMs: number;
  ctimeMs: number;
  rdev: number;
  /** 512-byte blocks stored: holes take none. */
  blocks: number;
}

type Node =
  | VNode
  | { type: 'entry'; entry: TreeEntry }
  | { type: 'image'; snap: StoredSnapshot; mtimeMs: number; start: number; size: number };

/** A directory of a file snapshot, by the names readdir shows. */
interface TreeDir {
  names: string[];
  byName: Map<string, TreeEntry>;
  subdirs: number;
}

const TYPE_BITS: Record<TreeEntry['type'], number> = {
  file: constants.S_IFREG,
  dir: constants.S_IFDIR,
  symlink: constants.S_IFLNK,
  fifo: constants.S_IFIFO,
  chardev: constants.S_IFCHR,
  blockdev: constants.S_IFBLK,
};

/** Decoded directories kept, counted in entries. */
const DIR_CACHE_ENTRIES = 200_000;
/** Image manifests kept; each caches up to 64 decoded segments (≈ 10 MiB). */
const IMAGE_CACHE = 4;

/**
 * The read-only filesystem over a repository, by path as the FUSE high-level API asks:
 * the virtual directories of `layout.ts`, then a file snapshot's trees or an image
 * snapshot's `<name>.img` and `<name>-part<N>.img` files. Names that are not valid UTF-8
 * (the binding passes names as strings) are shown with each invalid byte as `\xNN`, as
 * `cairn ls` prints them; symlink targets are passed as UTF-8 text.
 */
export class SnapshotFs {
  private readonly dirs = new LoadCache<TreeDir>(DIR_CACHE_ENTRIES, (d) => 1 + d.names.length);
  private readonly images = new LoadCache<ManifestIndex>(IMAGE_CACHE, () => 1);
  private readonly handles = new Map<number, ContentReader>();
  private nextHandle = 1;
  private readonly uid = process.getuid?.() ?? 0;
  private readonly gid = process.getgid?.() ?? 0;

  constructor(
    private readonly store: BlobStore,
    private readonly list: SnapshotList,
    private readonly chunks: ChunkCache,
  ) {}

  async getattr(path: string): Promise<Attr> {
    const node = await this.resolve(path);
    switch (node.type) {
      case 'entry':
        return entryAttr(node.entry);
      case 'image':
        return this.virtual(constants.S_IFREG | 0o444, node.mtimeMs, node.size);
      case 'vlink':
        return this.virtual(constants.S_IFLNK | 0o777, node.mtimeMs, node.target.length);
      case 'vdir': {
        const subdirs = [...node.children.values()].filter((c) => c.type !== 'vlink').length;
        return { ...this.virtual(constants.S_IFDIR | 0o555, node.mtimeMs, 0), nlink: 2 + subdirs };
      }
      case 'snapshot': {
        const subdirs = node.snap.kind === 'files' ? (await this.rootDir(node.snap)).subdirs : 0;
        return { ...this.virtual(constants.S_IFDIR | 0o555, node.mtimeMs, 0), nlink: 2 + subdirs };
      }
    }
  }

  async readdir(path: string): Promise<string[]> {
    const node = await this.resolve(path);
    let names: Iterable<string>;
    if (node.type === 'vdir') names = node.children.keys();
    else if (node.type === 'snapshot' && node.snap.kind === 'image') {
      names = imageFiles(node.snap).keys();
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
    throw new FsError(errno.EINVAL);
  }

  /** Opens a file for reading; returns its handle. */
  async open(path: string, flags: number): Promise<number> {
    if (flags & (constants.O_WRONLY | constants.O_RDWR)) throw new FsError(errno.EROFS);
    const node = await this.resolve(path);
    let reader: ContentReader;
    if (node.type === 'entry' && node.entry.type === 'file') {
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
    if (node.snap.kind === 'image') {
      const file = names.length === 1 ? imageFiles(node.snap).get(names[0]!) : undefined;
      if (!file) throw new FsError(names.length === 1 ? errno.ENOENT : errno.ENOTDIR);
      return { type: 'image', snap: node.snap, mtimeMs: node.mtimeMs, ...file };
    }
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

/** Decoded objects by ID, bounded by weight; concurrent loads of one ID share one load. */
class LoadCache<T> {
  private readonly done: LruCache<string, T>;
  private readonly loading = new Map<string, Promise<T>>();

  constructor(
    capacity: number,
    private readonly weigh: (value: T) => number,
  ) {
    this.done = new LruCache(capacity);
  }

  async get(key: string, load: () => Promise<T>): Promise<T> {
    const hit = this.done.get(key);
    if (hit) return hit;
    let p = this.loading.get(key);
    if (!p) {
      p = load()
        .then((value) => {
          this.done.set(key, value, this.weigh(value));
          return value;
        })
        .finally(() => this.loading.delete(key));
      this.loading.set(key, p);
    }
    return p;
  }
}

function entryAttr(e: TreeEntry): Attr {
  const stored = (e.content ?? []).reduce((n, p) => n + (p.id ? p.length : 0), 0);
  return {
    mode: TYPE_BITS[e.type] | e.mode,
    uid: e.uid,
    gid: e.gid,
    size: e.type === 'symlink' ? e.target!.length : e.size,
    nlink: Math.max(1, e.nlink),
    mtimeMs: Number(e.mtimeNs / 1_000_000n),
    ctimeMs: Number(e.ctimeNs / 1_000_000n),
    rdev: e.rdev ?? 0,
    blocks: Math.ceil(stored / 512),
  };
}

/**
 * An image snapshot's files: the whole image as `<name>.img`, and each partition the
 * backup found (not MBR extended containers, which hold no filesystem) as a window onto it.
 */
function imageFiles(snap: StoredSnapshot): Map<string, { start: number; size: number }> {
  const base = safeName(snap.name ?? 'image');
  const files = new Map([[`${base}.img`, { start: 0, size: snap.size }]]);
  const parts = snap.extra?.partitions;
  for (const p of Array.isArray(parts) ? (parts as Partition[]) : []) {
    const valid =
      Number.isSafeInteger(p.number) &&
      Number.isSafeInteger(p.start) &&
      Number.isSafeInteger(p.size) &&
      p.start >= 0 &&
      p.start + p.size <= snap.size;
    if (valid && !isExtended(p)) {
      files.set(`${base}-part${p.number}.img`, { start: p.start, size: p.size });
    }
  }
  return files;
}
