import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  link,
  lstat,
  mkdir,
  mkdtemp,
  open,
  readdir,
  readFile,
  readlink,
  rm,
  symlink,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'vitest';
import { kindOf } from '../../src/files/fsmeta.js';
import type { Filesystem } from '../../src/fs/index.js';
import type { ByteSource } from '../../src/fs/types.js';
import { sh } from '../image/util.js';

export { hasCommand, isRoot, sh, snapshotById } from '../image/util.js';

/** A ByteSource over a buffer that counts reads and records any read outside it. */
export class BufferSource implements ByteSource {
  reads = 0;
  bytesRead = 0;
  outside: string[] = [];

  constructor(private readonly buf: Buffer) {}

  get size(): number {
    return this.buf.length;
  }

  async read(offset: number, length: number): Promise<Buffer> {
    this.reads++;
    if (
      !(Number.isSafeInteger(offset) && offset >= 0 && length >= 0 && offset + length <= this.size)
    ) {
      this.outside.push(`${offset}+${length}`);
    }
    const out = Buffer.from(this.buf.subarray(offset, offset + length));
    this.bytesRead += out.length;
    return out;
  }
}

/** An empty sparse image file of `mib` MiB. */
export async function blankImage(dir: string, name: string, mib: number): Promise<string> {
  const path = join(dir, name);
  const fh = await open(path, 'w');
  await fh.truncate(mib * 2 ** 20);
  await fh.close();
  return path;
}

/** Runs `fn` with `image` loop-mounted (or through ntfs-3g) at a temp dir. */
export async function withMounted<T>(
  image: string,
  type: 'loop' | 'ntfs-3g',
  fn: (dir: string) => Promise<T>,
): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'cairn-fs-mnt-'));
  if (type === 'ntfs-3g') sh('ntfs-3g', [image, dir]);
  else sh('mount', ['-o', 'loop', image, dir]);
  try {
    return await fn(dir);
  } finally {
    sh('umount', [dir]);
    await rm(dir, { recursive: true, force: true });
  }
}

export interface TreeSpec {
  /** Symlinks (fast and slow), a hard link, a FIFO and a character device. */
  special?: boolean;
  /** Owners with 32-bit IDs, setuid and odd modes, nanosecond mtimes. */
  owners?: boolean;
  /** Files in one directory (enough for an ext htree or an NTFS index allocation). */
  bigDir?: number;
  /** A file of many data runs with holes between them. */
  holes?: boolean;
}

/** A source tree with the kinds of entries `spec` asks for; returns its root. */
export async function makeSourceTree(dir: string, spec: TreeSpec): Promise<string> {
  const root = join(dir, 'src');
  await mkdir(join(root, 'sub/deeper'), { recursive: true });
  const files: [string, Buffer][] = [
    ['empty', Buffer.alloc(0)],
    ['one', Buffer.from('1')],
    ['small.txt', Buffer.from('hello, small file\n'.repeat(5))],
    ['medium.bin', randomBytes(300_000)],
    ['large.bin', randomBytes(3 << 20)],
    ['sub/deeper/nested.bin', randomBytes(70_000)],
    ['sub/Name With Spaces ünïcode.txt', Buffer.from('unicode name\n')],
  ];
  for (const [rel, data] of files) await writeFile(join(root, rel), data);
  if (spec.holes) await writeHoles(join(root, 'holes.bin'));
  if (spec.bigDir) {
    await mkdir(join(root, 'many'));
    for (let i = 0; i < spec.bigDir; i++) {
      const name = `a-file-with-a-longer-name-${String(i).padStart(5, '0')}`;
      await writeFile(join(root, 'many', name), `${i}\n`);
    }
  }
  if (spec.special) {
    await symlink('small.txt', join(root, 'link-fast'));
    await symlink(`${'long/'.repeat(40)}target`, join(root, 'link-slow'));
    await link(join(root, 'medium.bin'), join(root, 'sub/hard-link'));
    sh('mkfifo', [join(root, 'pipe')]);
    sh('mknod', [join(root, 'null-dev'), 'c', '1', '3']);
  }
  if (spec.owners) {
    sh('chown', ['70000:80000', join(root, 'small.txt')]);
    sh('chown', ['1234:5678', join(root, 'sub')]);
    sh('chmod', ['4750', join(root, 'medium.bin')]);
    sh('chmod', ['0600', join(root, 'one')]);
    sh('touch', ['-h', '-d', '2001-02-03 04:05:06.123456789', join(root, 'small.txt')]);
    sh('touch', ['-d', '1999-12-31 23:59:59.987654321', join(root, 'sub/deeper')]);
  }
  return root;
}

/** 48 pieces of 4 KiB, 64 KiB apart, then a hole to 4 MiB: many extents, sparse. */
async function writeHoles(path: string): Promise<void> {
  const fh = await open(path, 'w');
  for (let i = 0; i < 48; i++) await fh.write(randomBytes(4096), 0, 4096, i * 65536);
  await fh.truncate(4 << 20);
  await fh.close();
}

export interface EntryInfo {
  type: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtimeNs: bigint;
  hash?: string;
  target?: string;
  rdev?: number;
  /** For entries with several names: the first path seen with the same inode. */
  linkOf?: string;
}

