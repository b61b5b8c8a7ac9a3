import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import {
  RGW_ACCESS_KEY,
  RGW_SECRET_KEY,
  radosgwUnavailable,
  startRadosgw,
} from '../../bench/radosgw.js';
import { S3Backend, type S3BackendOptions } from '../../src/repo/backend/s3.js';

const LAUNCHER = fileURLToPath(new URL('../../scripts/rgw-s3.sh', import.meta.url));

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
export const rgwUnavailable = radosgwUnavailable;

/** The reason, printed once per file so a skipped S3 suite is seen in the test output. */
export function announceSkip(reason: string | undefined): void {
  if (reason) console.warn(`S3 tests skipped: ${reason}`);
}

/** Starts a throwaway Ceph + radosgw on free ports (~3–5 s). */
export async function startRgw(): Promise<Rgw> {
  const { endpoint, stop } = await startRadosgw(LAUNCHER, 'cairn-rgw');
  const credentials = { accessKeyId: RGW_ACCESS_KEY, secretAccessKey: RGW_SECRET_KEY };
  return {
    endpoint,
    env: {
      AWS_ACCESS_KEY_ID: RGW_ACCESS_KEY,
      AWS_SECRET_ACCESS_KEY: RGW_SECRET_KEY,
      AWS_ENDPOINT_URL_S3: endpoint,
    },
    backend: (url, opts = {}) =>
      new S3Backend(url, {
        endpoint,
        ...opts,
        sdk: { credentials, region: 'us-east-1', ...opts.sdk },
      }),
    stop,
  };
}

/** A bucket name no other test uses. */
export function uniqueBucket(label: string): string {
  return `${label}-${randomBytes(4).toString('hex')}`;
}
