import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cairn, FAST_KDF_FLAGS, type RunResult } from '../cli/run.js';
import { type TempDir, tempDir } from '../helpers.js';
import { S3Proxy } from './proxy.js';
import { announceSkip, type Rgw, rgwUnavailable, startRgw, uniqueBucket } from './rgw.js';

/** Tests running several CLI commands: seconds each on a busy two-core machine. */
const SLOW = 240_000;

/** Small chunks and a few MiB of data: several packs and index segments in little time. */
const CHUNKS = ['--chunk-min', '16K', '--chunk-avg', '64K', '--chunk-max', '256K'];

const skip = rgwUnavailable();
announceSkip(skip);

describe.skipIf(skip !== undefined)('cairn on s3://', { timeout: SLOW }, () => {
  let rgw: Rgw;
  let d: TempDir;
  beforeAll(async () => {
    [rgw, d] = await Promise.all([startRgw(), tempDir()]);
  });
  afterAll(async () => {
    await rgw?.stop();
    await d?.cleanup();
  });

  /** The CLI as a user on host `host` runs it: its own cache, endpoint from the environment. */
  function on(host: string, repo: string) {
    const env = {
      ...rgw.env,
      CAIRN_REPO: repo,
      CAIRN_PASSWORD: 'pw',
      CAIRN_CACHE_DIR: join(d.path, `cache-${host}`),
    };
    return (args: string[], extra: Record<string, string> = {}) =>
      cairn(args, { env: { ...env, ...extra } });
  }

  async function tree(name: string, files: Record<string, Buffer>): Promise<string> {
    const dir = join(d.path, name);
    await mkdir(dir, { recursive: true });
    for (const [f, data] of Object.entries(files)) await writeFile(join(dir, f), data);
    return dir;
  }

  it('init, backup, restore, image and restore on s3://bucket/prefix', async () => {
    const repo = `s3://${uniqueBucket('e2e')}/backups/main`;
    const run = on('a', repo);
    const missing = await run(['snapshots']);
    expect(missing.code).toBe(10);
    expect(missing.stderr).toBe(`cairn: repository ${repo} does not exist\n`);
    expect((await run(['init', ...FAST_KDF_FLAGS, ...CHUNKS])).code).toBe(0);
    expect((await run(['init', ...FAST_KDF_FLAGS])).code).toBe(1);

    const files = { big: randomBytes(3 << 20), small: Buffer.from('hello') };
    const src = await tree('e2e-src', files);
    const backup = await run(['backup', src, '--json']);
    expect(backup.code, backup.stderr).toBe(0);
    const target = join(d.path, 'e2e-out');
    const restore = await run(['restore', 'latest', '--target', target, '--verify']);
    expect(restore.code, restore.stderr).toBe(0);
    for (const [f, data] of Object.entries(files)) {
      expect((await readFile(join(target, src, f))).equals(data)).toBe(true);
    }

    const disk = Buffer.concat([randomBytes(1 << 20), Buffer.alloc(2 << 20), randomBytes(1 << 19)]);
    await writeFile(join(d.path, 'disk.img'), disk);
    const image = await run(['image', join(d.path, 'disk.img'), '--json']);
    expect(image.code, image.stderr).toBe(0);
    const back = join(d.path, 'disk-back.img');
    expect((await run(['restore', 'latest', '--name', 'disk.img', '--target', back])).code).toBe(0);
    expect((await readFile(back)).equals(disk)).toBe(true);
    const check = await run(['check', '--read-data']);
    expect(check.code, check.stdout + check.stderr).toBe(0);
  });

  it('takes the endpoint from --s3-endpoint and --s3-path-style', async () => {
    const repo = `s3://${uniqueBucket('flags')}`;
    const flags = ['--s3-endpoint', rgw.endpoint, '--s3-path-style'];
    const run = on('flags', repo);
    const noEnv = { AWS_ENDPOINT_URL_S3: '' };
    expect((await run([...flags, 'init', '--no-encryption'], noEnv)).code).toBe(0);
    const snaps = await run([...flags, 'snapshots', '--json'], noEnv);
    expect(snaps.code, snaps.stderr).toBe(0);
    expect(JSON.parse(snaps.stdout)).toEqual([]);
  });

  it('two hosts back up into one bucket at once and dedup across each other', async () => {
    const repo = `s3://${uniqueBucket('hosts')}/shared`;
    expect((await on('a', repo)(['init', ...FAST_KDF_FLAGS, ...CHUNKS])).code).toBe(0);
    const shared = { data: randomBytes(2 << 20) };
    const [srcA, srcB] = await Promise.all([
      tree('hosts-a', { ...shared, own: randomBytes(1 << 20) }),
      tree('hosts-b', { own: randomBytes(1 << 20) }),
    ]);
    const [a, b] = await Promise.all([
      on('a', repo)(['backup', srcA, '--host', 'host-a', '--json']),
      on('b', repo)(['backup', srcB, '--host', 'host-b', '--json']),
    ]);
    expect(a.code, a.stderr).toBe(0);
    expect(b.code, b.stderr).toBe(0);
    expect(summary(a).data_added).toBeGreaterThan(3 << 20);

    // Host B now backs up what host A stored: only its (new) tree is added.
    const again = await on('b', repo)(['backup', srcA, '--host', 'host-b', '--json']);
    expect(again.code, again.stderr).toBe(0);
    expect(summary(again).data_added).toBeLessThan(4096);
    const snaps = JSON.parse((await on('a', repo)(['snapshots', '--json'])).stdout);
    expect(snaps.map((s: { hostname: string }) => s.hostname).sort()).toEqual([
      'host-a',
      'host-b',
      'host-b',
    ]);
  });

  it('a second host reads only the index segments it has not merged yet', async () => {
    const bucket = uniqueBucket('index');
    const repo = `s3://${bucket}/r`;
    const proxy = await S3Proxy.start(rgw.endpoint);
    const direct = rgw.backend(repo);
    try {
      const viaProxy = { AWS_ENDPOINT_URL_S3: proxy.endpoint };
      const [runA, runB] = [on('ia', repo), on('ib', repo)];
      expect((await runA(['init', ...FAST_KDF_FLAGS, ...CHUNKS])).code).toBe(0);
      const backup = async (run: typeof runA, name: string) => {
        const src = await tree(name, { f: randomBytes(1 << 20) });
        const r = await run(['backup', src, '--json'], viaProxy);
        expect(r.code, r.stderr).toBe(0);
      };
      const segments = async () => {
        let n = 0;
        for await (const _ of direct.list('index')) n++;
        return n;
      };
      const indexGets = () => proxy.gets(`/${bucket}/r/index/`).length;
      await backup(runA, 'index-a1');
      const afterA1 = await segments();
      let before = indexGets();
      await backup(runB, 'index-b1');
      // First run on host B: its cache is empty, so it reads every segment host A wrote.
      expect(indexGets() - before).toBe(afterA1);
      const afterB1 = await segments();
      await backup(runA, 'index-a2');
      const addedByA = (await segments()) - afterB1;
      expect(addedByA).toBeGreaterThan(0);
      before = indexGets();
      await backup(runB, 'index-b2');
      // Host B's second run: only what host A added since, neither B's own nor A's earlier.
      expect(indexGets() - before).toBe(addedByA);
    } finally {
      await direct.close();
      await proxy.close();
    }
  });
});

function summary(r: RunResult): Record<string, number> {
  const lines = r.stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  return lines.find((l) => l.message_type === 'summary');
}
