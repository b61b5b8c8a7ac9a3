import { createHash } from 'node:crypto';
import { type BigIntStats, constants, type Stats } from 'node:fs';
import { lstat, open, readdir, readFile, readlink } from 'node:fs/promises';
import { resolve } from 'node:path';
import { getAttribute, listAttributes } from 'fs-xattr';
import { isAllZero } from '../../src/chunker/index.js';
import type { ContentPart, EntryType, TreeEntry, Xattr } from '../../src/files/tree.js';
import { encodeTree } from '../../src/files/tree.js';
import type { BlobStore } from '../../src/repo/blob-store.js';
import type { Repository } from '../../src/repo/repository.js';
import type { StoredSnapshot } from '../../src/repo/snapshot.js';

/**
 * Test fixture builder independent of `cairn backup`: turns a real directory into tree blobs
 * and a file snapshot of its absolute path (root tree → each parent component → the dir),
 * with full metadata. Content is cut into fixed-size chunks; all-zero chunks become holes.
 */
export interface SnapshotDirOptions {
  chunkSize?: number;
  tags?: string[];
  hostname?: string;
  time?: string;
}

const O_PATH = 0o10000000;

export async function snapshotDir(
  repo: Repository,
  dir: string,
  opts: SnapshotDirOptions = {},
): Promise<StoredSnapshot> {
  const store = await repo.blobs();
  const abs = resolve(dir);
  const ctx = { store, chunkSize: opts.chunkSize ?? 64 << 10, size: 0 };
  let id = await putDir(ctx, Buffer.from(abs));
  const names = abs.split('/').filter(Boolean);
  for (let i = names.length - 1; i >= 0; i--) {
    const path = `/${names.slice(0, i + 1).join('/')}`;
    const entry = await entryFor(ctx, Buffer.from(path), Buffer.from(names[i]!));
    entry.subtree = id;
    id = (await store.put('tree', encodeTree({ entries: [entry] }))).id;
  }
  await store.flush();
  const snap = {
    time: opts.time ?? new Date().toISOString(),
    hostname: opts.hostname ?? 'testhost',
    username: 'tester',
    kind: 'files' as const,
    paths: [abs],
    tags: opts.tags ?? [],
    root: id.toString('hex'),
    size: ctx.size,
  };
  return { ...snap, id: await repo.saveSnapshot(snap) };
}

interface Ctx {
  store: BlobStore;
  chunkSize: number;
  size: number;
}

async function putDir(ctx: Ctx, dir: Buffer): Promise<Buffer> {
  const names = (await readdir(dir, { encoding: 'buffer' })).sort(Buffer.compare);
  const entries: TreeEntry[] = [];
  for (const name of names) {
    const path = Buffer.concat([dir, Buffer.from('/'), name]);
    const entry = await entryFor(ctx, path, name);
    if (entry.type === 'dir') entry.subtree = await putDir(ctx, path);
    entries.push(entry);
  }
  return (await ctx.store.put('tree', encodeTree({ entries }))).id;
}

async function entryFor(ctx: Ctx, path: Buffer, name: Buffer): Promise<TreeEntry> {
  const st = await lstat(path, { bigint: true });
  const type = typeOf(st, path);
  const entry: TreeEntry = {
    name,
    type,
    mode: Number(st.mode & 0o7777n),
    uid: Number(st.uid),
    gid: Number(st.gid),
    user: '',
    group: '',
    mtimeNs: st.mtimeNs,
    ctimeNs: st.ctimeNs,
    device: Number(st.dev),
    inode: Number(st.ino),
    nlink: Number(st.nlink),
    size: type === 'file' ? Number(st.size) : 0,
    xattrs: await xattrsOf(path),
  };
  if (type === 'file') {
    entry.content = await putContent(ctx, path);
    ctx.size += entry.size;
  } else if (type === 'symlink') entry.target = await readlink(path, { encoding: 'buffer' });
  else if (type === 'chardev' || type === 'blockdev') entry.rdev = Number(st.rdev);
  return entry;
}

