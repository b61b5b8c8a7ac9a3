import { execFileSync } from 'node:child_process';
import { chmod, lutimes, mkdir, readdir, symlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  type Change,
  changePath,
  type DiffError,
  diffImageFiles,
  diffTrees,
  storeTreeLoader,
} from '../../src/diff/index.js';
import { findEntry, rootTreeId } from '../../src/files/browse.js';
import { displayText } from '../../src/files/paths.js';
import { imageBackup } from '../../src/image/index.js';
import type { Repository } from '../../src/repo/repository.js';
import type { StoredSnapshot } from '../../src/repo/snapshot.js';
import { snapshotDir } from '../files/build-snapshot.js';
import { blankImage } from '../fs/util.js';

/*
 * Source trees as plain data, written to disk with pinned times, made into ext4 and FAT
 * images by the real tools, and diffed both ways: as two file snapshots of the trees (what
 * the image diff must equal) and as the files inside two image snapshots.
 */

export type FNode =
  | { kind: 'file'; data: Buffer | string; mode?: number; mtime?: number }
  | { kind: 'symlink'; target: string; mtime?: number }
  | { kind: 'dir'; children: FTree; mode?: number; mtime?: number };
export type FTree = { [name: string]: FNode };

/** Whole (even) seconds: mke2fs -d keeps seconds only, FAT two-second steps. */
export const T0 = 1_600_000_000;

/** Writes `tree` at `root` (created), times and modes set after the contents. */
export async function writeTree(root: string, tree: FTree): Promise<void> {
  await mkdir(root, { recursive: true });
  for (const [name, node] of Object.entries(tree)) {
    const path = join(root, name);
    if (node.kind === 'dir') await writeTree(path, node.children);
    else if (node.kind === 'symlink') await symlink(node.target, path);
    else await writeFile(path, node.data);
    const t = node.mtime ?? T0;
    if (node.kind === 'symlink') await lutimes(path, t, t);
    else {
      await chmod(path, node.mode ?? (node.kind === 'dir' ? 0o755 : 0o644));
      await utimes(path, t, t);
    }
  }
}

/** An ext4 image of `src` by `mke2fs -d` (lost+found's times pinned too). */
export async function ext4Image(dir: string, name: string, src: string): Promise<string> {
  const path = await blankImage(dir, name, 8);
  execFileSync('mke2fs', ['-q', '-F', '-t', 'ext4', '-d', src, path], {
    stdio: 'ignore',
    env: { ...process.env, E2FSPROGS_FAKE_TIME: String(T0) },
  });
  return path;
}

/** A FAT image of `src` by mkfs.vfat and mcopy (times kept with -m). */
export async function fatImage(dir: string, name: string, src: string): Promise<string> {
  const path = await blankImage(dir, name, 8);
  execFileSync('mkfs.vfat', [path], { stdio: 'ignore' });
  const names = await readdir(src);
  if (names.length > 0) {
    const args = ['-s', '-m', '-i', path, ...names.map((n) => join(src, n)), '::/'];
    execFileSync('mcopy', args, { stdio: 'ignore' });
  }
  return path;
}

/** `M    /a/b`-style lines, as `cairn diff` prints changes. */
export function changeLine(c: Change): string {
  return `${c.modifier} ${displayText(changePath(c))}`;
}

/** The diff of the trees at `srcA` and `srcB`, as two file snapshots' diff reports it. */
export async function fileSnapshotDiff(
  repo: Repository,
  srcA: string,
  srcB: string,
): Promise<string[]> {
  const store = await repo.blobs();
  const subtree = async (src: string) => {
    const snap = await snapshotDir(repo, src);
    return (await findEntry(store, rootTreeId(snap), src))!.entry!.subtree!;
  };
  const [a, b] = [await subtree(srcA), await subtree(srcB)];
  const out: string[] = [];
  for await (const c of diffTrees(storeTreeLoader(store), a, b)) out.push(changeLine(c));
  return out;
}

export interface ImageFilesResult {
  lines: string[];
  errors: DiffError[];
}

/** The file-level diff of two image snapshots. */
export async function imageFilesDiff(
  repo: Repository,
  a: StoredSnapshot,
  b: StoredSnapshot,
): Promise<ImageFilesResult> {
  const out: ImageFilesResult = { lines: [], errors: [] };
  for await (const e of diffImageFiles(repo, a, b)) {
    if (e.type === 'error') out.errors.push(e);
    else out.lines.push(changeLine(e));
  }
  return out;
}

/** An image snapshot of `path`. */
export async function imageSnapshot(repo: Repository, path: string): Promise<StoredSnapshot> {
  const { snapshotId } = await imageBackup(repo, path);
  const snap = (await repo.listSnapshots()).find((s) => s.id === snapshotId);
  if (!snap) throw new Error(`snapshot ${snapshotId} not found`);
  return snap;
}
