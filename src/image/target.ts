import type { FileHandle } from 'node:fs/promises';
import { open, stat, unlink } from 'node:fs/promises';
import { CairnError } from '../errors.js';
import { deviceSize, readFully } from './sources.js';

/** Where an image is restored to, opened for reading and writing. */
export interface RestoreTarget {
  fh: FileHandle;
  kind: 'file' | 'blockdev';
  /**
   * True for a file created (or truncated) for this restore: it reads as zeros wherever
   * nothing was written, so holes need no writes and stay sparse.
   */
  fresh: boolean;
}

/**
 * Opens a restore target: an existing block device in place (it must be large enough),
 * or a regular file, created or truncated unless `keep` (delta restore onto what it holds).
 */
export async function openTarget(
  path: string,
  size: number,
  keep: boolean,
): Promise<RestoreTarget> {
  const st = await stat(path).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return undefined;
    throw err;
  });
  if (st?.isBlockDevice()) {
    const fh = await open(path, 'r+');
    try {
      const have = await deviceSize(fh, st.rdev);
      if (have < size) {
        throw new CairnError(`target device ${path} holds ${have} bytes, the image needs ${size}`);
      }
    } catch (err) {
      await fh.close();
      throw err;
    }
    return { fh, kind: 'blockdev', fresh: false };
  }
  if (st && !st.isFile()) {
    throw new CairnError(`restore target ${path} is neither a regular file nor a block device`);
  }
  if (keep && st) return { fh: await open(path, 'r+'), kind: 'file', fresh: false };
  const fh = await open(path, 'w+');
  try {
    // Sized before anything is written, so a filesystem that cannot hold the image (a FAT32
    // stick, ext4 past 16 TiB, a hostile manifest's absurd size) fails now, not at the end.
    // Not emptied again until a restore fails (see `discardTarget`): on ext4, truncating a
    // file to zero marks it to be flushed when closed (auto_da_alloc), which cost 0.5-2 s
    // of the 2 GiB bench image's restore (3.4-3.9 s without, 5.2-6.8 s with).
    await fh.truncate(size);
  } catch (err) {
    await fh.close();
    if (!st) await unlink(path).catch(() => undefined);
    if ((err as NodeJS.ErrnoException).code !== 'EFBIG') throw err;
    throw new CairnError(`restore target ${path} cannot hold ${size} bytes: file too large`);
  }
  return { fh, kind: 'file', fresh: true };
}

/**
 * After a failed restore: a file created for it is emptied, so it cannot pass for a whole
 * image (it was sized in full before anything was written).
 */
export async function discardTarget(t: RestoreTarget): Promise<void> {
  if (t.kind === 'file' && t.fresh) await t.fh.truncate(0).catch(() => undefined);
}

/** The target's bytes at [offset, offset + length): shorter past its end. */
export async function readTarget(fh: FileHandle, offset: number, length: number): Promise<Buffer> {
  const buf = Buffer.allocUnsafe(length);
  return buf.subarray(0, await readFully(fh, buf, offset));
}
