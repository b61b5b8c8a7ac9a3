import { CairnError } from '../errors.js';
import { childPath, displayText, rootPath, splitUserPath } from '../files/paths.js';
import { compareNames } from '../files/tree.js';
import { damaged, ExtentMap, MAX_READ, readContent } from './source.js';
import type { Extent, FsDirent, FsNode, FsStat } from './types.js';

/**
 * Path-based, read-only access to the files of one filesystem (or of a whole disk, its
 * partitions as `part<N>` directories), over the nodes a reader gives. Paths are absolute
 * within the filesystem; symlinks are never followed (as in a snapshot's tree); names are
 * bytes, checked here once for every reader so none can climb out of a restore target.
 */

/** Deeper than any path Linux can name (PATH_MAX 4096 = 2048 one-letter components). */
const MAX_DEPTH = 2048;

export interface WalkEntry {
  path: Buffer;
  node: FsNode;
  stat: FsStat;
  /** A symlink's target. */
  target?: Buffer;
  /** A file's content layout in image offsets (with `WalkOptions.extents`). */
  extents?: Extent[];
}

export interface WalkOptions {
  /** Also give each readable file's extents: a content identity that needs no data. */
  extents?: boolean;
  /**
   * Called for an entry or directory the filesystem's structures do not let us read; the
   * walk goes on without it. Without `onError`, the walk throws instead.
   */
  onError?: (path: Buffer, err: CairnError) => void;
  /** Whether to walk into a directory (default: always). */
  descend?: (path: Buffer, stat: FsStat) => boolean;
}

export interface OpenFile {
  stat: FsStat;
  /** Where the content lies, data offsets in the image (as `Filesystem.extents` gives). */
  extents: Extent[];
  /** Up to `length` bytes at `offset` (fewer past the end; holes as zeros). */
  read(offset: number, length: number): Promise<Buffer>;
}

export interface DirEntry {
  name: Buffer;
  node: FsNode;
}

export class Filesystem {
  constructor(readonly root: FsNode) {}

  get type(): string {
    return this.root.volume.type;
  }

  /** The node at `path`; NotFound when there is none. */
  async lookup(path: string | Buffer): Promise<FsNode> {
    let node = this.root;
    const names = splitPath(path);
    for (const [i, name] of names.entries()) {
      if (node.stat.type !== 'dir') throw notFound(path, names, i, 'is not a directory');
      let next: FsNode | undefined;
      for await (const d of node.entries()) {
        if (!d.name.equals(name)) continue;
        next = await d.load();
        break;
      }
      if (!next) throw notFound(path, names, i + 1, 'does not exist');
      node = next;
    }
    return node;
  }

  /** A node as given (e.g. by `walk`), or the one at a path. */
  private node(at: string | Buffer | FsNode): Promise<FsNode> {
    return typeof at === 'string' || Buffer.isBuffer(at) ? this.lookup(at) : Promise.resolve(at);
  }

  async stat(path: string | Buffer): Promise<FsStat> {
    return (await this.node(path)).stat;
  }

  /** A directory's entries (at a path, or of a node), sorted by name bytes. */
  async readdir(path: string | Buffer | FsNode): Promise<DirEntry[]> {
    const dir = await this.node(path);
    if (dir.stat.type !== 'dir') throw new CairnError(`${show(path)} is not a directory`);
    const out: DirEntry[] = [];
    for (const d of await sortedEntries(dir)) {
      const node = await d.load();
      if (node) out.push({ name: d.name, node });
    }
    return out;
  }

  /** A regular file's bytes (at a path, or of a node from `walk`), streamed; holes as zeros. */
  async *readFile(path: string | Buffer | FsNode): AsyncGenerator<Buffer> {
    const node = await this.node(path);
    checkReadable(node, show(path));
    for await (const piece of readContent(node.volume.source, node.extents())) yield piece.data;
  }

  /** Random access to a regular file's bytes (as a FUSE read needs). */
  async open(path: string | Buffer | FsNode): Promise<OpenFile> {
    const node = await this.node(path);
    checkReadable(node, show(path));
    const extents: Extent[] = [];
    for await (const e of node.extents()) extents.push(e);
    const map = new ExtentMap(node.volume.source, extents);
    return {
      stat: node.stat,
      extents: extents.map((e) => toImage(e, node.volume.origin)),
      read: async (offset, length) => {
        const end = Math.min(offset + length, map.size);
        const parts: Buffer[] = [];
        for (let at = Math.max(0, offset); at < end; at += MAX_READ) {
          parts.push(await map.read(at, Math.min(MAX_READ, end - at), `${show(path)} content`));
        }
        return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
      },
    };
  }

  async readlink(path: string | Buffer | FsNode): Promise<Buffer> {
    const node = await this.node(path);
    if (node.stat.type !== 'symlink') throw new CairnError(`${show(path)} is not a symlink`);
    return node.readlink();
  }

  /** A file's extents with offsets in the image. */
  async extents(path: string | Buffer | FsNode): Promise<Extent[]> {
    const node = await this.node(path);
    checkReadable(node, show(path));
    return imageExtents(node);
  }

