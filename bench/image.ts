import { execFileSync } from 'node:child_process';
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  rmSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { mixedBlocks } from './data.js';
import { applyChange, changeOf, type FileSpec, writeTree } from './tree.js';

/*
 * Two versions of an ext4 disk image, as a real disk changes between two system images:
 * v1 is mkfs.ext4 on a file, loop-mounted, given some data that is then deleted (free blocks
 * of a used disk are not zeros) and filled with part of the bench tree; v2 is a copy of v1,
 * loop-mounted again, after ~5% of its files were modified, added or removed. Rebuilding v2
 * with `mke2fs -d` would relayout the whole filesystem, which no real disk does. Needs root
 * (loop mounts); both images are cached in bench/.cache and reused while the spec matches.
 */

const MiB = 2 ** 20;
const FS_UUID = '6b1b2f8c-5d0e-4c7a-9a3e-2f6c8d1e0b47';
export const IMAGE_CHANGE_SEED = 77;

export interface ImagePair {
  v1: string;
  v2: string;
  size: number;
  /** Files written into v1, and their bytes. */
  files: number;
  bytes: number;
}

/** The files of the tree that go into the image: ~60% of them, not the media file. */
export function imageSubset(files: FileSpec[]): FileSpec[] {
  return files.filter((f, i) => (f.path.startsWith('large/') ? f.kind !== 'media' : i % 10 < 6));
}

/** 2 GiB from scale 0.5 up; smaller for small scales (64 MiB at least). */
export function imageSize(scale: number): number {
  if (scale >= 0.5) return 2048 * MiB;
  return Math.max(64, Math.round(2048 * scale)) * MiB;
}

function withLoopMount<T>(image: string, mnt: string, fn: () => T): T {
  mkdirSync(mnt, { recursive: true });
  execFileSync('mount', ['-o', 'loop', image, mnt]);
  try {
    return fn();
  } finally {
    execFileSync('umount', [mnt]);
  }
}

/** Writes then deletes random data: free blocks that hold old bytes, as on a used disk. */
function leaveStaleData(mnt: string, bytes: number): void {
  const stale = join(mnt, 'stale.bin');
  const fd = openSync(stale, 'w');
  for (const b of mixedBlocks(bytes, 91, { text: 0.3, zeros: 0 })) writeSync(fd, b);
  closeSync(fd);
  execFileSync('sync');
  rmSync(stale);
}

function buildV1(path: string, size: number, subset: FileSpec[], mnt: string): number {
  rmSync(path, { force: true });
  execFileSync('truncate', ['-s', String(size), path]);
  execFileSync('mkfs.ext4', [
    '-q',
    '-F',
    '-U',
    FS_UUID,
    '-E',
    `hash_seed=${FS_UUID},lazy_itable_init=0,lazy_journal_init=0,nodiscard`,
    path,
  ]);
  return withLoopMount(path, mnt, () => {
    leaveStaleData(mnt, Math.round(size * 0.15));
    return writeTree(mnt, subset);
  });
}

/** The cached image pair for `files` at `scale`, built if missing or stale. */
export function ensureImages(dir: string, files: FileSpec[], scale: number): ImagePair {
  const size = imageSize(scale);
  const subset = imageSubset(files);
  const key = JSON.stringify({ size, n: subset.length, seed: IMAGE_CHANGE_SEED, layout: 2 });
  const marker = join(dir, 'images.json');
  const v1 = join(dir, 'disk-v1.img');
  const v2 = join(dir, 'disk-v2.img');
  const done = existsSync(marker) ? JSON.parse(readFileSync(marker, 'utf8')) : undefined;
  if (done?.key === key && existsSync(v1) && existsSync(v2)) return done.pair as ImagePair;
  if (process.getuid?.() !== 0) throw new Error('building the ext4 images needs root');
  mkdirSync(dir, { recursive: true });
  rmSync(marker, { force: true });
  const mnt = join(dir, 'mnt');
  const bytes = buildV1(v1, size, subset, mnt);
  rmSync(v2, { force: true });
  execFileSync('cp', ['--sparse=always', v1, v2]);
  withLoopMount(v2, mnt, () => applyChange(mnt, changeOf(subset, IMAGE_CHANGE_SEED)));
  const pair: ImagePair = { v1, v2, size, files: subset.length, bytes };
  writeFileSync(marker, JSON.stringify({ key, pair }));
  return pair;
}
