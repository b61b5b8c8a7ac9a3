import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { accessSync, constants } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { promisify } from 'node:util';

/*
 * A throwaway Ceph + radosgw on loopback, started by the project's scripts/rgw-s3.sh: the
 * real S3 server of the S3 tests (test/s3/rgw.ts) and of the S3 bench (bench/s3.ts).
 */

const PROGRAMS = ['ceph-mon', 'ceph-osd', 'radosgw', 'radosgw-admin', 'monmaptool', 'ceph'];
export const RGW_ACCESS_KEY = 'testaccess';
export const RGW_SECRET_KEY = 'testsecret';

export interface Radosgw {
  /** The launcher's working directory (its log is `log/client.rgw.log`). */
  base: string;
  endpoint: string;
  stop(): Promise<void>;
}

/** Why radosgw cannot run here, or undefined when it can. */
export function radosgwUnavailable(): string | undefined {
  const path = (process.env.PATH ?? '').split(delimiter);
  const missing = PROGRAMS.filter((p) => !path.some((dir) => isExecutable(join(dir, p))));
  if (missing.length > 0) {
    const install = 'apt-get install ceph-mon ceph-osd radosgw (scripts/install.sh)';
    return `no ${missing.join(', ')}: ${install}`;
  }
  if (process.getuid?.() !== 0) return 'the Ceph daemons of scripts/rgw-s3.sh need root';
  return undefined;
}

/**
 * Starts one on free ports (~3–5 s) with `launcher`, the path of scripts/rgw-s3.sh (which
 * each caller finds from where it runs: sources or dist). A failed start is cleaned up.
 */
export async function startRadosgw(launcher: string, label: string): Promise<Radosgw> {
  const base = join(tmpdir(), `${label}-${randomBytes(6).toString('hex')}`);
  const [s3Port, monPort] = await freePorts(2);
  const env = {
    ...process.env,
    RGW_BASE: base,
    RGW_PORT: String(s3Port),
    RGW_MON_PORT: String(monPort),
    RGW_ACCESS_KEY,
    RGW_SECRET_KEY,
  };
  const run = async (cmd: string) => {
    await promisify(execFile)(launcher, [cmd], { env, timeout: 120_000 });
  };
  const stop = () => run('stop');
  try {
    await run('start');
  } catch (err) {
    await stop().catch(() => {});
    const stderr = (err as { stderr?: string }).stderr ?? '';
    throw new Error(`scripts/rgw-s3.sh start failed:\n${stderr}`, { cause: err });
  }
  return { base, endpoint: `http://127.0.0.1:${s3Port}`, stop };
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
