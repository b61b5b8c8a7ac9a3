import { existsSync } from 'node:fs';
import { readdir, realpath, stat, statfs } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { CairnError } from '../errors.js';
import type { Lock } from '../repo/lock.js';
import type { Repository } from '../repo/repository.js';
import { createFuse, detach, type FuseInstance, othersAllowed, raiseReadAhead } from './binding.js';
import { repositoryChunks } from './content.js';
import { SnapshotFs } from './fs.js';
import { fuseOperations } from './fuse-ops.js';
import { errorText, SnapshotList } from './layout.js';
import { isMounted } from './mount-table.js';

export interface MountOptions {
  /** Bytes of decompressed chunks cached for all open files together (default 256 MiB). */
  cacheBytes?: number;
  /** The snapshot list is re-read when it is older than this, in ms (default 3000). */
  refreshMs?: number;
  /**
   * Let every local user in, the kernel checking each entry's recorded mode and owner
   * (FUSE's `allow_other`). Default: where this process may (root, or `user_allow_other`
   * in /etc/fuse.conf).
   */
  allowOther?: boolean;
  /** What the user should be told: a stale mount point cleared, a read that failed. */
  onNotice?: (message: string) => void;
}

/** A mounted repository. */
export interface Mounted {
  /** The mount point: absolute, symlinks resolved. */
  readonly mountpoint: string;
  /** Resolves once unmounted, by unmount() or from outside (`fusermount -u`, `umount`). */
  readonly closed: Promise<void>;
  /** Unmounts (lazily: see `detach`) and releases the repository lock; idempotent. */
  unmount(): Promise<void>;
}

/**
 * Large enough for the read-ahead of several files read at once (up to 16 MiB each) and
 * for the working set of a loop-mounted filesystem's metadata.
 */
const CACHE_BYTES = 256 << 20;
const REFRESH_MS = 3000;
/** How often the mount table is checked for an unmount from outside. */
const WATCH_MS = 1000;

/**
 * Mounts the repository read-only at `mountpoint` (an existing empty directory) under a
 * shared lock, so prune cannot remove what is being read. Resolves once the kernel has
 * the filesystem; the caller keeps the process running until it calls `unmount()`.
 */
export async function mountRepository(
  repo: Repository,
  mountpoint: string,
  opts: MountOptions = {},
): Promise<Mounted> {
  const notice = opts.onNotice ?? (() => undefined);
  const dir = await prepareMountpoint(mountpoint, notice);
  const lock = await repo.lock(false, 'mount');
  try {
    const store = await repo.blobs();
    const list = new SnapshotList(repo, {
      refreshMs: opts.refreshMs ?? REFRESH_MS,
      onNotice: notice,
    });
    // An unreadable snapshot list fails the mount here rather than every lookup later.
    await list.current();
    const cache = repositoryChunks(repo.backend, store, opts.cacheBytes ?? CACHE_BYTES);
    const fs = new SnapshotFs(store, list, cache, notice);
    const allowOther = opts.allowOther ?? (await othersAllowed());
    const fuse = createFuse(dir, fuseOperations(fs, notice), { allowOther });
    await new Promise<void>((done, fail) => {
      fuse.mount((err) => (err ? fail(mountFailed(dir, err)) : done()));
    });
    await raiseReadAhead(dir).catch((err: unknown) => {
      notice(`${dir}: the kernel's read-ahead stays at 128 KiB: ${errorText(err)}`);
    });
    return new ActiveMount(dir, fuse, lock, notice);
  } catch (err) {
    await lock.release();
    throw err;
  }
}

function mountFailed(dir: string, err: Error): CairnError {
  // libfuse prints its own reason ("fuse: …") on stderr; fuse-native only says it failed.
  const why =
    err.message === 'fuse failed' ? 'libfuse refused (see its message above)' : err.message;
  return new CairnError(`could not mount ${dir}: ${why}`);
}

/**
 * Checks the mount point and returns it absolute with symlinks resolved (as the mount
 * table shows it). A mount point left behind by a mount whose process died answers
 * ENOTCONN ("transport endpoint is not connected"): it is detached, and the user told.
 */
async function prepareMountpoint(mountpoint: string, notice: (m: string) => void): Promise<string> {
  if (!existsSync('/dev/fuse')) {
    throw new CairnError('FUSE is not available: /dev/fuse is missing (load the fuse module)');
  }
  const given = resolve(mountpoint);
  // Not realpath(given): on a dead mount point it fails with ENOTCONN itself.
  const dir = join(await realpath(dirname(given)), basename(given));
  // statfs always asks the filesystem; a dead FUSE mount's root may still be stat-able from
  // the kernel's attribute cache (a stat just before the process died, e.g. raiseReadAhead's).
  const st = await statfs(dir)
    .then(() => stat(dir))
    .catch(async (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') throw new CairnError(`mount point ${dir} does not exist`);
      if (err.code !== 'ENOTCONN') throw err;
      notice(`${dir} was left mounted by a process that has ended; unmounting it first`);
      await detach(dir).catch((e: unknown) => {
        throw new CairnError(`${errorText(e)}; unmount ${dir} by hand (fusermount -u -z)`);
      });
      return stat(dir);
    });
  if (!st.isDirectory()) throw new CairnError(`mount point ${dir} is not a directory`);
  const real = await realpath(dir);
  if (await isMounted(real)) throw new CairnError(`${real} is already a mount point`);
  if ((await readdir(real)).length > 0) throw new CairnError(`mount point ${real} is not empty`);
  return real;
}

class ActiveMount implements Mounted {
  readonly closed: Promise<void>;
  private finish!: () => void;
  private stopping: Promise<void> | undefined;
  /** Also what keeps the process alive while mounted: the binding's handles do not. */
  private readonly watch: NodeJS.Timeout;

  constructor(
    readonly mountpoint: string,
    private readonly fuse: FuseInstance,
    private readonly lock: Lock,
    notice: (m: string) => void,
  ) {
    this.closed = new Promise((done) => {
      this.finish = done;
    });
    const report = (err: unknown) => notice(errorText(err));
    this.watch = setInterval(() => {
      isMounted(mountpoint).then((mounted) => {
        if (!mounted) this.unmount().catch(report);
      }, report);
    }, WATCH_MS);
  }

  unmount(): Promise<void> {
    this.stopping ??= this.stop();
    return this.stopping;
  }

  private async stop(): Promise<void> {
    clearInterval(this.watch);
    try {
      // Also releases the binding's hold on the event loop, after an outside unmount too.
      await new Promise<void>((done, fail) => this.fuse.unmount((e) => (e ? fail(e) : done())));
    } finally {
      await this.lock.release();
    }
    this.finish();
  }
}
