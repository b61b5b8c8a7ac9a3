import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ListMultipartUploadsCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { S3Backend } from '../../src/repo/backend/s3.js';
import { CAIRN, cairn, FAST_KDF_FLAGS } from '../cli/run.js';
import { type TempDir, tempDir } from '../helpers.js';
import { type LoggedRequest, S3Proxy } from './proxy.js';
import { announceSkip, type Rgw, rgwUnavailable, startRgw, uniqueBucket } from './rgw.js';

/** Tests running several CLI commands: seconds each on a busy two-core machine. */
const SLOW = 240_000;

const S3_MODULE = fileURLToPath(new URL('../../dist/src/repo/backend/s3.js', import.meta.url));

const skip = rgwUnavailable();
announceSkip(skip);

describe.skipIf(skip !== undefined)('a process killed mid-upload', { timeout: SLOW }, () => {
  let rgw: Rgw;
  let d: TempDir;
  beforeAll(async () => {
    [rgw, d] = await Promise.all([startRgw(), tempDir()]);
  });
  afterAll(async () => {
    await rgw?.stop();
    await d?.cleanup();
  });

  it('leaves no object from a multipart upload it did not complete', async () => {
    const bucket = uniqueBucket('mpkill');
    const direct = rgw.backend(`s3://${bucket}/r`);
    // The second part goes half-way, then the writer dies.
    const proxy = await S3Proxy.start(rgw.endpoint, {
      stall: (method, path) => method === 'PUT' && path.includes('partNumber=2'),
    });
    try {
      await direct.write('config', Buffer.from('bucket exists'));
      const child = spawnNode(
        `import { S3Backend } from ${JSON.stringify(S3_MODULE)};
         const b = new S3Backend(process.argv[1], {
           endpoint: process.argv[2], multipartThreshold: 6 << 20, partSize: 5 << 20,
           partConcurrency: 1,
         });
         await b.write('data/ab/big', Buffer.alloc(24 << 20, 7));`,
        [`s3://${bucket}/r`, proxy.endpoint],
      );
      await killWhenStalled(proxy, child);
      expect(await direct.stat('data/ab/big')).toBeUndefined();
      expect(await names(direct, 'data')).toEqual([]);
      // The parts stay behind, invisible, until the upload is aborted (lifecycle or by hand).
      const uploads = await direct.client.send(new ListMultipartUploadsCommand({ Bucket: bucket }));
      expect(uploads.Uploads?.map((u) => u.Key)).toEqual(['r/data/ab/big']);
    } finally {
      await direct.close();
      await proxy.close();
    }
  });

  it('leaves a repository that checks clean and a next backup that completes it', async () => {
    const bucket = uniqueBucket('backupkill');
    const repo = `s3://${bucket}/r`;
    const direct = rgw.backend(repo);
    // The second pack stops half-way, after the first is stored and indexed.
    const proxy = await S3Proxy.start(rgw.endpoint, {
      stall: (method, path) => method === 'PUT' && path.includes('/data/') && sawOnePack(),
    });
    let packs = 0;
    const sawOnePack = () => packs++ >= 1;
    const env = {
      ...rgw.env,
      CAIRN_REPO: repo,
      CAIRN_PASSWORD: 'pw',
      CAIRN_CACHE_DIR: join(d.path, 'cache'),
    };
    try {
      expect((await cairn(['init', ...FAST_KDF_FLAGS], { env })).code).toBe(0);
      const src = join(d.path, 'src');
      await mkdir(src);
      // Two packs (16 MiB each by default): the first is stored and indexed, the second cut off.
      const data = randomBytes(24 << 20);
      await writeFile(join(src, 'f'), data);
      const child = spawn(process.execPath, [CAIRN, 'backup', src], {
        env: { ...process.env, ...env, AWS_ENDPOINT_URL_S3: proxy.endpoint },
        stdio: ['ignore', 'ignore', 'inherit'],
      });
      const stalled = await killWhenStalled(proxy, child, async () => {
        await waitFor(async () => (await names(direct, 'index')).length > 0);
      });
      const half = stalled.path.slice(`/${bucket}/r/`.length);
      expect(await direct.stat(half)).toBeUndefined();
      expect(await names(direct, 'snapshots')).toEqual([]);

      const check = await cairn(['check', '--read-data'], { env });
      expect(check.code, check.stdout + check.stderr).toBe(0);
      const again = await cairn(['backup', src, '--json'], { env });
      expect(again.code, again.stderr).toBe(0);
      const summary = JSON.parse(again.stdout.trim().split('\n').at(-1)!);
      expect(summary.data_added).toBeLessThan(data.length - (8 << 20));
      const out = join(d.path, 'out');
      expect((await cairn(['restore', 'latest', '--target', out], { env })).code).toBe(0);
      expect((await readFile(join(out, src, 'f'))).equals(data)).toBe(true);
    } finally {
      await direct.close();
      await proxy.close();
    }
  });
});

function spawnNode(script: string, args: string[]): ChildProcess {
  return spawn(process.execPath, ['--input-type=module', '-e', script, ...args], {
    env: { ...process.env, AWS_ACCESS_KEY_ID: 'testaccess', AWS_SECRET_ACCESS_KEY: 'testsecret' },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
}

/** Waits until the proxy holds a half-sent upload (and `before` is done), then SIGKILLs. */
async function killWhenStalled(
  proxy: S3Proxy,
  child: ChildProcess,
  before?: () => Promise<void>,
): Promise<LoggedRequest> {
  let done = false;
  const exited = new Promise<void>((resolve, reject) =>
    child.once('exit', (code) => {
      if (done) resolve();
      else reject(new Error(`the writer ended (exit ${code}) before it could be killed`));
    }),
  );
  const stalled = await Promise.race([proxy.stalled, exited.then(() => undefined)]);
  await before?.();
  done = true;
  child.kill('SIGKILL');
  await exited;
  return stalled!;
}

async function names(backend: S3Backend, folder: string): Promise<string[]> {
  const out: string[] = [];
  for await (const o of backend.list(folder)) out.push(o.name);
  return out;
}

/** Polls a condition about the server's state (there is no event to wait on). */
async function waitFor(condition: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 50));
  }
}
