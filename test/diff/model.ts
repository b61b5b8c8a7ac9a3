import { createHash } from 'node:crypto';
import type { TreeLoader } from '../../src/diff/index.js';
import {
  type ContentPart,
  decodeTree,
  encodeTree,
  type Tree,
  type TreeEntry,
} from '../../src/files/tree.js';

/**
 * A file tree as plain data, turned into real tree blobs (the codec, content-addressed by
 * SHA-256) in memory, so property tests can build thousands of snapshot pairs quickly.
 * Keys are names as latin1 strings, so any bytes can be a name.
 */
export type MNode =
  | { kind: 'file'; mode: number; mtime: number; chunks: number[] }
  | { kind: 'symlink'; mode: number; mtime: number; target: string }
  | { kind: 'fifo'; mode: number; mtime: number }
  | { kind: 'dir'; mode: number; mtime: number; children: Record<string, MNode> };

export type MDir = Extract<MNode, { kind: 'dir' }>;

/** Chunk n: a hole of 64 bytes for n = 0, else a chunk of 100 + n bytes with its own ID. */
export function part(n: number): ContentPart {
  if (n === 0) return { id: null, length: 64 };
  return { id: createHash('sha256').update(`chunk ${n}`).digest(), length: 100 + n };
}

export class MemoryTrees {
  readonly blobs = new Map<string, Buffer>();
  readonly loaded: string[] = [];

  put(tree: Tree): Buffer {
    const bytes = encodeTree(tree);
    const id = createHash('sha256').update(bytes).digest();
    this.blobs.set(id.toString('hex'), bytes);
    return id;
  }

  readonly load: TreeLoader = async (id) => {
    const hex = id.toString('hex');
    this.loaded.push(hex);
    const bytes = this.blobs.get(hex);
    if (!bytes) throw new Error(`no tree ${hex}`);
    return decodeTree(bytes);
  };

  /**
   * Stores the directory and everything below it; returns its tree ID. `ids` collects each
   * directory's tree ID by path ('' for the root).
   */
  store(dir: MDir, ids = new Map<string, string>(), path = ''): Buffer {
    const names = Object.keys(dir.children).sort((a, b) =>
      Buffer.compare(Buffer.from(a, 'latin1'), Buffer.from(b, 'latin1')),
    );
    const entries = names.map((n) => this.entry(n, dir.children[n]!, ids, `${path}/${n}`));
    const id = this.put({ entries });
    ids.set(path, id.toString('hex'));
    return id;
  }

  private entry(key: string, node: MNode, ids: Map<string, string>, path: string): TreeEntry {
    const name = Buffer.from(key, 'latin1');
    const e: TreeEntry = {
      name,
      type: node.kind,
      mode: node.mode,
      uid: 1000,
      gid: 1000,
      user: 'u',
      group: 'g',
      mtimeNs: BigInt(node.mtime),
      ctimeNs: BigInt(node.mtime),
      device: 1,
      inode: 0,
      nlink: 1,
      size: 0,
      xattrs: [],
    };
    if (node.kind === 'file') {
      e.content = node.chunks.map(part);
      e.size = e.content.reduce((s, p) => s + p.length, 0);
    } else if (node.kind === 'symlink') e.target = Buffer.from(node.target, 'latin1');
    else if (node.kind === 'dir') e.subtree = this.store(node, ids, path);
    return e;
  }
}

/** Every path below `dir` (latin1, absolute) with its node, parents before children. */
export function* walk(dir: MDir, base = ''): Generator<[string, MNode]> {
  for (const [name, node] of Object.entries(dir.children)) {
    const path = `${base}/${name}`;
    yield [path, node];
    if (node.kind === 'dir') yield* walk(node, path);
  }
}
