import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll } from 'vitest';
import { catImage, type ImageBackupSummary, imageBackup } from '../../src/image/index.js';
import type { Repository } from '../../src/repo/repository.js';
import type { Snapshot } from '../../src/repo/snapshot.js';
import { makeRepo, type TempDir, type TestRepo, tempDir } from '../helpers.js';

/** Small chunks so that test images of a few MiB have hundreds of them. */
export const SMALL_CHUNKER = { min: 2048, avg: 8192, max: 32768 };

export interface ImageFixture {
  /** An unencrypted repository with the small chunker, made before the file's tests. */
  readonly repo: Repository;
  /** A scratch directory removed after them. */
  readonly dir: string;
  /** Writes `data` to a new file in `dir` and takes an image snapshot of it. */
  imageOf(
    data: Buffer,
    name?: string,
  ): Promise<{ path: string; summary: ImageBackupSummary; snap: Snapshot }>;
}

/** The repository and scratch directory an image test file shares, set up by Vitest hooks. */
export function imageFixture(): ImageFixture {
  let t: TestRepo;
  let d: TempDir;
  let n = 0;
  beforeAll(async () => {
    t = await makeRepo({ chunker: SMALL_CHUNKER, encryption: false });
    d = await tempDir();
  });
  afterAll(async () => {
    await t?.cleanup();
    await d?.cleanup();
  });
  return {
    get repo() {
      return t.repo;
    },
    get dir() {
      return d.path;
    },
    async imageOf(data, name = `img${n}`) {
      const path = join(d.path, `src-${n++}`);
      await writeFile(path, data);
      const summary = await imageBackup(t.repo, path, { name });
      return { path, summary, snap: await snapshotById(t.repo, summary.snapshotId) };
    },
  };
}

export const isRoot = process.getuid?.() === 0;

export function hasCommand(name: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

export function sh(cmd: string, args: string[], input?: string): string {
  return execFileSync(cmd, args, { input, encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] });
}

/** Random bytes with runs of zeros: `parts` alternating data and zero runs of random sizes. */
export function bytesWithZeroRuns(parts: number, maxRun: number): Buffer {
  const out: Buffer[] = [];
  for (let i = 0; i < parts; i++) {
    const n = 1 + Math.floor(Math.random() * maxRun);
    out.push(i % 2 === 0 ? randomBytes(n) : Buffer.alloc(n));
  }
  return Buffer.concat(out);
}

/** The bytes `catImage` streams, collected through a Writable with a small buffer. */
export async function catToBuffer(repo: Repository, snap: Snapshot): Promise<Buffer> {
  const parts: Buffer[] = [];
  const sink = new Writable({
    highWaterMark: 1024,
    write(chunk: Buffer, _enc, done) {
      parts.push(Buffer.from(chunk));
      setImmediate(done);
    },
  });
  await catImage(repo, snap, sink);
  return Buffer.concat(parts);
}

export async function snapshotById(repo: Repository, id: string): Promise<Snapshot> {
  const found = (await repo.listSnapshots()).find((s) => s.id === id);
  if (!found) throw new Error(`snapshot ${id} not found`);
  return found;
}

/** Files written into a filesystem under test: relative path → content. */
export type Tree = Map<string, Buffer>;

/** Writes a few random files (≈ 6 MiB) and a larger one that is deleted again. */
export async function fillAndDelete(dir: string): Promise<Tree> {
  const tree: Tree = new Map();
  await mkdir(join(dir, 'sub/deeper'), { recursive: true });
  const sizes = [3 << 20, 1 << 20, 700_000, 123_457, 4096, 1, 0];
  for (const [i, size] of sizes.entries()) {
    const rel = i % 2 === 0 ? `file-${i}.bin` : `sub/deeper/file-${i}.bin`;
    const data = randomBytes(size);
    await writeFile(join(dir, rel), data);
    tree.set(rel, data);
  }
  // Synced so its blocks are really allocated and written before it is deleted.
  const fh = await open(join(dir, 'deleted.bin'), 'w');
  await fh.write(randomBytes(10 << 20));
  await fh.sync();
  await fh.close();
  await rm(join(dir, 'deleted.bin'));
  return tree;
}

export async function expectTree(dir: string, tree: Tree): Promise<void> {
  for (const [rel, data] of tree) {
    const got = await readFile(join(dir, rel));
    if (!got.equals(data)) throw new Error(`${rel} differs after restore`);
  }
}

/** Runs `fn` with `image` (optionally a byte range of it) loop-mounted at a temp dir. */
export async function withMount<T>(
  image: string,
  opts: { readOnly?: boolean; offset?: number; type?: string },
  fn: (dir: string) => Promise<T>,
): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'cairn-mnt-'));
  const o = ['loop', opts.readOnly ? 'ro' : 'rw'];
  if (opts.offset) o.push(`offset=${opts.offset}`);
  if (opts.type === 'ntfs-3g') sh('ntfs-3g', [...(opts.readOnly ? ['-o', 'ro'] : []), image, dir]);
  else sh('mount', ['-o', o.join(','), image, dir]);
  try {
    return await fn(dir);
  } finally {
    sh('umount', [dir]);
    await rm(dir, { recursive: true, force: true });
  }
}
