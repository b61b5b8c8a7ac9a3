import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { copySnapshots } from '../../src/ops/copy.js';
import type { ByteRange } from '../../src/repo/backend/backend.js';
import { LocalBackend } from '../../src/repo/backend/local.js';
import { Repository } from '../../src/repo/repository.js';
import type { StoredSnapshot } from '../../src/repo/snapshot.js';
import { PassThroughBackend, type TempDir, tempDir } from '../helpers.js';
import { announceSkip, type Rgw, rgwUnavailable, startRgw, uniqueBucket } from '../s3/rgw.js';
import { cairn, FAST_KDF_FLAGS, type RunResult } from './run.js';

/** Tests running several CLI commands: seconds each on a busy two-core machine. */
const SLOW = 240_000;

const CHUNKS = ['--chunk-min', '16K', '--chunk-avg', '64K', '--chunk-max', '256K'];
const MIN_CHUNK = 16 << 10;

let d: TempDir;
beforeEach(async () => {
  d = await tempDir();
});
afterEach(() => d.cleanup());

/** The CLI on repository `repo` with password `password` (none: unencrypted). */
function runner(repo: string, password?: string, extra: Record<string, string> = {}) {
  return (args: string[], env: Record<string, string> = {}) =>
    cairn(args, {
      env: {
        CAIRN_REPO: repo,
        CAIRN_CACHE_DIR: join(d.path, 'cache'),
        ...(password ? { CAIRN_PASSWORD: password } : {}),
        ...extra,
        ...env,
      },
    });
}

type Run = ReturnType<typeof runner>;

