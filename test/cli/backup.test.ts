import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, chown, mkdir, open, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { decodeTree, type TreeEntry } from '../../src/files/tree.js';
import { LocalBackend } from '../../src/repo/backend/local.js';
import { Repository } from '../../src/repo/repository.js';
import type { StoredSnapshot } from '../../src/repo/snapshot.js';
import { type TempDir, tempDir } from '../helpers.js';
import { CAIRN, cairn, cliEnv, FAST_KDF_FLAGS, type RunResult } from './run.js';

const FAST = FAST_KDF_FLAGS;
const PASSWORD = 'secret';
const isRoot = process.getuid?.() === 0;
const hasSetpriv = spawnSync('setpriv', ['--version']).status === 0;

let d: TempDir;
let env: Record<string, string>;
let src: string;
beforeEach(async () => {
  d = await tempDir();
  src = join(d.path, 'src');
  await mkdir(src);
  env = cliEnv(d.path, PASSWORD);
});
afterEach(() => d.cleanup());

async function init(): Promise<void> {
  expect((await cairn(['init', ...FAST], { env })).code).toBe(0);
}

/** Opens the repository in-process (own cache: the CLI's LevelDB is not shared). */
async function withRepo<T>(fn: (repo: Repository) => Promise<T>): Promise<T> {
  const repo = await Repository.open(new LocalBackend(env.CAIRN_REPO!), {
    cacheDir: join(d.path, 'lib-cache'),
    password: async () => PASSWORD,
  });
  try {
    return await fn(repo);
  } finally {
    await repo.close();
  }
}

async function snapshots(): Promise<StoredSnapshot[]> {
  return withRepo((repo) => repo.listSnapshots());
}

/** Every path in a snapshot, as latin1 text (one character a byte), sorted. */
async function pathsIn(snap: StoredSnapshot): Promise<string[]> {
  return withRepo(async (repo) => {
    const store = await repo.blobs();
    const out: string[] = [];
    const walk = async (id: Buffer, prefix: string) => {
      const entries: TreeEntry[] = decodeTree(await store.get(id)).entries;
      for (const e of entries) {
        const path = `${prefix}/${e.name.toString('latin1')}`;
        out.push(path);
        if (e.subtree) await walk(e.subtree, path);
      }
    };
    await walk(Buffer.from(snap.root, 'hex'), '');
    return out.sort();
  });
}

function jsonLines(r: RunResult): Record<string, unknown>[] {
  return r.stdout
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l));
}

