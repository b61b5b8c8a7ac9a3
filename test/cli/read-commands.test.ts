import { randomBytes } from 'node:crypto';
import { lstat, mkdir, open, readFile, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { findEntry, rootTreeId } from '../../src/files/browse.js';
import { LocalBackend } from '../../src/repo/backend/local.js';
import { packName } from '../../src/repo/pack.js';
import { Repository } from '../../src/repo/repository.js';
import type { StoredSnapshot } from '../../src/repo/snapshot.js';
import { describeTree, snapshotDir } from '../files/build-snapshot.js';
import { type TempDir, tempDir } from '../helpers.js';
import { cairn, cliEnv, FAST_KDF_FLAGS } from './run.js';

const FAST = FAST_KDF_FLAGS;
const PASSWORD = 'secret';
const B = (s: string) => Buffer.from(s, 'latin1');

let d: TempDir;
let env: Record<string, string>;
let src: string;
beforeEach(async () => {
  d = await tempDir();
  src = join(d.path, 'src');
  await mkdir(src);
  env = cliEnv(d.path, PASSWORD);
  expect((await cairn(['init', ...FAST], { env })).code).toBe(0);
});
afterEach(() => d.cleanup());

/**
 * A snapshot made in-process by the fixture builder (exact holes, any names). The CLI runs
 * with its own cache directory, so the two never share a LevelDB.
 */
async function librarySnapshot(dir: string, opts = {}): Promise<StoredSnapshot> {
  const repo = await Repository.open(new LocalBackend(env.CAIRN_REPO!), {
    cacheDir: join(d.path, 'lib-cache'),
    password: async () => PASSWORD,
  });
  try {
    return await snapshotDir(repo, dir, { chunkSize: 64 << 10, ...opts });
  } finally {
    await repo.close();
  }
}

async function ok(args: string[]) {
  const r = await cairn(args, { env });
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  return r;
}

describe('backup → snapshots → ls → cat → restore', () => {
  it('round-trips a tree through the CLI', async () => {
    await mkdir(join(src, 'sub'));
    await writeFile(join(src, 'sub', 'data.bin'), randomBytes(3 << 20));
    await writeFile(join(src, 'hello.txt'), 'hello\n');
    await writeFile(B(`${src}/caf\xe9`), 'latin1');
    await symlink('hello.txt', join(src, 'link'));
    expect((await cairn(['backup', src, '--tag', 'first'], { env })).code).toBe(0);

    const list = JSON.parse((await ok(['snapshots', '--json'])).stdout);
    expect(list).toHaveLength(1);
    expect(list[0]).toMatchObject({ kind: 'files', paths: [src], tags: ['first'], parent: null });
    expect(list[0].short_id).toBe(list[0].id.slice(0, 8));
    expect(list[0].size).toBe((3 << 20) + 6 + 6);
    for (const k of ['time', 'hostname', 'username']) expect(list[0]).toHaveProperty(k);
    const text = (await ok(['snapshots'])).stdout.trim().split('\n');
    expect(text.at(-1)).toMatch(
      new RegExp(`^${list[0].short_id}  .*files  first  ${src}  3\\.00 MiB$`),
    );

    const ls = (await ok(['ls', 'latest', src])).stdout.split('\n').filter(Boolean);
    expect(ls).toEqual([
      src,
      `${src}/caf\\xe9`,
      `${src}/hello.txt`,
      `${src}/link`,
      `${src}/sub`,
      `${src}/sub/data.bin`,
    ]);
    const long = (await ok(['ls', '-l', list[0].short_id, `${src}/link`])).stdout;
    expect(long).toMatch(/^lrwxrwxrwx .* \d{4}-\d\d-\d\d \d\d:\d\d:\d\d .*\/link -> hello\.txt\n$/);

    const cat = await ok(['cat', 'latest', `${src}/sub/data.bin`]);
    expect(cat.stdoutBytes.equals(await readFile(join(src, 'sub', 'data.bin')))).toBe(true);

    const target = join(d.path, 'target');
    const restored = await ok(['restore', 'latest', '--target', target, '--verify', '--json']);
    const summary = JSON.parse(restored.stdout.trim().split('\n').at(-1)!);
    expect(summary).toMatchObject({
      message_type: 'summary',
      files_restored: 4,
      bytes_restored: (3 << 20) + 12,
      verified: true,
    });
    expect(summary.dirs_restored).toBeGreaterThanOrEqual(3);
    expect(summary).toHaveProperty('total_duration');
    expect(await describeTree(join(target, src))).toEqual(await describeTree(src));
  });
});

describe('read commands on a fixture snapshot', () => {
  let snap: StoredSnapshot;
  const holey = Buffer.alloc(5 << 20);
  beforeEach(async () => {
    holey.fill(1, 0, 100).fill(2, 4 << 20, (4 << 20) + 100);
    const fh = await open(join(src, 'holey'), 'w');
    await fh.write(holey, 0, holey.length, 0);
    await fh.close();
    await writeFile(B(`${src}/bad\xffname`), 'x');
    await writeFile(join(src, 'new\nline'), 'y');
    await mkdir(join(src, 'dir'));
    snap = await librarySnapshot(src, { tags: ['fixture'], hostname: 'fixturehost' });
  });

  it('ls --json gives SPEC fields, escapes and path_bytes', async () => {
    const lines = (await ok(['ls', '--json', snap.id, src])).stdout.trim().split('\n');
    const entries = lines.map((l) => JSON.parse(l));
    const bad = entries.find((e) => e.path === `${src}/bad\\xffname`);
    expect(Buffer.from(bad.path_bytes, 'base64')).toEqual(B(`${src}/bad\xffname`));
    const st = await lstat(B(`${src}/bad\xffname`));
    expect(bad).toMatchObject({ type: 'file', size: 1, mode: st.mode & 0o7777, uid: st.uid });
    expect(bad.mtime).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$/);
    expect(entries.find((e) => e.path === `${src}/new\nline`)).not.toHaveProperty('path_bytes');
    expect(entries.find((e) => e.path === `${src}/dir`)).toMatchObject({ type: 'dir' });
    const text = (await ok(['ls', snap.id.slice(0, 6), src])).stdout;
    expect(text).toContain(`${src}/new\\nline\n`);
    expect(text).toContain(`${src}/bad\\xffname\n`);
  });

  it('cat streams a file with holes exactly, and finds escaped names', async () => {
    const r = await ok(['cat', 'latest', `${src}/holey`]);
    expect(r.stdoutBytes.length).toBe(holey.length);
    expect(r.stdoutBytes.equals(holey)).toBe(true);
    expect((await ok(['cat', 'latest', `${src}/bad\\xffname`])).stdout).toBe('x');
  });

  it('fails clearly on directories, missing paths and unknown references', async () => {
    const dir = await cairn(['cat', 'latest', `${src}/dir`], { env });
    expect([dir.code, dir.stderr]).toEqual([
      1,
      `cairn: ${src}/dir is a directory in snapshot ${snap.id.slice(0, 8)}\n`,
    ]);
    const missing = await cairn(['ls', 'latest', `${src}/nope`], { env });
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/nope not found in snapshot/);
    const noPath = await cairn(['cat', 'latest'], { env });
    expect(noPath.code).toBe(1);
    const unknown = await cairn(['ls', 'abcd'], { env });
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toMatch(/^cairn: no snapshot with ID abcd/);
    const bad = await cairn(['ls', 'xyz'], { env });
    expect(bad.stderr).toMatch(/^cairn: invalid snapshot reference/);
    const filtered = await cairn(['ls', 'latest', '--tag', 'other'], { env });
    expect(filtered.code).toBe(1);
    expect(filtered.stderr).toMatch(/no snapshot matches/);
  });

  it('filters snapshots by host and tag', async () => {
    const other = join(d.path, 'other');
    await mkdir(other);
    await librarySnapshot(other, { tags: ['x'], hostname: 'elsewhere' });
    const byHost = JSON.parse((await ok(['snapshots', '--json', '--host', 'fixturehost'])).stdout);
    expect(byHost.map((s: { id: string }) => s.id)).toEqual([snap.id]);
    const byTag = JSON.parse((await ok(['snapshots', '--json', '--tag', 'x'])).stdout);
    expect(byTag.map((s: { paths: string[] }) => s.paths)).toEqual([[other]]);
    const byPath = (await ok(['ls', 'latest', '--path', src, '/'])).stdout;
    expect(byPath).toContain(`${src}/holey\n`);
  });

  it('restore --include restores the subtree and its parents only', async () => {
    const target = join(d.path, 'target');
    await ok(['restore', 'latest', '-t', target, '--include', `${src}/holey`, '-q']);
    expect(Object.keys(await describeTree(join(target, src)))).toEqual(['holey']);
    expect((await readFile(join(target, src, 'holey'))).equals(holey)).toBe(true);
  });

  it('restore exits 1 naming the pack when a chunk is damaged, restoring the rest', async () => {
    const repo = await Repository.open(new LocalBackend(env.CAIRN_REPO!), {
      cacheDir: join(d.path, 'lib-cache'),
      password: async () => PASSWORD,
    });
    const store = await repo.blobs();
    const entry = (await findEntry(store, rootTreeId(snap), `${src}/holey`))!.entry!;
    const loc = (await store.locate(entry.content![0]!.id!))!;
    await repo.close();
    const packFile = join(env.CAIRN_REPO!, packName(loc.pack));
    const bytes = await readFile(packFile);
    bytes[loc.offset + 3]! ^= 1;
    await writeFile(packFile, bytes);
    const target = join(d.path, 'target');
    const r = await cairn(['restore', 'latest', '--target', target, '--verify'], { env });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`cairn: ${src}/holey: pack ${loc.pack.toString('hex').slice(0, 8)}`);
    expect(r.stderr).toMatch(/restore finished with 1 error/);
    expect(await readFile(join(target, src, 'new\nline'), 'utf8')).toBe('y');
  });
});

describe('ls of an image snapshot', () => {
  it('describes its name, size and partitions', async () => {
    const img = join(d.path, 'disk.img');
    await writeFile(img, randomBytes(300_000));
    expect((await cairn(['image', img, '-q'], { env })).code).toBe(0);
    const json = JSON.parse((await ok(['ls', '--json', 'latest', '--name', 'disk.img'])).stdout);
    expect(json).toEqual({ type: 'image', name: 'disk.img', size: 300_000, partitions: [] });
    const text = (await ok(['ls', 'latest'])).stdout;
    expect(text).toBe('image disk.img, 293 KiB (300000 bytes)\n');
  });
});
