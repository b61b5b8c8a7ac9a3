import { randomBytes } from 'node:crypto';
import {
  cp,
  mkdir,
  open,
  readdir,
  readFile,
  rm,
  stat,
  truncate,
  writeFile,
} from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LocalBackend } from '../../src/repo/backend/local.js';
import { Repository } from '../../src/repo/repository.js';
import { count, start, until } from '../crash/harness.js';
import { type TempDir, tempDir } from '../helpers.js';
import { sha256 } from '../ops/fixtures.js';
import { cairn, cliEnv, FAST_KDF_FLAGS, type RunResult } from './run.js';

const PASSWORD = 'secret';
/** These tests run a dozen commands each; on a loaded two-core runner that takes a while. */
const SLOW = 180_000;

let d: TempDir;
let env: Record<string, string>;
let src: string;
let repoDir: string;
beforeEach(async () => {
  d = await tempDir();
  src = join(d.path, 'src');
  repoDir = join(d.path, 'repo');
  await mkdir(src);
  env = cliEnv(d.path, PASSWORD);
  expect((await cairn(['init', ...FAST_KDF_FLAGS], { env })).code).toBe(0);
});
afterEach(() => d.cleanup());

async function ok(args: string[]): Promise<RunResult> {
  const r = await cairn(args, { env });
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  return r;
}

const json = (r: RunResult) =>
  r.stdout
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l));

async function backupId(...args: string[]): Promise<string> {
  return json(await ok(['--json', 'backup', src, ...args])).at(-1).snapshot_id;
}

async function sizeOf(dir: string): Promise<number> {
  let total = 0;
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) total += (await stat(join(e.parentPath, e.name))).size;
  }
  return total;
}

/** Every file below `dir`, relative path → SHA-256 (expect() compares large buffers slowly). */
async function tree(dir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    const path = join(e.parentPath, e.name);
    if (e.isFile()) out.set(path.slice(dir.length), sha256(await readFile(path)));
  }
  return out;
}

describe('forget and prune', () => {
  it(
    'keeps by policy with reasons, prunes, and what is left restores byte for byte',
    async () => {
      await writeFile(join(src, 'stays'), randomBytes(2 << 20));
      for (let i = 0; i < 2; i++) {
        await writeFile(join(src, 'changes'), randomBytes(3 << 20));
        await backupId();
      }
      const disk = join(d.path, 'disk.img');
      await writeFile(disk, randomBytes(4 << 20));
      await ok(['image', disk]);
      await writeFile(disk, randomBytes(1 << 20), { flag: 'r+' });
      await ok(['image', disk]);

      const dry = await ok(['forget', '--keep-last', '1', '--dry-run']);
      expect(dry.stdout).toMatch(
        /files, host .*:\nkeep 1 snapshots:[\s\S]*last snapshot[\s\S]*remove 1/,
      );
      expect(dry.stdout).toMatch(/image disk\.img:\nkeep 1 snapshots:[\s\S]*remove 1 snapshots:/);
      expect(dry.stdout).toMatch(/2 snapshots would be removed\n$/);

      const before = await sizeOf(join(repoDir, 'data'));
      const lines = json(
        await ok(['--json', 'forget', '--keep-last', '1', '--prune', '--max-unused', '0']),
      );
      const groups = lines[0] as {
        keep: unknown[];
        remove: unknown[];
        reasons: { matches: string[] }[];
      }[];
      expect(groups.map((g) => [g.keep.length, g.remove.length])).toEqual([
        [1, 1],
        [1, 1],
      ]);
      expect(groups[0]!.reasons[0]!.matches).toEqual(['last snapshot']);
      const summary = lines[1];
      expect(summary.bytes_freed).toBeGreaterThan(3 << 20);
      expect(await sizeOf(join(repoDir, 'data'))).toBe(before - summary.bytes_freed);

      const target = join(d.path, 'restored');
      await ok(['restore', 'latest', '--path', src, '--target', target]);
      expect(await tree(join(target, src))).toEqual(await tree(src));
      const image = await cairn(['cat', 'latest', '--name', 'disk.img'], { env });
      expect(image.code).toBe(0);
      expect(image.stdoutBytes.equals(await readFile(disk))).toBe(true);
      expect((await cairn(['check', '--read-data'], { env })).code).toBe(0);
    },
    SLOW,
  );

  it(
    'forgets named snapshots; stats REF counts what they reference once',
    async () => {
      await writeFile(join(src, 'a'), randomBytes(1 << 20));
      const first = await backupId();
      await writeFile(join(src, 'b'), randomBytes(1 << 20));
      const second = await backupId();
      const stats = json(await ok(['--json', 'stats', first, second]))[0];
      expect(stats).toMatchObject({ snapshots: 2, total_size: 3 << 20, unique_size: 2 << 20 });
      expect(stats.dedup_ratio).toBe(1.5);
      const r = await ok(['forget', first.slice(0, 8)]);
      expect(r.stdout).toBe(`removed snapshot ${first.slice(0, 8)}\n`);
      expect(json(await ok(['--json', 'snapshots']))[0].map((s: { id: string }) => s.id)).toEqual([
        second,
      ]);
      const usage = await cairn(['forget', second, '--keep-last', '1'], { env });
      expect(usage.code).toBe(1);
    },
    SLOW,
  );
});

