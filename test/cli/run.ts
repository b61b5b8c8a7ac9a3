import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The built CLI; `npm test` builds before running the suite. */
export const CAIRN = fileURLToPath(new URL('../../dist/src/cli/main.js', import.meta.url));

/** `init` flags that keep the key derivation out of test time. */
export const FAST_KDF_FLAGS = ['--kdf-memory', '1', '--kdf-time', '1'];

/** The environment a test's CLI runs use: repository and cache inside `dir`. */
export function cliEnv(dir: string, password = 'secret'): Record<string, string> {
  return {
    CAIRN_REPO: join(dir, 'repo'),
    CAIRN_PASSWORD: password,
    CAIRN_CACHE_DIR: join(dir, 'cache'),
  };
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
  stdoutBytes: Buffer;
}

export interface RunOptions {
  env?: Record<string, string | undefined>;
  input?: Buffer | string;
  cwd?: string;
  /** Kill the process (SIGKILL) after this long: a hang then fails its test, code -1. */
  timeoutMs?: number;
}

/** Runs `cairn args…` as a user would, with a clean environment plus `env`. */
export function cairn(args: string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const env: Record<string, string> = {
      PATH: process.env.PATH ?? '',
      HOME: process.env.HOME ?? '/',
    };
    for (const [k, v] of Object.entries(opts.env ?? {})) if (v !== undefined) env[k] = v;
    const child = spawn(process.execPath, [CAIRN, ...args], { env, cwd: opts.cwd });
    const timer =
      opts.timeoutMs === undefined
        ? undefined
        : setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      const stdoutBytes = Buffer.concat(out);
      resolve({
        code: code ?? -1,
        stdout: stdoutBytes.toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
        stdoutBytes,
      });
    });
    // A child that exits before reading its input closes the pipe: not a test failure.
    child.stdin.on('error', () => undefined);
    child.stdin.end(opts.input ?? '');
  });
}
