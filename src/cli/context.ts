import { homedir } from 'node:os';
import { isAbsolute, join, resolve } from 'node:path';
import { CairnError } from '../errors.js';
import type { Backend } from '../repo/backend/backend.js';
import { LocalBackend } from '../repo/backend/local.js';
import { Repository } from '../repo/repository.js';
import { readPassword } from './password.js';

/** Options every command accepts (SPEC §1, global options). */
export interface GlobalOptions {
  repo?: string;
  passwordFile?: string;
  json?: boolean;
  quiet?: boolean;
  progress?: boolean;
  cacheDir?: string;
}

export function repoLocation(g: GlobalOptions): string {
  const loc = g.repo ?? process.env.CAIRN_REPO;
  if (!loc) throw new CairnError('no repository given: use -r/--repo or CAIRN_REPO');
  return loc;
}

export function openBackend(location: string): Backend {
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(location)) {
    throw new CairnError(`unsupported repository location ${location}`);
  }
  return new LocalBackend(resolve(location));
}

export function cacheDir(g: GlobalOptions): string {
  const dir = g.cacheDir ?? process.env.CAIRN_CACHE_DIR;
  if (dir) return isAbsolute(dir) ? dir : resolve(dir);
  const xdg = process.env.XDG_CACHE_HOME;
  return join(xdg && isAbsolute(xdg) ? xdg : join(homedir(), '.cache'), 'cairn');
}

export async function openRepository(g: GlobalOptions): Promise<Repository> {
  const backend = openBackend(repoLocation(g));
  try {
    return await Repository.open(backend, {
      cacheDir: cacheDir(g),
      password: () => readPassword(g),
    });
  } catch (err) {
    await backend.close();
    throw err;
  }
}

/** Opens the repository, runs `fn` and always closes it. */
export async function withRepository<T>(
  g: GlobalOptions,
  fn: (repo: Repository) => Promise<T>,
): Promise<T> {
  const repo = await openRepository(g);
  try {
    return await fn(repo);
  } finally {
    await repo.close();
  }
}

/** Progress goes to stderr only when it is a terminal and not turned off. */
export function showProgress(g: GlobalOptions): boolean {
  return !g.quiet && g.progress !== false && !g.json && process.stderr.isTTY === true;
}

/** Runs `fn` with a signal that SIGINT/SIGTERM abort, so it can stop cleanly (exit 130). */
export async function whileNotInterrupted<T>(fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const ac = new AbortController();
  const stop = () => ac.abort();
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  try {
    return await fn(ac.signal);
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
  }
}
