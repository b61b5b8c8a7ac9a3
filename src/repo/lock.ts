import { randomBytes } from 'node:crypto';
import { hostname, userInfo } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Sealer } from '../crypto/index.js';
import { CairnError } from '../errors.js';
import type { Backend } from './backend/backend.js';

export interface LockInfo {
  hostname: string;
  pid: number;
  username: string;
  command: string;
  exclusive: boolean;
  time: string;
  refreshed: string;
}

/** Refreshed this often while held; a lock not refreshed for STALE_AFTER is stale. */
const REFRESH_MS = 5 * 60_000;
const STALE_AFTER_MS = 30 * 60_000;
const POLL_MS = 500;

/**
 * Shared and exclusive repository locks as objects under `locks/`. Write ours first, then
 * look at the others, so two processes racing for an exclusive lock both see each other and
 * back off rather than both proceeding.
 */
export class Lock {
  private timer: NodeJS.Timeout | undefined;

  private constructor(
    private readonly backend: Backend,
    private readonly sealer: Sealer,
    private readonly name: string,
    private readonly info: LockInfo,
  ) {}

  static async acquire(
    backend: Backend,
    sealer: Sealer,
    opts: {
      exclusive: boolean;
      command: string;
      waitMs?: number;
      /** Called once, when a conflicting lock makes this one wait. */
      onWait?: (holder: LockInfo, waitMs: number) => void;
    },
  ): Promise<Lock> {
    const deadline = Date.now() + (opts.waitMs ?? 0);
    let waiting = false;
    for (;;) {
      const now = new Date(await clock(backend)).toISOString();
      const info: LockInfo = {
        hostname: hostname(),
        pid: process.pid,
        username: safeUsername(),
        command: opts.command,
        exclusive: opts.exclusive,
        time: now,
        refreshed: now,
      };
      const name = `locks/${randomBytes(16).toString('hex')}`;
      await backend.write(name, sealer.seal(Buffer.from(JSON.stringify(info))));
      const holder = await findConflict(backend, sealer, name, opts.exclusive);
      if (!holder) {
        const lock = new Lock(backend, sealer, name, info);
        lock.timer = setInterval(() => void lock.refresh(), REFRESH_MS);
        lock.timer.unref();
        return lock;
      }
      await backend.delete(name);
      if (Date.now() >= deadline) {
        const since = await clock(backend);
        throw new CairnError(`repository is locked by ${describeLock(holder, since)}`, 'Locked');
      }
      if (!waiting) opts.onWait?.(holder, opts.waitMs ?? 0);
      waiting = true;
      await sleep(POLL_MS + Math.random() * POLL_MS);
    }
  }

  async release(): Promise<void> {
    clearInterval(this.timer);
    await this.backend.delete(this.name);
  }

  private async refresh(): Promise<void> {
    this.info.refreshed = new Date(await clock(this.backend).catch(() => Date.now())).toISOString();
    const bytes = this.sealer.seal(Buffer.from(JSON.stringify(this.info)));
    await this.backend.write(this.name, bytes, { overwrite: true }).catch(() => undefined);
  }
}

async function findConflict(
  backend: Backend,
  sealer: Sealer,
  ours: string,
  exclusive: boolean,
): Promise<LockInfo | undefined> {
  const now = await clock(backend);
  for await (const o of backend.list('locks')) {
    if (o.name === ours) continue;
    const info = await readLock(backend, sealer, o.name);
    if (!info) continue;
    if (isStale(info, now)) {
      if (info.hostname === hostname()) await backend.delete(o.name);
      continue;
    }
    if (exclusive || info.exclusive) return info;
  }
  return undefined;
}

export async function readLock(
  backend: Backend,
  sealer: Sealer,
  name: string,
): Promise<LockInfo | undefined> {
  try {
    return JSON.parse(sealer.open(await backend.read(name), name).toString()) as LockInfo;
  } catch {
    // Released between list and read, or written under another key: not ours to judge.
    return undefined;
  }
}

/**
 * Lock times are written and judged by the storage's clock where it has one (S3's Date
 * header), else this machine's: hosts sharing a bucket need not agree on the time, and the
 * 30-minute window leaves room for the storage clock's one-second resolution and latency.
 */
function clock(backend: Backend): Promise<number> {
  return backend.now ? backend.now() : Promise.resolve(Date.now());
}

export function isStale(info: LockInfo, now = Date.now()): boolean {
  if (now - Date.parse(info.refreshed) > STALE_AFTER_MS) return true;
  return info.hostname === hostname() && !processAlive(info.pid);
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export function describeLock(info: LockInfo, now = Date.now()): string {
  const age = Math.max(0, Math.round((now - Date.parse(info.time)) / 1000));
  const kind = info.exclusive ? 'exclusive' : 'shared';
  return `${info.username}@${info.hostname} PID ${info.pid} (${kind} lock for "${info.command}", held ${age}s)`;
}

function safeUsername(): string {
  try {
    return userInfo().username;
  } catch {
    return String(process.getuid?.() ?? 'unknown');
  }
}