describe('check and repair', () => {
  it(
    'names a corrupt pack and what it affects; a missing pack; repairs a truncated index',
    async () => {
      await writeFile(join(src, 'big'), randomBytes(3 << 20));
      const id = await backupId();
      const packs = (await readdir(join(repoDir, 'data'), { recursive: true })).filter((p) =>
        /\/[0-9a-f]{64}$/.test(p),
      );
      const sizes = await Promise.all(packs.map((p) => stat(join(repoDir, 'data', p))));
      const pack = packs[sizes.findIndex((s) => s.size === Math.max(...sizes.map((x) => x.size)))]!;
      const path = join(repoDir, 'data', pack);
      const saved = await readFile(path);
      const fh = await open(path, 'r+');
      await fh.write(Buffer.from([saved[100]! ^ 1]), 0, 1, 100);
      await fh.close();

      expect((await cairn(['check'], { env })).code).toBe(0);
      const bad = await cairn(['check', '--read-data'], { env });
      expect(bad.code).toBe(1);
      expect(bad.stderr).toMatch(/^cairn: check found 1 problem/);
      expect(bad.stdout).toContain(`error: data/${pack}`);
      expect(bad.stdout).toContain(`snapshot ${id.slice(0, 8)}:`);
      expect(bad.stdout).toContain(join(src, 'big'));

      await rm(path);
      const missing = await cairn(['check'], { env });
      expect(missing.code).toBe(1);
      expect(missing.stdout).toMatch(/pack is missing[\s\S]*snapshot [0-9a-f]{8}:/);
      await writeFile(path, saved);

      const [segment] = await readdir(join(repoDir, 'index'));
      await truncate(join(repoDir, 'index', segment!), 100);
      expect((await cairn(['check'], { env })).code).toBe(1);
      const repaired = await ok(['repair', 'index']);
      expect(repaired.stdout).toMatch(/^read \d+ packs holding \d+ blobs/);
      expect((await ok(['check', '--read-data'])).stdout).toMatch(/no errors were found/);
    },
    SLOW,
  );
});

describe('locks', () => {
  it(
    'prune is refused while an image is taken, and with --lock-wait waits for it',
    async () => {
      const image = start(['image', '-', '--name', 'held'], env);
      image.child.stdin!.write(randomBytes(1 << 20));
      await until(async () => (await count(join(repoDir, 'locks'))) === 1);
      const refused = await cairn(['prune'], { env });
      expect(refused.stderr).toMatch(
        new RegExp(
          `^cairn: repository is locked by .*@${hostname()} PID ${image.child.pid} .*"image"`,
        ),
      );
      const timedOut = await cairn(['--lock-wait', '1s', 'prune'], { env });
      expect(timedOut.stderr).toMatch(/waiting up to 1 s\n[\s\S]*cairn: repository is locked/);
      expect([refused.code, timedOut.code]).toEqual([11, 11]);

      const waiting = start(['--lock-wait', '5m', 'prune'], env);
      await until(() => waiting.stderr().includes('waiting up to 300 s'));
      const order: string[] = [];
      const finished = (name: string) => (r: RunResult) => {
        order.push(name);
        return r;
      };
      const imageDone = image.done.then(finished('image'));
      const pruneDone = waiting.done.then(finished('prune'));
      image.child.stdin!.end(randomBytes(1 << 20));
      expect((await imageDone).code).toBe(0);
      expect((await pruneDone).code).toBe(0);
      expect(order).toEqual(['image', 'prune']);
    },
    SLOW,
  );

  it(
    'ignores the locks of dead processes and of hosts silent for 30 minutes',
    async () => {
      const dead = start(['--version'], env);
      await dead.done;
      const repo = await Repository.open(new LocalBackend(repoDir), {
        cacheDir: join(d.path, 'lib-cache'),
        password: async () => PASSWORD,
      });
      const write = async (name: string, host: string, pid: number, ageMin: number) => {
        const time = new Date(Date.now() - ageMin * 60_000).toISOString();
        const info = { hostname: host, pid, username: 'u', command: 'backup', exclusive: true };
        const doc = { ...info, time, refreshed: time };
        await repo.backend.write(
          `locks/${name}`,
          repo.sealer.seal(Buffer.from(JSON.stringify(doc))),
        );
      };
      await write('a'.repeat(32), hostname(), dead.child.pid!, 1);
      await write('b'.repeat(32), 'elsewhere', 1, 31);
      await writeFile(join(src, 'f'), 'x');
      await ok(['backup', src]);
      await ok(['prune']);
      await write('c'.repeat(32), 'elsewhere', 1, 1);
      const locked = await cairn(['backup', src], { env });
      expect(locked.code).toBe(11);
      expect(locked.stderr).toMatch(/locked by u@elsewhere PID 1 \(exclusive lock for "backup"/);
      await repo.close();
    },
    SLOW,
  );

  it(
    'runs two backups of one repository at the same time',
    async () => {
      const other = join(d.path, 'other');
      await mkdir(other);
      await writeFile(join(src, 'one'), randomBytes(8 << 20));
      await writeFile(join(other, 'two'), randomBytes(8 << 20));
      await cp(join(src, 'one'), join(other, 'shared'));
      const [a, b] = await Promise.all([
        cairn(['backup', src], { env }),
        cairn(['backup', other], { env }),
      ]);
      expect([a.code, b.code, a.stderr, b.stderr]).toEqual([0, 0, '', '']);
      expect(json(await ok(['--json', 'snapshots']))[0]).toHaveLength(2);
      await ok(['check', '--read-data']);
    },
    SLOW,
  );
});