/** Every entry below `root` on the host, by relative path (`a/b`). */
export async function describeDir(root: string): Promise<Map<string, EntryInfo>> {
  const out = new Map<string, EntryInfo>();
  const inodes = new Map<bigint, string>();
  const visit = async (rel: string) => {
    for (const name of (await readdir(join(root, rel))).sort()) {
      const r = rel ? `${rel}/${name}` : name;
      const p = join(root, r);
      const st = await lstat(p, { bigint: true });
      const type = kindOf(st) ?? 'other';
      const info: EntryInfo = {
        type,
        mode: Number(st.mode & 0o7777n),
        uid: Number(st.uid),
        gid: Number(st.gid),
        size: type === 'file' || type === 'symlink' ? Number(st.size) : 0,
        mtimeNs: st.mtimeNs,
      };
      if (type === 'file') info.hash = sha256(await readFile(p));
      if (type === 'symlink') info.target = await readlink(p);
      if (type === 'chardev') info.rdev = Number(st.rdev);
      if (type !== 'dir' && st.nlink > 1n) {
        info.linkOf = inodes.get(st.ino) ?? r;
        inodes.set(st.ino, info.linkOf);
      }
      out.set(r, info);
      if (type === 'dir') await visit(r);
    }
  };
  await visit('');
  return out;
}

const HASH_LIMIT = 256 << 20;

/** The same description of a filesystem inside an image, below `path`. */
export async function describeFs(fs: Filesystem, path = '/'): Promise<Map<string, EntryInfo>> {
  const out = new Map<string, EntryInfo>();
  const inodes = new Map<string, string>();
  const prefix = path === '/' ? 1 : path.length + 1;
  for await (const e of fs.walk(path)) {
    const r = e.path.toString('utf8').slice(prefix);
    if (r === '') continue;
    const s = e.stat;
    const info: EntryInfo = {
      type: s.type,
      mode: s.mode,
      uid: s.uid,
      gid: s.gid,
      size: s.size,
      mtimeNs: s.mtimeNs,
    };
    // Larger files (sparse giants) are checked by their own tests, not hashed whole.
    if (s.type === 'file' && !s.unreadable && s.size <= HASH_LIMIT) {
      info.hash = await hashStream(fs.readFile(e.node));
    }
    if (e.target) info.target = e.target.toString('utf8');
    if (s.rdev !== undefined) info.rdev = s.rdev;
    if (s.type !== 'dir' && s.nlink > 1) {
      const k = `${s.device}:${s.inode}`;
      info.linkOf = inodes.get(k) ?? r;
      inodes.set(k, info.linkOf);
    }
    out.set(r, info);
  }
  return out;
}

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

export async function hashStream(chunks: AsyncIterable<Buffer>): Promise<string> {
  const h = createHash('sha256');
  for await (const c of chunks) h.update(c);
  return h.digest('hex');
}

export interface CompareOptions {
  /** mtimes compared after truncation to this many nanoseconds; 0: not compared. */
  mtimeNs: bigint;
  owners: boolean;
  modes: boolean;
  /** Directory mtimes too (a copy into a filesystem changes them as files are added). */
  dirTimes?: boolean;
  /** Relative paths present on one side only that are expected (e.g. lost+found). */
  ignore?: string[];
}

/** Both descriptions list the same entries with the same content and compared metadata. */
export function expectSameEntries(
  expected: Map<string, EntryInfo>,
  actual: Map<string, EntryInfo>,
  opts: CompareOptions,
): void {
  const keep = (m: Map<string, EntryInfo>) =>
    [...m.keys()].filter((k) => !opts.ignore?.some((i) => k === i || k.startsWith(`${i}/`))).sort();
  expect(keep(actual)).toEqual(keep(expected));
  const norm = (e: EntryInfo) => {
    const n: Partial<EntryInfo> = {
      type: e.type,
      size: e.size,
      hash: e.hash,
      target: e.target,
      rdev: e.rdev,
      linkOf: e.linkOf,
    };
    if (opts.modes) n.mode = e.mode;
    if (opts.owners) Object.assign(n, { uid: e.uid, gid: e.gid });
    const timed = opts.mtimeNs > 0n && (e.type !== 'dir' || opts.dirTimes);
    if (timed) n.mtimeNs = e.mtimeNs / opts.mtimeNs;
    return n;
  };
  for (const k of keep(expected)) {
    expect({ path: k, ...norm(actual.get(k)!) }).toEqual({ path: k, ...norm(expected.get(k)!) });
  }
}

/** A file's bytes from an image filesystem. */
export async function readAll(fs: Filesystem, path: string): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of fs.readFile(path)) parts.push(Buffer.from(c));
  return Buffer.concat(parts);
}

export function mkfs(cmd: string, args: string[], image: string): void {
  execFileSync(cmd, [...args, image], { stdio: 'ignore' });
}

/**
 * A GPT disk image holding `parts` (images whose sizes are whole MiB) as partitions 1…n,
 * laid out from 1 MiB on and copied sparsely; returns its path and the partitions' starts.
 */
export async function assembleDisk(
  dir: string,
  name: string,
  parts: string[],
): Promise<{ path: string; starts: number[] }> {
  const MiB = 2 ** 20;
  const sizes = await Promise.all(parts.map(async (p) => (await lstat(p)).size));
  const starts: number[] = [];
  let at = MiB;
  for (const size of sizes) {
    starts.push(at);
    at += size;
  }
  const path = await blankImage(dir, name, at / MiB + 1);
  const script = sizes.map((s, i) => `start=${starts[i]! / 512}, size=${s / 512}, type=L\n`);
  sh('sfdisk', ['-q', path], `label: gpt\n${script.join('')}`);
  for (const [i, part] of parts.entries()) {
    sh('dd', [
      `if=${part}`,
      `of=${path}`,
      'bs=64K',
      `seek=${starts[i]! / 65536}`,
      'conv=notrunc,sparse',
      'status=none',
    ]);
  }
  return { path, starts };
}
