import { createHash } from 'node:crypto';
import {
  type BucketLocationConstraint,
  CreateBucketCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  type ListObjectsV2CommandOutput,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { CairnError } from '../../errors.js';
import type { Backend, BodyDigests, ByteRange, ObjectInfo, WriteOptions } from './backend.js';
import {
  createS3Client,
  type S3ClientOptions,
  ServerClock,
  s3Attempts,
  s3Code,
  s3Status,
  withPayloadHash,
} from './s3-client.js';
import { parseS3Url, S3_TRAITS, s3Location } from './s3-url.js';

export interface S3BackendOptions extends S3ClientOptions {
  /** Objects at least this large are uploaded in parts (default 32 MiB). */
  multipartThreshold?: number;
  /** Bytes per part (default 8 MiB; S3 wants at least 5 MiB). */
  partSize?: number;
  /** Parts of one object in flight at once (default 4). */
  partConcurrency?: number;
}

/**
 * Above the default 16 MiB pack: packs go up in one PUT, whose If-None-Match every server
 * that has conditional writes honours (radosgw 16 ignores it when completing a multipart
 * upload). Larger objects (packs of a repository made with a bigger pack size) go in parts,
 * each retried on its own, so a failure costs one part rather than the whole object.
 */
const DEFAULT_MULTIPART_THRESHOLD = 32 << 20;
const DEFAULT_PART_SIZE = 8 << 20;
const DEFAULT_PART_CONCURRENCY = 4;
/** Attempts for a GET whose body broke off mid-transfer (the SDK retries only up to headers). */
const BODY_ATTEMPTS = 3;
/** AWS answers 409 ConditionalRequestConflict to racing conditional writes and asks for a retry. */
const CONFLICT_ATTEMPTS = 3;

/**
 * A repository in an S3 bucket: object `a/b` is the key `<prefix>a/b`. A PUT is atomic (the
 * object is absent until the whole body arrived, and a multipart upload stays invisible
 * until completed, aborted on failure), every body carries Content-MD5, write-once objects
 * are created with `If-None-Match: *`, and a missing bucket is created on first write
 * (`init`), as a local repository's directory is.
 */
export class S3Backend implements Backend {
  readonly location: string;
  readonly traits = S3_TRAITS;
  /** The SDK client, for callers that add middleware (tests count or damage requests). */
  readonly client: S3Client;
  readonly #bucket: string;
  readonly #prefix: string;
  readonly #clock = new ServerClock();
  readonly #opts: S3BackendOptions;
  #bucketCreated: Promise<void> | undefined;
  /** False once the server said it cannot do conditional writes: check, then put. */
  #conditional = true;
  #closed = false;

  constructor(url: string, opts: S3BackendOptions = {}) {
    const target = parseS3Url(url);
    this.#bucket = target.bucket;
    this.#prefix = target.prefix;
    this.location = s3Location(target);
    this.#opts = opts;
    this.client = createS3Client(opts, this.#clock);
  }

  async *list(folder: string): AsyncIterable<ObjectInfo> {
    const prefix = this.#key(folder.replace(/\/+$/, '')) + '/';
    let token: string | undefined;
    do {
      const input = { Bucket: this.#bucket, Prefix: prefix, ContinuationToken: token };
      let page: ListObjectsV2CommandOutput;
      try {
        page = await this.client.send(new ListObjectsV2Command(input));
      } catch (err) {
        if (s3Code(err) === 'NoSuchBucket') return;
        throw this.#mapError(err, `${folder}/`);
      }
      for (const o of page.Contents ?? []) {
        const name = o.Key?.slice(this.#prefix.length);
        // Keys no cairn name maps to (a console's `folder/` marker) are not objects of ours.
        if (name !== undefined && validName(name)) yield { name, size: o.Size ?? 0 };
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
  }

  async read(name: string, range?: ByteRange): Promise<Buffer> {
    const key = this.#key(name);
    if (range) checkRange(range, name);
    if (range?.length === 0) return this.#readNothing(name, range);
    const Range = range && `bytes=${range.offset}-${range.offset + range.length - 1}`;
    for (let attempt = 1; ; attempt++) {
      try {
        const out = await this.client.send(
          new GetObjectCommand({ Bucket: this.#bucket, Key: key, Range }),
        );
        const bytes = await out.Body!.transformToByteArray();
        const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
        const want = range?.length ?? out.ContentLength ?? buf.length;
        if (buf.length !== want)
          throw short(name, buf.length, range ?? { offset: 0, length: want });
        return buf;
      } catch (err) {
        if (err instanceof CairnError) throw err;
        if (s3Status(err) === 416) throw short(name, 0, range!);
        // No status: the body broke off after the SDK's retries had handed over the response.
        if (s3Status(err) === undefined && attempt < BODY_ATTEMPTS && !this.#closed) continue;
        throw this.#mapError(err, name);
      }
    }
  }

  async write(
    name: string,
    data: Uint8Array | readonly Uint8Array[],
    opts: WriteOptions = {},
  ): Promise<void> {
    const key = this.#key(name);
    // A view of a single buffer (Buffer.from(Uint8Array) would copy): see #put.
    const body =
      data instanceof Uint8Array
        ? Buffer.from(data.buffer, data.byteOffset, data.byteLength)
        : Buffer.concat(data);
    const put = { overwrite: opts.overwrite === true, digests: opts.digests };
    try {
      await this.#inBucket(() => this.#put(name, key, body, put));
    } catch (err) {
      if (err instanceof CairnError) throw err;
      throw new CairnError(`cannot write ${name} to ${this.location}: ${describe(err)}`, 'Fatal', {
        cause: err,
      });
    }
  }

  async stat(name: string): Promise<ObjectInfo | undefined> {
    const key = this.#key(name);
    try {
      const out = await this.client.send(new HeadObjectCommand({ Bucket: this.#bucket, Key: key }));
      return { name, size: out.ContentLength ?? 0 };
    } catch (err) {
      if (isMissing(err)) return undefined;
      throw this.#mapError(err, name);
    }
  }

  async delete(name: string): Promise<void> {
    const key = this.#key(name);
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.#bucket, Key: key }));
    } catch (err) {
      if (!isMissing(err)) throw this.#mapError(err, name);
    }
  }

  async now(): Promise<number> {
    if (this.#clock.now() === undefined) {
      // Any answer carries the server's Date header, a 404 for a missing bucket as well.
      await this.client.send(new HeadBucketCommand({ Bucket: this.#bucket })).catch(() => {});
    }
    return this.#clock.now() ?? Date.now();
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.client.destroy();
  }

  /**
   * Creates (or refuses to replace) one object; 412 means it exists. `body` may be the
   * caller's own memory: a single PUT reads it only until `send` settles, so it is sent
   * without a copy (one pack, 16 MiB, per upload in flight).
   */
  async #put(name: string, key: string, body: Buffer, opts: PutOptions): Promise<void> {
    const { overwrite, digests } = opts;
    const conditional = !overwrite && this.#conditional;
    if (!overwrite && !conditional && (await this.stat(name))) throw this.#exists(name);
    const IfNoneMatch = conditional ? '*' : undefined;
    for (let attempt = 1; ; attempt++) {
      try {
        if (this.#multipart(body)) {
          // A copy: lib-storage may still be sending other parts when it reports a failure.
          await this.#upload(name, key, Buffer.from(body), IfNoneMatch);
        } else {
          await this.client.send(this.#putCommand(key, body, IfNoneMatch, digests));
        }
        return;
      } catch (err) {
        if (s3Status(err) === 412) {
          if (s3Attempts(err) > 1 && (await this.#holds(key, body, digests))) return;
          throw this.#exists(name, err);
        }
        const code = s3Code(err);
        if (code === 'ConditionalRequestConflict' && attempt < CONFLICT_ATTEMPTS) continue;
        if (conditional && code === 'NotImplemented') {
          this.#conditional = false;
          return this.#put(name, key, body, opts);
        }
        throw err;
      }
    }
  }

  /**
   * A PutObject carrying the caller's digests where it has them: Content-MD5 and the SigV4
   * payload hash would otherwise be computed on the main thread (the cairnContentMd5
   * middleware, the signer), 0.46 s of the 17.7 s main thread of the 242 MB S3 bench.
   */
  #putCommand(
    key: string,
    body: Buffer,
    IfNoneMatch: string | undefined,
    digests: BodyDigests | undefined,
  ): PutObjectCommand {
    const ContentMD5 = digests?.md5 && Buffer.from(digests.md5).toString('base64');
    const input = { Bucket: this.#bucket, Key: key, Body: body, IfNoneMatch, ContentMD5 };
    const command = new PutObjectCommand(input);
    if (digests?.sha256) withPayloadHash(command, Buffer.from(digests.sha256).toString('hex'));
    return command;
  }

  /**
   * Multipart upload; lib-storage aborts it when a part fails for good, so a failed write
   * leaves nothing. A process killed midway leaves parts no listing shows (S3 lifecycle rule
   * AbortIncompleteMultipartUpload reclaims them).
   */
  async #upload(name: string, key: string, body: Buffer, IfNoneMatch?: string): Promise<void> {
    // Completion is conditional on AWS; servers that ignore the condition there get a check.
    if (IfNoneMatch && (await this.stat(name))) throw this.#exists(name);
    const upload = new Upload({
      client: this.client,
      params: { Bucket: this.#bucket, Key: key, Body: body, IfNoneMatch },
      partSize: this.#partSize(),
      queueSize: this.#opts.partConcurrency ?? DEFAULT_PART_CONCURRENCY,
      leavePartsOnError: false,
    });
    await upload.done();
  }

  /**
   * Whether the object at `key` already holds exactly `body`: after a lost response the
   * SDK's retry of our own successful conditional PUT is answered 412.
   */
  async #holds(key: string, body: Buffer, digests?: BodyDigests): Promise<boolean> {
    const out = await this.client
      .send(new HeadObjectCommand({ Bucket: this.#bucket, Key: key }))
      .catch(() => undefined);
    const partSize = this.#multipart(body) ? this.#partSize() : undefined;
    const etag = expectedEtag(body, partSize, digests?.md5);
    return out?.ContentLength === body.length && out.ETag === etag;
  }

  #partSize(): number {
    return this.#opts.partSize ?? DEFAULT_PART_SIZE;
  }

  /** lib-storage sends a body of one part as a plain PUT. */
  #multipart(body: Buffer): boolean {
    const threshold = this.#opts.multipartThreshold ?? DEFAULT_MULTIPART_THRESHOLD;
    return body.length >= threshold && body.length > this.#partSize();
  }

  /** Runs `fn`, creating the bucket first if it turns out not to exist. */
  async #inBucket<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      if (s3Code(err) !== 'NoSuchBucket') throw err;
    }
    this.#bucketCreated ??= this.#createBucket();
    await this.#bucketCreated;
    return fn();
  }

  async #createBucket(): Promise<void> {
    const region = await this.client.config.region();
    // us-east-1 is the default location and refuses to be named as a constraint.
    const configuration =
      region === 'us-east-1'
        ? undefined
        : { LocationConstraint: region as BucketLocationConstraint };
    try {
      await this.client.send(
        new CreateBucketCommand({ Bucket: this.#bucket, CreateBucketConfiguration: configuration }),
      );
    } catch (err) {
      if (s3Code(err) === 'BucketAlreadyOwnedByYou') return;
      this.#bucketCreated = undefined;
      throw err;
    }
  }

  /** A zero-length range: the object must exist and the offset lie within it. */
  async #readNothing(name: string, range: ByteRange): Promise<Buffer> {
    const info = await this.stat(name);
    if (!info) throw this.#notFound(name);
    if (range.offset > info.size) throw short(name, 0, range, info.size);
    return Buffer.alloc(0);
  }

  #key(name: string): string {
    if (this.#closed) throw new CairnError(`backend ${this.location} is closed`);
    if (!validName(name)) throw new CairnError(`invalid object name ${JSON.stringify(name)}`);
    return this.#prefix + name;
  }

  #exists(name: string, cause?: unknown): CairnError {
    return new CairnError(`${name} already exists in ${this.location}`, 'Fatal', { cause });
  }

  #notFound(name: string, cause?: unknown): CairnError {
    return new CairnError(`${name} not found in ${this.location}`, 'NotFound', { cause });
  }

  #mapError(err: unknown, name: string): CairnError {
    if (isMissing(err)) return this.#notFound(name, err);
    return new CairnError(`cannot access ${name} in ${this.location}: ${describe(err)}`, 'Fatal', {
      cause: err,
    });
  }
}

/** The same names a local repository accepts: relative, no empty, `.` or `..` segments. */
function validName(name: string): boolean {
  return name.split('/').every((s) => s !== '' && s !== '.' && s !== '..' && !s.includes('\0'));
}

function checkRange(range: ByteRange, name: string): void {
  const ok = (n: number) => Number.isSafeInteger(n) && n >= 0;
  if (!ok(range.offset) || !ok(range.length)) {
    throw new CairnError(`invalid byte range ${JSON.stringify(range)} for ${name}`);
  }
}

function short(name: string, got: number, range: ByteRange, size?: number): CairnError {
  const where = size === undefined ? 'past its end' : `but it is only ${size} bytes`;
  return new CairnError(
    `${name} is damaged: read ${got} of ${range.length} bytes at offset ${range.offset}, ${where}`,
    'Damaged',
  );
}

function isMissing(err: unknown): boolean {
  const code = s3Code(err);
  return (
    code === 'NoSuchKey' || code === 'NoSuchBucket' || code === 'NotFound' || s3Status(err) === 404
  );
}

/**
 * The ETag S3 gives an object uploaded from `body`: the MD5 of a single PUT, or for a
 * multipart upload of `partSize` parts the MD5 of the parts' MD5s and the part count.
 */
function expectedEtag(body: Buffer, partSize: number | undefined, bodyMd5?: Uint8Array): string {
  const md5 = (b: Uint8Array) => createHash('md5').update(b).digest();
  if (partSize === undefined) return `"${Buffer.from(bodyMd5 ?? md5(body)).toString('hex')}"`;
  const parts: Buffer[] = [];
  for (let at = 0; at < body.length; at += partSize)
    parts.push(md5(body.subarray(at, at + partSize)));
  return `"${md5(Buffer.concat(parts)).toString('hex')}-${parts.length}"`;
}

interface PutOptions {
  overwrite: boolean;
  digests?: BodyDigests;
}

function describe(err: unknown): string {
  const code = s3Code(err);
  const message = err instanceof Error ? err.message : String(err);
  return code && code !== 'Error' && !message.includes(code) ? `${code}: ${message}` : message;
}