  /**
   * Every entry at and below `path` (the root itself is not given) in depth-first order
   * (as find(1): a directory, then what is inside it, then its next sibling), each
   * directory's entries sorted by name bytes. A directory met twice (a loop in a damaged
   * filesystem) is walked once.
   */
  async *walk(path: string | Buffer = '/', opts: WalkOptions = {}): AsyncGenerator<WalkEntry> {
    const start = await this.lookup(path);
    const startPath = joinPath(splitPath(path));
    const report = (p: Buffer, err: unknown) => {
      if (!opts.onError || !(err instanceof CairnError) || err.code !== 'Damaged') throw err;
      opts.onError(p, err);
    };
    const first = await describe(startPath, start, opts, report);
    if (startPath.length > 1 && first) yield first;
    const seen = new Set<string>();
    const stack: Frame[] = [];
    const enter = async (p: Buffer, node: FsNode) => {
      const key = `${node.stat.device}:${node.stat.inode}`;
      if (seen.has(key)) {
        report(p, damaged(`directory loop: ${displayText(p)} was met before`));
      } else if (stack.length >= MAX_DEPTH) {
        report(p, damaged(`directory tree deeper than ${MAX_DEPTH} levels`));
      } else {
        seen.add(key);
        stack.push({
          path: p,
          entries: await sortedEntries(node, (err) => report(p, err)),
          next: 0,
        });
      }
    };
    if (start.stat.type === 'dir') await enter(startPath, start);
    while (stack.length > 0) {
      const dir = stack[stack.length - 1]!;
      const d = dir.entries[dir.next++];
      if (!d) {
        stack.pop();
        continue;
      }
      const p = childPath(dir.path, d.name);
      let node: FsNode | undefined;
      try {
        node = await d.load();
      } catch (err) {
        report(p, err);
        continue;
      }
      const entry = node && (await describe(p, node, opts, report));
      if (!node || !entry) continue;
      yield entry;
      if (node.stat.type === 'dir' && (opts.descend?.(p, node.stat) ?? true)) await enter(p, node);
    }
  }
}

interface Frame {
  path: Buffer;
  entries: FsDirent[];
  next: number;
}

/** A walk entry with its target or extents, or undefined when those cannot be read. */
async function describe(
  path: Buffer,
  node: FsNode,
  opts: WalkOptions,
  report: (p: Buffer, err: unknown) => void,
): Promise<WalkEntry | undefined> {
  const entry: WalkEntry = { path, node, stat: node.stat };
  try {
    if (node.stat.type === 'symlink') entry.target = await node.readlink();
    if (opts.extents && node.stat.type === 'file' && !node.stat.unreadable) {
      entry.extents = await imageExtents(node);
    }
  } catch (err) {
    report(path, err);
    return undefined;
  }
  return entry;
}

/** A node's extents, data offsets moved from its volume to the image. */
export async function imageExtents(node: FsNode): Promise<Extent[]> {
  const out: Extent[] = [];
  const origin = node.volume.origin;
  for await (const e of node.extents()) out.push(toImage(e, origin));
  return out;
}

function toImage(e: Extent, origin: number): Extent {
  return e.kind === 'data' ? { ...e, offset: e.offset + origin } : e;
}

function checkReadable(node: FsNode, what: string): void {
  const t = node.stat.type;
  if (t !== 'file') throw new CairnError(`${what} is a ${t === 'dir' ? 'directory' : t}`);
  if (node.stat.unreadable) {
    throw new CairnError(`${what} cannot be read: it is ${node.stat.unreadable}`);
  }
}

/**
 * A directory's entries sorted by name, without names that could escape a target (empty,
 * `.`, `..`, containing `/` or NUL) or that repeat one before: each kind is reported once
 * per directory. A listing that breaks off gives what was read before, and the error to
 * `onError` (or throws).
 */
async function sortedEntries(dir: FsNode, onError?: (err: unknown) => void): Promise<FsDirent[]> {
  const report = (err: unknown) => {
    if (!onError) throw err;
    onError(err);
  };
  const out: FsDirent[] = [];
  try {
    for await (const d of dir.entries()) out.push(d);
  } catch (err) {
    report(err);
  }
  out.sort((a, b) => compareNames(a.name, b.name));
  const bad = { invalid: [] as Buffer[], repeated: [] as Buffer[] };
  const kept = out.filter((d, i) => {
    const repeated = i > 0 && d.name.equals(out[i - 1]!.name);
    if (repeated || !validName(d.name)) bad[repeated ? 'repeated' : 'invalid'].push(d.name);
    return !repeated && validName(d.name);
  });
  for (const [kind, names] of Object.entries(bad)) {
    if (names.length === 0) continue;
    const example = JSON.stringify(displayText(names[0]!));
    report(damaged(`directory has ${names.length} ${kind} name(s), such as ${example}`));
  }
  return kept;
}

function validName(name: Buffer): boolean {
  return !(
    name.length === 0 ||
    name.equals(DOT) ||
    name.equals(DOTDOT) ||
    name.includes(0x2f) ||
    name.includes(0)
  );
}

const DOT = Buffer.from('.');
const DOTDOT = Buffer.from('..');

function splitPath(path: string | Buffer): Buffer[] {
  if (typeof path === 'string') return splitUserPath(path).map((c) => Buffer.from(c));
  const out: Buffer[] = [];
  let from = 0;
  for (let i = 0; i <= path.length; i++) {
    if (i < path.length && path[i] !== 0x2f) continue;
    const c = path.subarray(from, i);
    if (c.length > 0 && !c.equals(DOT) && !c.equals(DOTDOT)) out.push(c);
    from = i + 1;
  }
  return out;
}

function joinPath(names: Buffer[]): Buffer {
  return names.reduce((p, n) => childPath(p, n), rootPath());
}

function show(path: string | Buffer | FsNode): string {
  if (typeof path === 'string') return displayText(path);
  return Buffer.isBuffer(path) ? displayText(path) : `inode ${path.stat.inode}`;
}

/** `path` not found, and why when the cause is a component before the last one. */
function notFound(path: string | Buffer, names: Buffer[], upTo: number, why: string): CairnError {
  const prefix = joinPath(names.slice(0, upTo));
  const detail = upTo === names.length ? '' : `: ${displayText(prefix)} ${why}`;
  return new CairnError(`${show(path)} not found${detail}`, 'NotFound');
}
