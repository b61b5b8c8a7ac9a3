import { isIP } from 'node:net';
import { CairnError } from '../../errors.js';
import type { BackendTraits } from './backend.js';

/**
 * An S3 repository's traits, here rather than in s3.ts so that a DeferredBackend knows them
 * before it loads the SDK. Both digests go along with every PUT (Content-MD5, the SigV4
 * payload hash), so a caller that has them spares the main thread hashing the body twice.
 */
export const S3_TRAITS: BackendTraits = { remote: true, digests: ['md5', 'sha256'] };

/** Where an `s3://BUCKET[/PREFIX]` repository lives; `prefix` is '' or ends with '/'. */
export interface S3Target {
  bucket: string;
  prefix: string;
}

export function parseS3Url(url: string): S3Target {
  const m = /^s3:\/\/([^/]+)(?:\/(.*))?$/.exec(url);
  // S3's rules, plus the upper case and underscores that older buckets may have.
  if (!m || !/^[A-Za-z0-9][A-Za-z0-9._-]{1,253}[A-Za-z0-9]$/.test(m[1]!)) {
    throw new CairnError(`invalid S3 location ${url}: use s3://BUCKET[/PREFIX]`, 'Usage');
  }
  const segments = (m[2] ?? '').split('/').filter((s) => s !== '');
  if (segments.some((s) => s === '.' || s === '..')) {
    throw new CairnError(`invalid S3 location ${url}: no . or .. in the prefix`, 'Usage');
  }
  return { bucket: m[1]!, prefix: segments.map((s) => `${s}/`).join('') };
}

/** The canonical form of a location, used in messages: `s3://bucket` or `s3://bucket/a/b`. */
export function s3Location({ bucket, prefix }: S3Target): string {
  return `s3://${bucket}${prefix === '' ? '' : `/${prefix.slice(0, -1)}`}`;
}

/**
 * Virtual-hosted addressing needs wildcard DNS for `bucket.host`, which an IP address, a
 * single-label name (`localhost`, a container's name) or a self-hosted server seldom has.
 */
export function needsPathStyle(endpoint: string): boolean {
  let host: string;
  try {
    host = new URL(endpoint).hostname.replace(/^\[|\]$/g, '');
  } catch {
    return false;
  }
  return isIP(host) !== 0 || !host.includes('.');
}