function jsonLines(r: RunResult): Record<string, unknown>[] {
  return r.stdout
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

function ok(r: RunResult): RunResult {
  expect(r.code, r.stderr).toBe(0);
  return r;
}

/** A directory of files and a disk image, backed up into `run`'s repository as two snapshots. */
async function populate(run: Run) {
  const src = join(d.path, 'src');
  await mkdir(join(src, 'sub'), { recursive: true });
  const files = { 'a.bin': randomBytes(700_000), 'sub/b.txt': Buffer.from('bee\n') };
  for (const [f, data] of Object.entries(files)) await writeFile(join(src, f), data);
  const disk = Buffer.concat([randomBytes(400_000), Buffer.alloc(1 << 20), randomBytes(300_000)]);
  await writeFile(join(d.path, 'disk.img'), disk);
  ok(await run(['backup', src, '--host', 'h1', '--tag', 't']));
  ok(await run(['image', join(d.path, 'disk.img'), '--host', 'h1']));
  return { src, files, disk };
}

/** Restores both snapshots from `run`'s repository and compares them with the originals. */
async function expectRestores(run: Run, data: Awaited<ReturnType<typeof populate>>, tag: string) {
  const out = join(d.path, `out-${tag}`);
  ok(await run(['restore', 'latest', '--path', data.src, '--target', out]));
  for (const [f, bytes] of Object.entries(data.files)) {
    expect((await readFile(join(out, data.src, f))).equals(bytes), f).toBe(true);
  }
  const img = join(d.path, `disk-${tag}.img`);
  ok(await run(['restore', 'latest', '--name', 'disk.img', '--target', img]));
  expect((await readFile(img)).equals(data.disk)).toBe(true);
}

function summaryOf(r: RunResult): Record<string, number> {
  return jsonLines(r).find((l) => l.message_type === 'summary') as Record<string, number>;
}

describe('cairn copy between local repositories', { timeout: SLOW }, () => {
  it('copies between repositories with different keys, then only what is new', async () => {
    const src = runner(join(d.path, 'src-repo'), 'one');
    const dst = runner(join(d.path, 'dst-repo'), 'two', { CAIRN_FROM_PASSWORD: 'one' });
    ok(await src(['init', ...FAST_KDF_FLAGS, ...CHUNKS]));
    ok(await dst(['init', ...FAST_KDF_FLAGS]));
    const data = await populate(src);
    const from = ['copy', '--from', join(d.path, 'src-repo'), '--json'];

    const first = ok(await dst(from));
    expect(jsonLines(first).filter((l) => l.message_type === 'copied')).toHaveLength(2);
    expect(summaryOf(first)).toMatchObject({ snapshots_copied: 2, snapshots_skipped: 0 });
    expect(summaryOf(first).data_added).toBeGreaterThan(1_000_000);
    await expectRestores(dst, data, 'keys');
    ok(await dst(['check', '--read-data']));

    const again = ok(await dst(from));
    expect(summaryOf(again)).toMatchObject({
      snapshots_copied: 0,
      snapshots_skipped: 2,
      blobs_copied: 0,
      data_added: 0,
    });

    // A second backup that changed one small file: its copy adds little.
    await writeFile(join(data.src, 'sub/b.txt'), 'changed\n');
    const second = ok(await src(['backup', data.src, '--host', 'h1', '--json']));
    const secondId = summaryOf(second).snapshot_id as unknown as string;
    const third = ok(await dst([...from, secondId.slice(0, 8)]));
    expect(summaryOf(third)).toMatchObject({ snapshots_copied: 1, snapshots_skipped: 0 });
    expect(summaryOf(third).data_added).toBeLessThan(4096);
    const snaps = JSON.parse(ok(await dst(['snapshots', '--json'])).stdout);
    const files = snaps.filter((s: StoredSnapshot) => s.kind === 'files');
    expect(files).toHaveLength(2);
    // The copied parent is the destination's copy of the source's parent.
    const newest = files.find((s: StoredSnapshot) => s.parent !== undefined && s.parent !== null);
    expect(files.map((s: StoredSnapshot) => s.id)).toContain(newest.parent);
  });

  it('keeps snapshot IDs between unencrypted repositories and honours filters', async () => {
    const src = runner(join(d.path, 'src-repo'));
    const dst = runner(join(d.path, 'dst-repo'));
    ok(await src(['init', '--no-encryption', ...CHUNKS]));
    ok(await dst(['init', '--no-encryption']));
    await populate(src);
    const imageOnly = ok(
      await dst(['copy', '--from', join(d.path, 'src-repo'), '--name', 'disk.img', '--json']),
    );
    expect(summaryOf(imageOnly)).toMatchObject({ snapshots_copied: 1 });
    const all = ok(await dst(['copy', '--from', join(d.path, 'src-repo'), '--json']));
    expect(summaryOf(all)).toMatchObject({ snapshots_copied: 1, snapshots_skipped: 1 });
    const ids = async (run: Run) =>
      JSON.parse(ok(await run(['snapshots', '--json'])).stdout)
        .map((s: StoredSnapshot) => s.id)
        .sort();
    expect(await ids(dst)).toEqual(await ids(src));
  });

  it('reads each chunk from the source once, even across runs', async () => {
    const srcDir = join(d.path, 'src-repo');
    const src = runner(srcDir, 'one');
    ok(await src(['init', ...FAST_KDF_FLAGS, ...CHUNKS]));
    await populate(src);
    const dst = await Repository.init(new LocalBackend(join(d.path, 'dst-repo')), {
      encryption: true,
      password: 'two',
      kdf: { t: 1, m: 64, p: 1 },
      cacheDir: join(d.path, 'lib-cache'),
    });
    const counting = new CountingBackend(new LocalBackend(srcDir));
    const source = await Repository.open(counting, {
      cacheDir: join(d.path, 'lib-cache'),
      password: async () => 'one',
    });
    const copy = async (snaps: StoredSnapshot[]) => {
      counting.reads = 0;
      counting.chunkReads = 0;
      const events = copySnapshots(source, dst, snaps);
      for (let n = await events.next(); ; n = await events.next()) if (n.done) return n.value;
    };
    try {
      const snaps = await source.listSnapshots();
      const files = snaps.find((s) => s.kind === 'files')!;
      const first = await copy([files]);
      expect(first.snapshotsCopied).toBe(1);
      // Every blob the destination got was read once: no chunk twice, nothing it had.
      expect(counting.reads).toBe(first.blobsCopied);
      expect(counting.chunkReads).toBeGreaterThan(5);
      const second = await copy(snaps);
      expect(second).toMatchObject({ snapshotsCopied: 1, snapshotsSkipped: 1 });
      // Manifest segments are re-cut by the destination's IDs: their count may differ.
      expect(counting.chunkReads).toBeGreaterThan(5);
      // Snapshot documents gone from the destination, blobs kept: copying again walks the
      // trees and manifests, but the ID map in the cache spares every chunk read.
      for (const s of await dst.listSnapshots()) await dst.backend.delete(`snapshots/${s.id}`);
      const third = await copy(snaps);
      expect(third).toMatchObject({ snapshotsCopied: 2, blobsCopied: 0, dataAdded: 0 });
      expect(counting.chunkReads).toBe(0);
    } finally {
      await source.close();
      await dst.close();
    }
  });

  it('fails clearly without the source, its password or a matching snapshot', async () => {
    const dstDir = join(d.path, 'dst-repo');
    const dst = runner(dstDir, 'two');
    ok(await dst(['init', ...FAST_KDF_FLAGS]));
    const none = await dst(['copy']);
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(/no source repository given/);
    const missing = await dst(['copy', '--from-repo', join(d.path, 'nope')]);
    expect(missing.code).toBe(10);
    expect(missing.stderr).toMatch(/repository .*nope does not exist/);
    const srcDir = join(d.path, 'src-repo');
    ok(await runner(srcDir, 'one')(['init', ...FAST_KDF_FLAGS]));
    const noPassword = await dst(['copy', '--from', srcDir]);
    expect(noPassword.code).toBe(1);
    expect(noPassword.stderr).toMatch(/--from-password-file/);
    await writeFile(join(d.path, 'pw'), 'wrong\n');
    const wrong = await dst(['copy', '--from', srcDir, '--from-password-file', join(d.path, 'pw')]);
    expect(wrong.code).toBe(12);
    const unknown = await dst(['copy', '--from', srcDir, 'abcd'], { CAIRN_FROM_PASSWORD: 'one' });
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toMatch(/no snapshot with ID abcd/);
  });
});

const skip = rgwUnavailable();
announceSkip(skip);

describe.skipIf(skip !== undefined)('cairn copy through S3', { timeout: SLOW }, () => {
  let rgw: Rgw;
  beforeAll(async () => {
    rgw = await startRgw();
  });
  afterAll(async () => {
    await rgw?.stop();
  });

  it('local → S3 → local restores identical bytes', async () => {
    const s3 = `s3://${uniqueBucket('copy')}/repo`;
    const local = runner(join(d.path, 'local'), 'one', rgw.env);
    const remote = runner(s3, 'two', { ...rgw.env, CAIRN_FROM_PASSWORD: 'one' });
    const back = runner(join(d.path, 'back'), 'three', {
      ...rgw.env,
      CAIRN_FROM_PASSWORD: 'two',
    });
    ok(await local(['init', ...FAST_KDF_FLAGS, ...CHUNKS]));
    ok(await remote(['init', ...FAST_KDF_FLAGS]));
    ok(await back(['init', '--no-encryption']));
    const data = await populate(local);
    expect(
      summaryOf(ok(await remote(['copy', '--from', join(d.path, 'local'), '--json']))),
    ).toMatchObject({
      snapshots_copied: 2,
    });
    expect(summaryOf(ok(await back(['copy', '--from', s3, '--json'])))).toMatchObject({
      snapshots_copied: 2,
    });
    await expectRestores(back, data, 'back');
  });
});

/**
 * Counts the blob reads it passes on; `chunkReads` those of at least MIN_CHUNK bytes, which
 * with `--chunk-min 16K` and random data are data chunks, never trees or manifests.
 */
class CountingBackend extends PassThroughBackend {
  reads = 0;
  chunkReads = 0;

  override read(name: string, range?: ByteRange) {
    if (name.startsWith('data/')) {
      this.reads++;
      if ((range?.length ?? 0) >= MIN_CHUNK) this.chunkReads++;
    }
    return super.read(name, range);
  }
}