function typeOf(st: BigIntStats | Stats, path: Buffer): EntryType {
  if (st.isFile()) return 'file';
  if (st.isDirectory()) return 'dir';
  if (st.isSymbolicLink()) return 'symlink';
  if (st.isFIFO()) return 'fifo';
  if (st.isCharacterDevice()) return 'chardev';
  if (st.isBlockDevice()) return 'blockdev';
  throw new Error(`unsupported file type at ${path.toString()}`);
}

async function putContent(ctx: Ctx, path: Buffer): Promise<ContentPart[]> {
  const data = await readFile(path);
  const parts: ContentPart[] = [];
  for (let off = 0; off < data.length; off += ctx.chunkSize) {
    const piece = data.subarray(off, off + ctx.chunkSize);
    const last = parts.at(-1);
    if (!isAllZero(piece))
      parts.push({ id: (await ctx.store.put('data', piece)).id, length: piece.length });
    else if (last && !last.id) last.length += piece.length;
    else parts.push({ id: null, length: piece.length });
  }
  return parts;
}

/** Through an O_PATH descriptor, as restore does: works for any name and any file type. */
export async function xattrsOf(path: Buffer | string): Promise<Xattr[]> {
  const fh = await open(path, O_PATH | constants.O_NOFOLLOW);
  try {
    const proc = `/proc/self/fd/${fh.fd}`;
    const names = (await listAttributes(proc)).sort();
    const out: Xattr[] = [];
    for (const n of names) out.push({ name: Buffer.from(n), value: await getAttribute(proc, n) });
    return out.sort((a, b) => Buffer.compare(a.name, b.name));
  } finally {
    await fh.close();
  }
}

/** What a restore must reproduce of one entry (atime and ctime cannot be restored). */
export interface EntryFacts {
  type: EntryType;
  mode: number;
  uid: number;
  gid: number;
  /** Microseconds: utimes cannot set nanoseconds. */
  mtimeUs: bigint;
  size: number;
  sha256?: string;
  target?: string;
  rdev?: number;
  xattrs: string[];
  /** For the second and later names of a hard-linked inode: the first name, and nlink. */
  linkOf?: string;
  nlink?: number;
}

/**
 * Every entry below `dir` keyed by its relative path (bytes as latin1, so any name is a
 * key), for comparing a source tree with its restored copy with toEqual.
 */
export async function describeTree(dir: string): Promise<Record<string, EntryFacts>> {
  const out: Record<string, EntryFacts> = {};
  const inodes = new Map<bigint, string>();
  const visit = async (abs: Buffer, rel: string) => {
    const names = (await readdir(abs, { encoding: 'buffer' })).sort(Buffer.compare);
    for (const name of names) {
      const path = Buffer.concat([abs, Buffer.from('/'), name]);
      const key = rel + name.toString('latin1');
      const st = await lstat(path, { bigint: true });
      const type = typeOf(st, path);
      const facts: EntryFacts = {
        type,
        mode: Number(st.mode & 0o7777n),
        uid: Number(st.uid),
        gid: Number(st.gid),
        mtimeUs: st.mtimeNs / 1000n,
        size: type === 'file' ? Number(st.size) : 0,
        xattrs: (await xattrsOf(path)).map((x) => `${x.name}=${x.value.toString('hex')}`),
      };
      if (type === 'file')
        facts.sha256 = createHash('sha256')
          .update(await readFile(path))
          .digest('hex');
      if (type === 'symlink')
        facts.target = (await readlink(path, { encoding: 'buffer' })).toString('latin1');
      if (type === 'chardev' || type === 'blockdev') facts.rdev = Number(st.rdev);
      if (type !== 'dir' && st.nlink > 1n) {
        const first = inodes.get(st.ino);
        if (first) Object.assign(facts, { linkOf: first, nlink: Number(st.nlink) });
        else inodes.set(st.ino, key);
      }
      out[key] = facts;
      if (type === 'dir') await visit(path, `${key}/`);
    }
  };
  await visit(Buffer.from(resolve(dir)), '');
  return out;
}
