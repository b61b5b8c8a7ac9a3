import { homedir } from 'node:os';
import { isAbsolute, join, resolve } from 'node:path';
import { CairnError } from '../errors.js';
import type { Backend } from '../repo/backend/backend.js';
import { DeferredBackend } from '../repo/backend/deferred.js';
import { LocalBackend } from '../repo/backend/local.js';
import { parseS3Url, S3_TRAITS, s3Location } from '../repo/backend/s3-url.js';
import { describeLock } from '../repo/lock.js';
import { Repository } from '../repo/repository.js';
import { warn } from './output.js';
import { readPassword } from './password.js';

/** Options every command accepts (SPEC §1, global options). */
export interface GlobalOptions {
  repo?: string;
  passwordFile?: string;
  json?: boolean;
  quiet?: boolean;
  progress?: boolean;
  cacheDir?: string;
  /** How long to wait for a conflicting lock, e.g. `30s`, `5m` (default: fail at once). */
  lockWait?: string;
  /** S3 endpoint URL (default: the AWS SDK's environment and profile, else AWS). */
  s3Endpoint?: string;
  /** Address S3 buckets by path (implied for IP and single-label endpoints). */
  s3PathStyle?: boolean;
}

export function repoLocation(g: GlobalOptions): string {
  const loc = g.repo ?? process.env.CAIRN_REPO;
  if (!loc) throw new CairnError('no repository given: use -r/--repo or CAIRN_REPO');
  return loc;
}

export function openBackend(location: string, g: GlobalOptions = {}): Backend {
  if (location.startsWith('s3://')) {
    const opts = { endpoint: g.s3Endpoint, pathStyle: g.s3PathStyle };
    const load = async () => {
      const { S3Backend } = await import('../repo/backend/s3.js');
      return new S3Backend(location, opts);
    };
    return new DeferredBackend(s3Location(parseS3Url(location)), load, S3_TRAITS);
  }
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
  const backend = openBackend(repoLocation(g), g);
  try {
    return await Repository.open(backend, {
      cacheDir: cacheDir(g),
      password: () => readPassword(g),
      lockWaitMs: g.lockWait === undefined ? 0 : parseDuration(g.lockWait),
      onLockWait: (holder, ms) => {
        if (g.quiet) return;
        warn(`repository is locked by ${describeLock(holder)}; waiting up to ${ms / 1000} s`);
      },
    });
  } catch (err) {
    await backend.close();
    throw err;
  }
}

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** A duration such as `500ms`, `30s`, `5m`, `1h` or `1h30m`; a bare number is seconds. */
export function parseDuration(text: string): number {
  const t = text.trim();
  if (/^\d+(\.\d+)?$/.test(t)) return Number(t) * 1000;
  const parts = [...t.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g)];
  if (parts.length === 0 || parts.map((p) => p[0]).join('') !== t) {
    throw new CairnError(`invalid duration "${text}": use e.g. 30s, 5m or 1h`, 'Usage');
  }
  return parts.reduce((ms, p) => ms + Number(p[1]) * DURATION_UNITS[p[2]!]!, 0);
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
