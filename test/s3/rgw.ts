import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { accessSync, constants } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { S3Backend, type S3BackendOptions } from '../../src/repo/backend/s3.js';

const LAUNCHER = fileURLToPath(new URL('../../scripts/rgw-s3.sh', import.meta.url));
const PROGRAMS = ['ceph-mon', 'ceph-osd', 'radosgw', 'radosgw-admin', 'monmaptool', 'ceph'];
const ACCESS_KEY = 'testaccess';
const SECRET_KEY = 'testsecret';

/** A running radosgw: a real S3 server on loopback, private to one test file. */
export interface Rgw {
  endpoint: string;
  /** Environment for the CLI: credentials and endpoint the way the AWS SDK reads them. */
  env: Record<string, string>;
  /** An S3Backend on this server; `url` is `s3://BUCKET[/PREFIX]`. */
  backend(url: string, opts?: S3BackendOptions): S3Backend;
  stop(): Promise<void>;
}

/**
 * Why the S3 tests cannot run here, or undefined when they can. scripts/install.sh installs
 * the packages, so CI runs them; a developer machine without them skips with this reason.
 */
export function rgwUnavailable(): string | undefined {
  const path = (process.env.PATH ?? '').split(delimiter);
  const missing = PROGRAMS.filter((p) => !path.some((dir) => isExecutable(join(dir, p))));
  if (missing.length > 0) {
    const install = 'apt-get install ceph-mon ceph-osd radosgw (scripts/install.sh)';
    return `no ${missing.join(', ')}: ${install}`;
  }
  if (process.getuid?.() !== 0) return 'the Ceph daemons of scripts/rgw-s3.sh need root';
  return undefined;
}

/** The reason, printed once per file so a skipped S3 suite is seen in the test output. */
export function announceSkip(reason: string | undefined): void {
  if (reason) console.warn(`S3 tests skipped: ${reason}`);
}

/** Starts a throwaway Ceph + radosgw on free ports (~3–5 s). */
export async function startRgw(): Promise<Rgw> {
  const base = join(tmpdir(), `cairn-rgw-${randomBytes(6).toString('hex')}`);
  const [s3Port, monPort] = await freePorts(2);
  const env = {
    ...process.env,
    RGW_BASE: base,
    RGW_PORT: String(s3Port),
    RGW_MON_PORT: String(monPort),
    RGW_ACCESS_KEY: ACCESS_KEY,
    RGW_SECRET_KEY: SECRET_KEY,
  };
  const run = (cmd: string) => promisify(execFile)(LAUNCHER, [cmd], { env, timeout: 120_000 });
  try {
    await run('start');
  } catch (err) {
    const stderr = (err as { stderr?: string }).stderr ?? '';
    throw new Error(`scripts/rgw-s3.sh start failed:\n${stderr}`, { cause: err });
  }
  const endpoint = `http://127.0.0.1:${s3Port}`;
  const credentials = { accessKeyId: ACCESS_KEY, secretAccessKey: SECRET_KEY };
  return {
    endpoint,
    env: {
      AWS_ACCESS_KEY_ID: ACCESS_KEY,
      AWS_SECRET_ACCESS_KEY: SECRET_KEY,
      AWS_ENDPOINT_URL_S3: endpoint,
    },
    backend: (url, opts = {}) =>
      new S3Backend(url, {
        endpoint,
        ...opts,
        sdk: { credentials, region: 'us-east-1', ...opts.sdk },
      }),
    stop: async () => {
      await run('stop');
    },
  };
}

/** A bucket name no other test uses. */
export function uniqueBucket(label: string): string {
  return `${label}-${randomBytes(4).toString('hex')}`;
}

function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** Ports the kernel just handed out; free again when we close, and unlikely to be reused soon. */
async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise<ReturnType<typeof createServer>>((resolve, reject) => {
          const s = createServer();
          s.on('error', reject);
          s.listen(0, '127.0.0.1', () => resolve(s));
        }),
    ),
  );
  const ports = servers.map((s) => (s.address() as { port: number }).port);
  await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
  return ports;
}
