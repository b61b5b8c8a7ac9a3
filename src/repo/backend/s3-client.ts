import { createHash } from 'node:crypto';
import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { type PutObjectCommand, S3Client, type S3ClientConfig } from '@aws-sdk/client-s3';
import { needsPathStyle } from './s3-url.js';

export interface S3ClientOptions {
  /** Endpoint URL; default: the SDK's own (AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, profile). */
  endpoint?: string;
  /** Address buckets as `host/bucket` rather than `bucket.host`. */
  pathStyle?: boolean;
  /** Connections per host: the bound on requests in flight (default 32). */
  maxSockets?: number;
  /** Attempts per request, retries included (default 10, or AWS_MAX_ATTEMPTS). */
  maxAttempts?: number;
  /** SDK settings applied last (tests: credentials, region). */
  sdk?: S3ClientConfig;
}

const DEFAULT_MAX_SOCKETS = 32;
/**
 * Throttling (503 SlowDown, 429) and transient failures (5xx, resets, timeouts) are retried
 * by the SDK's standard strategy with exponential backoff and jitter; ten attempts ride out
 * about a minute of trouble (its delays grow to 20 s), where the SDK's default three do not.
 */
const DEFAULT_MAX_ATTEMPTS = 10;
/** Objects whose bodies carry Content-MD5, so the server refuses a body damaged in transit. */
const MD5_COMMANDS = new Set(['PutObjectCommand', 'UploadPartCommand']);

/**
 * The storage's clock, learned from the Date header of every response, so that hosts whose
 * own clocks disagree still agree on how old a lock is.
 */
export class ServerClock {
  #offset: number | undefined;

  observe(serverDate: number): void {
    if (Number.isFinite(serverDate)) this.#offset = serverDate - Date.now();
  }

  /** Milliseconds since the epoch by the server's clock; undefined before any response. */
  now(): number | undefined {
    return this.#offset === undefined ? undefined : Date.now() + this.#offset;
  }
}

/**
 * An S3 client with cairn's settings: checksums only when an operation requires them and no
 * streaming (radosgw answers a streamed PutObject with 411 MissingContentLength, and ignores
 * x-amz-checksum-* anyway), Content-MD5 on every object and part body instead (verified by
 * AWS, radosgw and MinIO alike), path style where the endpoint needs it, bounded connections
 * and the retry strategy described at DEFAULT_MAX_ATTEMPTS.
 */
export function createS3Client(opts: S3ClientOptions, clock: ServerClock): S3Client {
  // The SDK warns on every run that its 2027 releases will drop Node 20; cairn supports 20.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const endpoint = opts.endpoint ?? process.env.AWS_ENDPOINT_URL_S3 ?? process.env.AWS_ENDPOINT_URL;
  const maxSockets = opts.maxSockets ?? DEFAULT_MAX_SOCKETS;
  const envAttempts = Number(process.env.AWS_MAX_ATTEMPTS);
  const client = new S3Client({
    region: sdkRegionOr('us-east-1'),
    ...(opts.endpoint ? { endpoint: opts.endpoint } : {}),
    forcePathStyle: opts.pathStyle === true || (endpoint !== undefined && needsPathStyle(endpoint)),
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    retryMode: 'standard',
    maxAttempts: opts.maxAttempts ?? (envAttempts > 0 ? envAttempts : DEFAULT_MAX_ATTEMPTS),
    requestHandler: {
      connectionTimeout: 10_000,
      // Idle socket time, not total: a slow 16 MiB upload is fine as long as bytes move.
      requestTimeout: 120_000,
      httpAgent: new HttpAgent({ keepAlive: true, maxSockets }),
      httpsAgent: new HttpsAgent({ keepAlive: true, maxSockets }),
    },
    ...opts.sdk,
  });
  client.middlewareStack.add(
    (next, context) => async (args) => {
      const request = args.request as { headers: Record<string, string>; body?: unknown };
      const md5 = MD5_COMMANDS.has(context.commandName ?? '') && !request.headers['content-md5'];
      if (md5 && request.body instanceof Uint8Array) {
        request.headers['content-md5'] = createHash('md5').update(request.body).digest('base64');
      }
      return next(args);
    },
    { step: 'build', name: 'cairnContentMd5' },
  );
  const observe = (response: unknown) => {
    const date = (response as { headers?: Record<string, string> } | undefined)?.headers?.date;
    if (date) clock.observe(Date.parse(date));
  };
  client.middlewareStack.add(
    (next) => async (args) => {
      try {
        const out = await next(args);
        observe(out.response);
        return out;
      } catch (err) {
        // An error answer (404, 412, …) carries the server's Date as well.
        observe((err as { $response?: unknown }).$response);
        throw err;
      }
    },
    { step: 'deserialize', name: 'cairnServerClock' },
  );
  return client;
}

/**
 * Makes `command` send `sha256` (hex, of its body, computed by the caller) as the SigV4
 * payload hash, which the signer otherwise computes on the main thread; the server checks
 * the body against it (XAmzContentSHA256Mismatch).
 */
export function withPayloadHash(command: PutObjectCommand, sha256: string): void {
  command.middlewareStack.add(
    (next) => async (args) => {
      (args.request as { headers: Record<string, string> }).headers['x-amz-content-sha256'] =
        sha256;
      return next(args);
    },
    { step: 'build', name: 'cairnPayloadHash' },
  );
}

/**
 * The region the SDK finds on its own (AWS_REGION, the profile), else `fallback`: servers
 * other than AWS rarely care, and the SDK refuses to sign without one.
 */
function sdkRegionOr(fallback: string): () => Promise<string> {
  let found: Promise<string> | undefined;
  return () => {
    found ??= (async () => {
      const probe = new S3Client({});
      try {
        return await probe.config.region();
      } catch {
        return fallback;
      } finally {
        probe.destroy();
      }
    })();
    return found;
  };
}

/** HTTP status of an SDK error, if it came from the server. */
export function s3Status(err: unknown): number | undefined {
  return (err as { $metadata?: { httpStatusCode?: number } } | undefined)?.$metadata
    ?.httpStatusCode;
}

/** S3 error code (`NoSuchKey`, `SlowDown`, …) or the error's name. */
export function s3Code(err: unknown): string | undefined {
  const e = err as { Code?: string; name?: string } | undefined;
  return e?.Code ?? e?.name;
}

/** Attempts the SDK made before giving up or succeeding. */
export function s3Attempts(err: unknown): number {
  return (err as { $metadata?: { attempts?: number } } | undefined)?.$metadata?.attempts ?? 1;
}
