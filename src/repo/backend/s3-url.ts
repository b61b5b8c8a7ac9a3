import { isIP } from 'node:net';
import { CairnError } from '../../errors.js';

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
