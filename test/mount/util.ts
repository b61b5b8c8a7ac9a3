import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { lstat, readdir, readFile, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { getAttribute, listAttributes } from 'fs-xattr';
import { mountAt, mountTable } from '../../src/mount/index.js';
import { CAIRN, cairn, type RunResult } from '../cli/run.js';
import { hasCommand, isRoot, sh } from '../image/util.js';

/** Why kernel mounts cannot be tested here, or undefined when they can. */
export const noFuse: string | undefined = !existsSync('/dev/fuse')
  ? '/dev/fuse is missing'
  : !isRoot
    ? 'not root (the tests chown files and loop-mount images)'
    : !hasCommand('fusermount')
      ? 'fusermount is not installed'
      : undefined;

if (noFuse) console.warn(`test/mount: kernel mount tests skipped: ${noFuse}`);

/** A title that says why its tests are skipped. */
export function titled(title: string, skipReason = noFuse): string {
  return skipReason ? `${title} [skipped: ${skipReason}]` : title;
}

/** Polls `cond` until it holds; a condition, not a fixed sleep, ends the wait. */
export async function waitFor(
  cond: () => Promise<boolean> | boolean,
  what: string,
  timeoutMs = 30_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

/** A `cairn mount` child process. */
export class MountProcess {
  /** Started and not yet exited: what a failed test leaves for `stopAll`. */
  private static readonly running = new Set<MountProcess>();
  stdout = '';
  stderr = '';
  exitCode: number | null | undefined;
  readonly exited: Promise<number | null>;

  private constructor(
    readonly dir: string,
    readonly child: ChildProcess,
  ) {
    child.stdout!.on('data', (b: Buffer) => {
      this.stdout += b.toString();
    });
    child.stderr!.on('data', (b: Buffer) => {
      this.stderr += b.toString();
    });
    MountProcess.running.add(this);
    this.exited = new Promise((resolve) => {
      child.on('exit', (code, signal) => {
        MountProcess.running.delete(this);
        this.exitCode = code ?? (signal ? -1 : null);
        resolve(this.exitCode);
      });
    });
  }

  /** Starts `cairn mount dir` (an existing directory) and waits until the kernel lists it. */
  static async start(env: Record<string, string>, dir: string): Promise<MountProcess> {
    const child = spawn(process.execPath, [CAIRN, 'mount', dir], {
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const m = new MountProcess(dir, child);
    // The listing, not only the mount table: a dead mount left at `dir` is in the table too.
    await waitFor(async () => {
      if (m.exitCode !== undefined) throw new Error(`cairn mount exited: ${m.stderr}`);
      if ((await mountAt(dir))?.fstype !== 'fuse.cairn') return false;
      return (await readdir(dir).catch((): string[] => [])).includes('snapshots');
    }, `the mount at ${dir}`);
    return m;
  }

  /** Stops every mount process still running (for afterAll). */
  static async stopAll(): Promise<void> {
    await Promise.all([...MountProcess.running].map((m) => m.stop()));
  }

  /** Sends `signal` and waits for the process to end; returns its exit code. */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    if (this.exitCode === undefined) this.child.kill(signal);
    return this.exited;
  }
}

/** Lazily unmounts whatever a failed test left mounted below `dir`. */
export async function detachAllUnder(dir: string): Promise<void> {
  for (const m of (await mountTable()).reverse()) {
    if (m.mountpoint.startsWith(`${dir}/`)) sh('umount', ['-l', m.mountpoint]);
  }
}

/** `cairn backup --json …`: the new snapshot's full ID. */
export async function backupJson(env: Record<string, string>, args: string[]): Promise<string> {
  const r: RunResult = await cairn(['backup', '--json', ...args], { env });
  if (r.code !== 0) throw new Error(`backup failed (${r.code}): ${r.stderr}`);
  const summary = r.stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { message_type: string; snapshot_id?: string })
    .find((l) => l.message_type === 'summary');
  return summary!.snapshot_id!;
}

/** What a person compares between an original and a copy of one directory entry. */
export interface Captured {
  type: number;
  mode: number;
  uid: number;
  gid: number;
  /** Files and symlinks; a directory's size is the filesystem's business. */
  size?: number;
  nlink: number;
  /** Milliseconds: what the FUSE binding carries. */
  mtimeMs: bigint;
  target?: string;
  content?: Buffer;
  xattrs?: Record<string, string>;
}

/**
 * Every entry below `root` (root itself as ''), by relative path, read with lstat; the
 * top-level names in `skip` are left out.
 */
export async function captureTree(
  root: string,
  skip: string[] = [],
): Promise<Map<string, Captured>> {
  const out = new Map<string, Captured>();
  const walk = async (rel: string): Promise<void> => {
    const path = rel ? join(root, rel) : root;
    const st = await lstat(path, { bigint: true });
    const type = Number(st.mode) & 0o170000;
    const c: Captured = {
      type,
      mode: Number(st.mode) & 0o7777,
      uid: Number(st.uid),
      gid: Number(st.gid),
      nlink: Number(st.nlink),
      mtimeMs: st.mtimeNs / 1_000_000n,
    };
    if (st.isFile()) {
      c.size = Number(st.size);
      c.content = await readFile(path);
      const names = (await listAttributes(path)).filter((n) => n.startsWith('user.')).sort();
      c.xattrs = {};
      for (const n of names) c.xattrs[n] = (await getAttribute(path, n)).toString('hex');
    }
    if (st.isSymbolicLink()) {
      c.size = Number(st.size);
      c.target = await readlink(path);
    }
    out.set(rel, c);
    if (st.isDirectory()) {
      for (const name of (await readdir(path)).sort()) {
        if (!rel && skip.includes(name)) continue;
        await walk(rel ? `${rel}/${name}` : name);
      }
    }
  };
  await walk('');
  return out;
}
