import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
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
