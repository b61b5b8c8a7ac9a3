import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Backend, ByteRange, WriteOptions } from '../src/repo/backend/backend.js';
import { LocalBackend } from '../src/repo/backend/local.js';
import { type InitOptions, Repository } from '../src/repo/repository.js';

/** KDF parameters small enough that tests do not spend seconds per open. */
export const FAST_KDF = { t: 1, m: 64, p: 1 };
export const TEST_PASSWORD = 'correct horse battery staple';

export interface TempDir {
  path: string;
  cleanup(): Promise<void>;
}

export async function tempDir(prefix = 'cairn-test-'): Promise<TempDir> {
  const path = await mkdtemp(join(tmpdir(), prefix));
  return { path, cleanup: () => rm(path, { recursive: true, force: true }) };
}

export interface TestRepo {
  repo: Repository;
  repoDir: string;
  cacheDir: string;
  reopen(): Promise<Repository>;
  cleanup(): Promise<void>;
}

/** A fresh repository in a temp dir; encrypted unless `encryption: false`. */
export async function makeRepo(opts: Partial<InitOptions> = {}): Promise<TestRepo> {
  const dir = await tempDir();
  const repoDir = join(dir.path, 'repo');
  const cacheDir = join(dir.path, 'cache');
  const encryption = opts.encryption ?? true;
  const password = encryption ? TEST_PASSWORD : undefined;
  const repo = await Repository.init(new LocalBackend(repoDir), {
    encryption,
    password,
    kdf: FAST_KDF,
    cacheDir,
    ...opts,
  });
  const opened: Repository[] = [repo];
  return {
    repo,
    repoDir,
    cacheDir,
    async reopen() {
      const r = await Repository.open(new LocalBackend(repoDir), {
        cacheDir,
        password: async () => TEST_PASSWORD,
      });
      opened.push(r);
      return r;
    },
    async cleanup() {
      for (const r of opened) await r.close().catch(() => undefined);
      await dir.cleanup();
    },
  };
}

/**
 * A backend that passes every call to `inner`, for tests to override the calls they count or
 * fail. It offers only the required calls, so a blob store writes whole packs and reads
 * ranges through `write` and `read`, where an override sees them.
 */
export class PassThroughBackend implements Backend {
  constructor(protected readonly inner: Backend) {}

  get location(): string {
    return this.inner.location;
  }

  list(folder: string) {
    return this.inner.list(folder);
  }

  read(name: string, range?: ByteRange) {
    return this.inner.read(name, range);
  }

  write(name: string, data: Uint8Array | readonly Uint8Array[], opts?: WriteOptions) {
    return this.inner.write(name, data, opts);
  }

  stat(name: string) {
    return this.inner.stat(name);
  }

  delete(name: string) {
    return this.inner.delete(name);
  }

  close() {
    return this.inner.close();
  }
}