describe('cairn backup', () => {
  it('backs up, prints a summary, and reuses unchanged files the second time', async () => {
    await init();
    await writeFile(join(src, 'a'), 'alpha');
    await mkdir(join(src, 'd'));
    await writeFile(join(src, 'd', 'b'), randomBytes(5000));
    const first = await cairn(['backup', src, '--tag', 'one', '--tag', 'two', '--host', 'h1'], {
      env,
    });
    expect(first.stderr).toBe('');
    expect(first.code).toBe(0);
    expect(first.stdout).toMatch(/Files: +2 new, +0 changed, +0 unmodified/);
    expect(first.stdout).toMatch(/Added to the repository: /);
    expect(first.stdout).toMatch(/snapshot [0-9a-f]{8} saved/);
    const second = await cairn(['backup', src, '--host', 'h1'], { env });
    expect(second.code).toBe(0);
    expect(second.stdout).toMatch(/Files: +0 new, +0 changed, +2 unmodified/);
    expect(second.stdout).toMatch(/using parent snapshot [0-9a-f]{8}/);
    const snaps = await snapshots();
    expect(snaps).toHaveLength(2);
    const tagged = snaps.find((s) => s.tags.length > 0)!;
    expect(tagged).toMatchObject({ kind: 'files', hostname: 'h1', paths: [src], size: 5005 });
    expect(tagged.tags).toEqual(['one', 'two']);
    expect(await pathsIn(tagged)).toEqual(
      expect.arrayContaining([src, `${src}/a`, `${src}/d`, `${src}/d/b`]),
    );
  });

  it('prints status lines and exactly one summary with restic names in --json mode', async () => {
    await init();
    await writeFile(join(src, 'a'), 'alpha');
    const r = await cairn(['backup', '--json', src], { env });
    expect(r.code).toBe(0);
    const lines = jsonLines(r);
    const summaries = lines.filter((l) => l.message_type === 'summary');
    expect(summaries).toHaveLength(1);
    expect(lines.every((l) => l.message_type === 'status' || l.message_type === 'summary')).toBe(
      true,
    );
    const s = summaries[0]!;
    for (const k of [
      'files_new',
      'files_changed',
      'files_unmodified',
      'dirs_new',
      'dirs_changed',
      'dirs_unmodified',
      'data_blobs',
      'tree_blobs',
      'data_added',
      'total_files_processed',
      'total_bytes_processed',
      'total_duration',
    ]) {
      expect(typeof s[k], k).toBe('number');
    }
    expect(s.snapshot_id).toMatch(/^[0-9a-f]{64}$/);
    expect(s).toMatchObject({ files_new: 1, total_files_processed: 1, total_bytes_processed: 5 });
    expect(s.data_added as number).toBeGreaterThan(0);
  });

  it('exits 1 for a missing path and writes nothing', async () => {
    await init();
    const r = await cairn(['backup', src, join(d.path, 'missing')], { env });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^cairn: source path .*missing does not exist/);
    expect(await snapshots()).toEqual([]);
    expect(await readdir(join(env.CAIRN_REPO!, 'locks')).catch(() => [])).toEqual([]);
  });

  it('writes nothing with --dry-run', async () => {
    await init();
    await writeFile(join(src, 'a'), randomBytes(2000));
    const r = await cairn(['backup', '--dry-run', src], { env });
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/Would add to the repository: /);
    expect(r.stdout).toMatch(/dry run: no snapshot saved/);
    for (const dir of ['data', 'index', 'snapshots', 'locks']) {
      expect(await readdir(join(env.CAIRN_REPO!, dir)).catch(() => []), dir).toEqual([]);
    }
  });

  it('applies --exclude and --exclude-file', async () => {
    await init();
    await mkdir(join(src, 'cache'));
    await writeFile(join(src, 'cache', 'x'), 'x');
    await writeFile(join(src, 'a.log'), 'x');
    await writeFile(join(src, 'a.txt'), 'x');
    await writeFile(join(src, 'b.tmp'), 'x');
    await writeFile(join(d.path, 'ex'), '# temporary files\n*.tmp\n');
    const r = await cairn(
      [
        'backup',
        src,
        '--exclude',
        '*.log',
        '--exclude',
        `${src}/cache/`,
        '--exclude-file',
        join(d.path, 'ex'),
      ],
      { env },
    );
    expect(r.code).toBe(0);
    const [snap] = await snapshots();
    const below = (await pathsIn(snap!)).filter((p) => p.startsWith(`${src}/`));
    expect(below).toEqual([`${src}/a.txt`]);
  });

  it('takes names that start with a dash after --', async () => {
    await init();
    await mkdir(join(src, '-rf'));
    await writeFile(join(src, '-rf', 'f'), 'f');
    const r = await cairn(['backup', '--', '-rf'], { env, cwd: src });
    expect(r.code).toBe(0);
    const [snap] = await snapshots();
    expect(snap!.paths).toEqual([join(src, '-rf')]);
  });

  it.skipIf(!isRoot || !hasSetpriv)(
    'reports unreadable entries, saves the snapshot and exits 3 (as nobody, via setpriv)',
    async () => {
      await chmod(d.path, 0o755);
      await writeFile(join(src, 'ok'), 'readable');
      await writeFile(join(src, 'secret'), 'hidden', { mode: 0o600 });
      await mkdir(join(src, 'locked'), { mode: 0o700 });
      await writeFile(join(src, 'locked', 'inside'), 'x');
      for (const dir of ['repo', 'cache']) {
        await mkdir(join(d.path, dir));
        await chown(join(d.path, dir), 65534, 65534);
      }
      const asNobody = (args: string[]) =>
        runAs(['--reuid=65534', '--regid=65534', '--clear-groups'], args);
      expect((await asNobody(['init', ...FAST])).code).toBe(0);
      const r = await asNobody(['backup', src]);
      expect(r.stderr).toContain(`cairn: cannot read ${src}/secret: EACCES`);
      expect(r.stderr).toContain(`cairn: cannot read ${src}/locked: EACCES`);
      expect(r.code).toBe(3);
      expect(r.stdout).toMatch(/snapshot [0-9a-f]{8} saved/);
      const [snap] = await snapshots();
      expect(snap!.summary).toMatchObject({ errors: 2 });
      expect((await pathsIn(snap!)).filter((p) => p.startsWith(`${src}/`))).toEqual([`${src}/ok`]);
    },
  );

  it('stops cleanly on SIGINT with exit 130, and the next backup works', async () => {
    await init();
    const fh = await open(join(src, 'big'), 'w');
    for (let i = 0; i < 384; i++) await fh.write(randomBytes(1 << 20));
    await fh.close();
    const child = spawn(process.execPath, [CAIRN, 'backup', '--json', src], {
      env: { PATH: process.env.PATH ?? '', ...env },
    });
    let out = '';
    let err = '';
    child.stderr.on('data', (b: Buffer) => (err += b));
    const data = join(env.CAIRN_REPO!, 'data');
    const temps = async () =>
      (await readdir(data).catch(() => [])).filter((name) => name.startsWith('.tmp-'));
    const code = await new Promise<number | null>((resolve) => {
      let signalled = false;
      child.stdout.on('data', async (b: Buffer) => {
        out += b;
        // The backup is under way (a status line) and a pack is being streamed to disk.
        if (signalled || !out.includes('"status"') || (await temps()).length === 0) return;
        signalled = true;
        child.kill('SIGINT');
      });
      child.on('close', resolve);
    });
    expect(err).toMatch(/^cairn: backup interrupted/);
    expect(code).toBe(130);
    expect(out).not.toContain('"summary"');
    expect(await snapshots()).toEqual([]);
    // The pack being streamed to disk when the signal came was discarded, not left behind.
    expect(await temps()).toEqual([]);
    const again = await cairn(['backup', '--json', src], { env });
    expect(again.code).toBe(0);
    const summary = jsonLines(again).find((l) => l.message_type === 'summary')!;
    expect(summary.total_bytes_processed).toBe(384 << 20);
    // What the interrupted run stored was indexed, so it is not stored again.
    expect(summary.data_added as number).toBeLessThan(384 << 20);
  });
});

/** Runs the built CLI under setpriv (another user) with the test's environment. */
function runAs(setpriv: string[], args: string[]): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn('setpriv', [...setpriv, process.execPath, CAIRN, ...args], {
      env: { PATH: process.env.PATH ?? '', HOME: '/', ...env },
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', reject);
    child.on('close', (code) => {
      const stdoutBytes = Buffer.concat(out);
      resolve({
        code: code ?? -1,
        stdout: stdoutBytes.toString(),
        stderr: Buffer.concat(err).toString(),
        stdoutBytes,
      });
    });
    child.stdin.end();
  });
}
