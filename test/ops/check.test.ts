import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, open, readdir, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findEntry } from '../../src/files/browse.js';
import { check } from '../../src/ops/check.js';
import { repairIndex } from '../../src/ops/repair.js';
import type { BlobLocation } from '../../src/repo/blob.js';
import { packName } from '../../src/repo/pack.js';
import type { Repository } from '../../src/repo/repository.js';
import type { StoredSnapshot } from '../../src/repo/snapshot.js';
import { type TempDir, tempDir } from '../helpers.js';
import {
  backupDir,
  backupImage,
  copyRepo,
  initRepo,
  openRepo,
  randomFiles,
  writeStrayPack,
  writeTree,
} from './fixtures.js';

let d: TempDir;
let pristine: string;
let src: string;
let n = 0;

beforeAll(async () => {
  d = await tempDir();
  pristine = join(d.path, 'pristine');
  await initRepo(pristine);
  src = join(d.path, 'src');
  await writeTree(src, randomFiles(['a', 'b', 'sub/c'], 96 << 10));
  const img = join(d.path, 'disk.img');
  await writeFile(img, randomBytes(256 << 10));
  const repo = await openRepo(pristine, join(d.path, 'c'));
  await backupDir(repo, src);
  await backupImage(repo, img, 'disk');
  await repo.close();
});
afterAll(() => d.cleanup());

async function copy(): Promise<{ dir: string; repo: Repository }> {
  const dir = join(d.path, `copy-${n++}`);
  await copyRepo(pristine, dir);
  return { dir, repo: await openRepo(dir, join(d.path, `cache-${n++}`)) };
}

async function snapshot(repo: Repository, kind: 'files' | 'image'): Promise<StoredSnapshot> {
  return (await repo.listSnapshots()).find((s) => s.kind === kind)!;
}

/** Where the first chunk of file `rel` (under the source directory) is stored. */
async function chunkOf(repo: Repository, rel: string): Promise<BlobLocation> {
  const store = await repo.blobs();
  const snap = await snapshot(repo, 'files');
  const found = await findEntry(store, Buffer.from(snap.root, 'hex'), join(src, rel));
  return (await store.locate(found!.entry!.content![0]!.id!))!;
}

async function flipByte(dir: string, loc: BlobLocation, at = 20): Promise<void> {
  const fh = await open(join(dir, packName(loc.pack)), 'r+');
  const b = Buffer.alloc(1);
  await fh.read(b, 0, 1, loc.offset + at);
  b[0]! ^= 0xff;
  await fh.write(b, 0, 1, loc.offset + at);
  await fh.close();
}

const paths = (r: Awaited<ReturnType<typeof check>>) =>
  r.problems.flatMap((p) => p.affected.flatMap((a) => a.paths));

describe('check', () => {
  it('passes a healthy repository and reads every pack with readData', async () => {
    const { repo } = await copy();
    // What a check killed midway leaves in the cache is removed by the next one.
    const dead = spawnSync(process.execPath, ['-e', '']).pid;
    const left = join(repo.cacheDir, `scratch-${dead}-0`);
    await mkdir(left, { recursive: true });
    const r = await check(repo, { readData: 1 });
    await expect(stat(left)).rejects.toThrow(/ENOENT/);
    expect(r).toMatchObject({ ok: true, problems: [], notes: [], snapshots: 2 });
    expect(r.packsRead).toBe(r.packs);
    const half = await check(repo, { readData: 0.5 });
    expect(half.packsRead).toBe(Math.ceil(r.packs / 2));
    await repo.close();
  });

  it('finds a flipped data byte only when reading data, naming pack and file', async () => {
    const { dir, repo } = await copy();
    const loc = await chunkOf(repo, 'sub/c');
    await flipByte(dir, loc);
    expect((await check(repo)).ok).toBe(true);
    const r = await check(repo, { readData: 1 });
    expect(r.ok).toBe(false);
    const p = r.problems.find((x) => x.object === packName(loc.pack))!;
    expect(p.message).toMatch(/damaged/);
    const files = await snapshot(repo, 'files');
    const hit = p.affected.find((a) => a.snapshot === files.id)!;
    expect(hit.paths).toContain(join(src, 'sub/c'));
    await repo.close();
  });

  it('finds a damaged tree without reading data, and a missing pack, naming files', async () => {
    const { dir, repo } = await copy();
    const files = await snapshot(repo, 'files');
    const root = (await (await repo.blobs()).locate(Buffer.from(files.root, 'hex')))!;
    await flipByte(dir, root, 3);
    const r = await check(repo);
    expect(r.problems.map((p) => p.object)).toContain(packName(root.pack));
    expect(r.problems.flatMap((p) => p.affected.map((a) => a.snapshot))).toContain(files.id);
    expect(paths(r)).toContain('/');

    const { dir: dir2, repo: repo2 } = await copy();
    const image = await snapshot(repo2, 'image');
    const loc = await chunkOf(repo2, 'a');
    await rm(join(dir2, packName(loc.pack)));
    const missing = await check(repo2);
    const p = missing.problems.find((x) => x.object === packName(loc.pack))!;
    expect(p.message).toMatch(/missing/);
    expect(p.affected.map((a) => a.snapshot)).toContain(files.id);
    expect(p.affected.find((a) => a.snapshot === files.id)!.paths).toContain(join(src, 'a'));
    expect(p.affected.map((a) => a.snapshot)).not.toContain(image.id);
    await repo.close();
    await repo2.close();
  });

  it('reports a truncated index segment, which repair index fixes', async () => {
    const { dir, repo } = await copy();
    const segments = await readdir(join(dir, 'index'));
    for (const s of segments) await truncate(join(dir, 'index', s), 10);
    const r = await check(repo);
    expect(r.problems.filter((p) => p.kind === 'index').length).toBe(segments.length + 1);
    expect(r.problems.find((p) => p.object === 'index')!.affected.length).toBe(2);
    const repaired = await repairIndex(repo);
    expect(repaired.damaged).toEqual([]);
    expect(repaired.segmentsRemoved).toBe(segments.length);
    expect((await check(repo, { readData: 1 })).problems).toEqual([]);
    await repo.close();
  });

  it('reports damaged snapshot and key files; notes packs no index lists', async () => {
    const { dir, repo } = await copy();
    const [snapFile] = await readdir(join(dir, 'snapshots'));
    await writeFile(join(dir, 'snapshots', snapFile!), randomBytes(64));
    const [keyFile] = await readdir(join(dir, 'keys'));
    await writeFile(join(dir, 'keys', keyFile!), '{}');
    await writeStrayPack(repo);
    const r = await check(repo);
    expect(r.problems.map((p) => [p.kind, p.object]).sort()).toEqual([
      ['key', `keys/${keyFile}`],
      ['snapshot', `snapshots/${snapFile}`],
    ]);
    expect(r.notes.join()).toMatch(/1 pack\(s\) not in the index/);
    await repo.close();
  });
});
