import { type ChildProcess, spawn } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { CAIRN, type RunResult } from '../cli/run.js';

/**
 * Kills per crash test. CI runs the default; `CAIRN_CRASH_ITERATIONS=200 npx vitest run
 * test/crash` runs a longer campaign (give vitest a larger --testTimeout too).
 */
export function iterations(ciDefault: number): number {
  const n = Number(process.env.CAIRN_CRASH_ITERATIONS);
  return Number.isInteger(n) && n > 0 ? n : ciDefault;
}

export interface Running {
  child: ChildProcess;
  done: Promise<RunResult>;
  /** Everything written to stderr so far. */
  stderr(): string;
}

/** Starts `cairn args…` (built CLI) and leaves it running; its output is collected. */
export function start(args: string[], env: Record<string, string>): Running {
  const child = spawn(process.execPath, [CAIRN, ...args], {
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/', ...env },
  });
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  child.stdout!.on('data', (b: Buffer) => out.push(b));
  child.stderr!.on('data', (b: Buffer) => err.push(b));
  child.stdin!.on('error', () => undefined);
  const done = new Promise<RunResult>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => {
      const stdoutBytes = Buffer.concat(out);
      resolve({
        code: code ?? (signal === 'SIGKILL' ? 137 : -1),
        stdout: stdoutBytes.toString(),
        stderr: Buffer.concat(err).toString(),
        stdoutBytes,
      });
    });
  });
  return { child, done, stderr: () => Buffer.concat(err).toString() };
}

/** Resolves once `cond` holds, polling; for waiting on another process, never on time. */
export async function until(cond: () => Promise<boolean> | boolean): Promise<void> {
  while (!(await cond())) await new Promise((r) => setTimeout(r, 10));
}

/** SIGKILLs a running command at a random moment in its first `maxMs`. */
export function killAtRandom(run: Running, maxMs: number): Promise<boolean> {
  const deadline = Date.now() + randomInt(Math.max(1, Math.floor(maxMs)));
  return killWhen(run, () => Date.now() >= deadline);
}

/**
 * SIGKILLs a running command as soon as `cond` holds; true if it was killed, false if it
 * finished first.
 */
export async function killWhen(
  run: Running,
  cond: () => Promise<boolean> | boolean,
): Promise<boolean> {
  let exited = false;
  void run.done.then(() => {
    exited = true;
  });
  await until(async () => exited || (await cond()));
  if (exited) return false;
  run.child.kill('SIGKILL');
  return (await run.done).code === 137;
}

/** Objects in a repository folder; temporary files of writes in progress do not count. */
export async function count(dir: string): Promise<number> {
  return (await readdir(dir).catch(() => [])).filter((f) => !f.startsWith('.tmp-')).length;
}
