import { createHash, randomBytes } from 'node:crypto';
import { ListMultipartUploadsCommand, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { openBackend } from '../../src/cli/context.js';
import { ChecksumSealer } from '../../src/crypto/index.js';
import { CairnError } from '../../src/errors.js';
import { needsPathStyle, parseS3Url, S3_TRAITS } from '../../src/repo/backend/s3-url.js';
import { Lock } from '../../src/repo/lock.js';
import { Repository } from '../../src/repo/repository.js';
import { S3Proxy } from '../s3/proxy.js';
import { announceSkip, type Rgw, rgwUnavailable, startRgw, uniqueBucket } from '../s3/rgw.js';
import { backendContract } from './backend-contract.js';

describe('S3 locations', () => {
  it('parses bucket and prefix', () => {
    expect(parseS3Url('s3://bucket')).toEqual({ bucket: 'bucket', prefix: '' });
    expect(parseS3Url('s3://bucket/')).toEqual({ bucket: 'bucket', prefix: '' });
    expect(parseS3Url('s3://my.bucket/a/b/')).toEqual({ bucket: 'my.bucket', prefix: 'a/b/' });
    for (const bad of ['s3://', 's3://b', 's3://-bad-', 's3://bucket/a/../b', 'http://x/y']) {
      expect(() => parseS3Url(bad)).toThrow(CairnError);
    }
  });

  it('knows an s3:// backend is remote before loading the SDK', async () => {
    const backend = openBackend('s3://bucket/prefix');
    expect(backend.traits).toEqual(S3_TRAITS);
    expect(backend.traits?.remote).toBe(true);
    await backend.close();
  });

  it('uses path style where virtual hosts cannot resolve', () => {
    expect(needsPathStyle('http://127.0.0.1:7480')).toBe(true);
    expect(needsPathStyle('http://[::1]:9000')).toBe(true);
    expect(needsPathStyle('http://localhost:9000')).toBe(true);
    expect(needsPathStyle('http://minio:9000')).toBe(true);
    expect(needsPathStyle('https://s3.eu-west-1.amazonaws.com')).toBe(false);
  });
});

const skip = rgwUnavailable();
announceSkip(skip);

describe.skipIf(skip !== undefined)('S3Backend on radosgw', () => {
  let rgw: Rgw;
  beforeAll(async () => {
    rgw = await startRgw();
  });
  afterAll(async () => {
    await rgw?.stop();
  });

  describe('backend contract', () => {
    const bucket = uniqueBucket('contract');
    let n = 0;
    backendContract(async () => ({
      backend: rgw.backend(`s3://${bucket}/t${n++}/x`),
      cleanup: async () => {},
    }));
  });

  it('names itself by URL and creates a missing bucket on first write', async () => {
    const bucket = uniqueBucket('fresh');
    const b = rgw.backend(`s3://${bucket}/`);
    try {
      expect(b.location).toBe(`s3://${bucket}`);
      expect(await b.stat('config')).toBeUndefined();
      expect((await errorOf(b.read('config'))).code).toBe('NotFound');
      const names: string[] = [];
      for await (const o of b.list('keys')) names.push(o.name);
      expect(names).toEqual([]);
      await b.delete('config');
      await b.write('config', Buffer.from('c'));
      expect((await b.read('config')).toString()).toBe('c');
    } finally {
      await b.close();
    }
  });

  it('lists across pages', async () => {
    const b = rgw.backend(`s3://${uniqueBucket('pages')}/p`);
    // Seven keys a page instead of S3's 1000, so that a small listing takes several pages.
    b.client.middlewareStack.add(
      (next, context) => async (args) => {
        if (context.commandName === 'ListObjectsV2Command') {
          (args.input as { MaxKeys?: number }).MaxKeys = 7;
        }
        return next(args);
      },
      { step: 'initialize', name: 'testPageSize' },
    );
    const pages = countRequests(b.client, 'ListObjectsV2Command');
    try {
      const names = Array.from({ length: 20 }, (_, i) => `index/${String(i).padStart(2, '0')}`);
      await Promise.all(names.map((n) => b.write(n, Buffer.from(n))));
      const listed: string[] = [];
      for await (const o of b.list('index')) listed.push(o.name);
      expect(listed.sort()).toEqual(names);
      expect(pages.count).toBe(3);
    } finally {
      await b.close();
    }
  });

  it('opening a repository in a missing bucket is RepoNotFound', async () => {
    const b = rgw.backend(`s3://${uniqueBucket('none')}/repo`);
    const err = await errorOf(Repository.open(b, { cacheDir: '/nonexistent' }));
    expect(err.code).toBe('RepoNotFound');
    expect(err.message).toBe(`repository ${b.location} does not exist`);
    await b.close();
  });

  describe('large objects in parts', () => {
    const opts = { multipartThreshold: 6 << 20, partSize: 5 << 20 };
    const big = randomBytes(12 << 20);

    it('round-trips, reads ranges across parts and stays write-once', async () => {
      const b = rgw.backend(`s3://${uniqueBucket('mp')}`, opts);
      try {
        await b.write('data/00/big', [big.subarray(0, 1000), big.subarray(1000)]);
        expect((await b.read('data/00/big')).equals(big)).toBe(true);
        const range = { offset: (5 << 20) - 10, length: 20 };
        expect(
          (await b.read('data/00/big', range)).equals(
            big.subarray(range.offset, range.offset + 20),
          ),
        ).toBe(true);
        expect((await errorOf(b.write('data/00/big', big))).message).toContain('already exists');
      } finally {
        await b.close();
      }
    });

    it('aborts the upload when a part is corrupted in transit (Content-MD5)', async () => {
      const bucket = uniqueBucket('mpbad');
      const b = rgw.backend(`s3://${bucket}`, opts);
      try {
        await b.write('config', Buffer.from('bucket exists'));
        corruptBodies(b.client, 'UploadPartCommand');
        const err = await errorOf(b.write('data/00/bad', big));
        expect(err.message).toMatch(/BadDigest|Content-MD5/i);
        expect(await b.stat('data/00/bad')).toBeUndefined();
        const uploads = await b.client.send(new ListMultipartUploadsCommand({ Bucket: bucket }));
        expect(uploads.Uploads ?? []).toEqual([]);
      } finally {
        await b.close();
      }
    });
  });

  it('rejects a body corrupted after its Content-MD5 was computed', async () => {
    const b = rgw.backend(`s3://${uniqueBucket('md5')}`);
    try {
      await b.write('config', Buffer.from('bucket exists'));
      corruptBodies(b.client, 'PutObjectCommand');
      const err = await errorOf(b.write('snapshots/s', Buffer.from('precious bytes')));
      expect(err.message).toMatch(/BadDigest/);
      expect(await b.stat('snapshots/s')).toBeUndefined();
    } finally {
      await b.close();
    }
  });

  it("sends the caller's digests rather than hashing, and the server holds the body to them", async () => {
    const b = rgw.backend(`s3://${uniqueBucket('digests')}`);
    const sent = sentHeaders(b.client, 'PutObjectCommand');
    const hash = (algorithm: string, data: Uint8Array) =>
      createHash(algorithm).update(data).digest();
    try {
      await b.write('config', Buffer.from('bucket exists'));
      const body = randomBytes(100_000);
      const digests = { md5: hash('md5', body), sha256: hash('sha256', body) };
      await b.write('data/00/good', body, { digests });
      expect(sent.at(-1)?.['content-md5']).toBe(digests.md5.toString('base64'));
      expect(sent.at(-1)?.['x-amz-content-sha256']).toBe(digests.sha256.toString('hex'));
      expect((await b.read('data/00/good')).equals(body)).toBe(true);

      const other = randomBytes(16);
      const badMd5 = { ...digests, md5: hash('md5', other) };
      expect((await errorOf(b.write('data/00/a', body, { digests: badMd5 }))).message).toMatch(
        /BadDigest/,
      );
      const badSha = { ...digests, sha256: hash('sha256', other) };
      expect((await errorOf(b.write('data/00/b', body, { digests: badSha }))).message).toMatch(
        /SHA256Mismatch/,
      );
      expect(await b.stat('data/00/a')).toBeUndefined();
      expect(await b.stat('data/00/b')).toBeUndefined();
    } finally {
      await b.close();
    }
  });

  it('retries throttling and resets, and keeps many requests in flight', async () => {
    const proxy = await S3Proxy.start(rgw.endpoint, { throttleEvery: 4, tooManyEvery: 7 });
    const b = rgw.backend(`s3://${uniqueBucket('slow')}/p`, { endpoint: proxy.endpoint });
    const inFlight = countInFlight(b.client);
    try {
      const names = Array.from({ length: 12 }, (_, i) => `data/${i % 4}0/obj${i}`);
      await Promise.all(names.map((n) => b.write(n, Buffer.from(n))));
      const read = await Promise.all(names.map((n) => b.read(n)));
      expect(read.map((r) => r.toString())).toEqual(names);
      expect(proxy.refused).toBeGreaterThan(4);
      expect(inFlight.max).toBeGreaterThan(4);
    } finally {
      await b.close();
      await proxy.close();
    }
  });

  it('takes its own retried PUT answered 412 as success', async () => {
    const b = rgw.backend(`s3://${uniqueBucket('lost')}`);
    try {
      await b.write('config', Buffer.from('bucket exists'));
      loseFirstResponse(b.client, 'PutObjectCommand');
      await b.write('index/seg', Buffer.from('segment'));
      expect((await b.read('index/seg')).toString()).toBe('segment');
      loseFirstResponse(b.client, 'PutObjectCommand');
      await b.write('index/seg2', Buffer.from('other'));
      const err = await errorOf(b.write('index/seg2', Buffer.from('different')));
      expect(err.message).toContain('already exists');
    } finally {
      await b.close();
    }
  });

  it('judges locks of other hosts by the server clock, not this one', async () => {
    const b = rgw.backend(`s3://${uniqueBucket('locks')}`);
    const sealer = new ChecksumSealer();
    const lockAt = async (name: string, refreshedAgoMs: number) => {
      const time = new Date((await b.now()) - refreshedAgoMs).toISOString();
      const info = { hostname: 'other-host', pid: 1, username: 'u', command: 'backup' };
      const doc = { ...info, exclusive: true, time, refreshed: time };
      await b.write(`locks/${name}`, sealer.seal(Buffer.from(JSON.stringify(doc))));
    };
    try {
      await lockAt('live', 0);
      await lockAt('dead', 40 * 60_000);
      // This machine's clock runs an hour ahead: by it, the live lock would look stale.
      vi.useFakeTimers({ toFake: ['Date'] });
      vi.setSystemTime(Date.now() + 3600_000);
      const err = await errorOf(Lock.acquire(b, sealer, { exclusive: false, command: 'x' }));
      expect(err.code).toBe('Locked');
      expect(err.message).toContain('other-host');
      await b.delete('locks/live');
      const lock = await Lock.acquire(b, sealer, { exclusive: true, command: 'prune' });
      await lock.release();
      // Another host's stale lock is ignored, not removed: that host may yet come back.
      expect(await b.stat('locks/dead')).toBeDefined();
    } finally {
      vi.useRealTimers();
      await b.close();
    }
  });

  it("tells the time by the server's clock", async () => {
    const b = rgw.backend(`s3://${uniqueBucket('clock')}`);
    try {
      // Same machine here: the server's clock and ours agree to the Date header's second.
      expect(Math.abs((await b.now()) - Date.now())).toBeLessThan(3000);
    } finally {
      await b.close();
    }
  });
});

async function errorOf(promise: Promise<unknown>): Promise<CairnError> {
  try {
    await promise;
  } catch (err) {
    expect(err).toBeInstanceOf(CairnError);
    return err as CairnError;
  }
  throw new Error('expected a CairnError, but the call succeeded');
}

/** Flips one byte of every `command` body after Content-MD5 was computed, before signing. */
function corruptBodies(client: S3Client, command: string): void {
  client.middlewareStack.add(
    (next, context) => async (args) => {
      const request = args.request as { body?: unknown };
      if (context.commandName === command && request.body instanceof Uint8Array) {
        const copy = Buffer.from(request.body);
        copy[copy.length >> 1]! ^= 0x55;
        request.body = copy;
      }
      return next(args);
    },
    // Low priority: runs after cairn's Content-MD5 middleware in the same (build) step.
    { step: 'build', priority: 'low', name: 'testCorrupt' },
  );
}

/** The first `command` reaches the server, but its answer is lost in a connection reset. */
function loseFirstResponse(client: S3Client, command: string): void {
  let lost = false;
  const name = `testLose${randomBytes(4).toString('hex')}`;
  client.middlewareStack.add(
    (next, context) => async (args) => {
      const out = await next(args);
      if (context.commandName === command && !lost) {
        lost = true;
        throw Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' });
      }
      return out;
    },
    { step: 'deserialize', name },
  );
}

/** The headers of every `command` request as signed and sent. */
function sentHeaders(client: S3Client, command: string): Record<string, string>[] {
  const sent: Record<string, string>[] = [];
  client.middlewareStack.add(
    (next, context) => async (args) => {
      const request = args.request as { headers: Record<string, string> };
      if (context.commandName === command) sent.push({ ...request.headers });
      return next(args);
    },
    { step: 'finalizeRequest', name: `testHeaders${command}` },
  );
  return sent;
}

/** How many `command` requests the client sent. */
function countRequests(client: S3Client, command: string): { count: number } {
  const counter = { count: 0 };
  client.middlewareStack.add(
    (next, context) => async (args) => {
      if (context.commandName === command) counter.count++;
      return next(args);
    },
    { step: 'initialize', name: `testCount${command}` },
  );
  return counter;
}

/** The most requests the client had on the wire at once. */
function countInFlight(client: S3Client): { max: number } {
  const counter = { max: 0, now: 0 };
  client.middlewareStack.add(
    (next) => async (args) => {
      counter.max = Math.max(counter.max, ++counter.now);
      try {
        return await next(args);
      } finally {
        counter.now--;
      }
    },
    { step: 'finalizeRequest', name: 'testInFlight' },
  );
  return counter;
}
