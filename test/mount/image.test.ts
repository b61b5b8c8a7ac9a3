import { randomBytes } from 'node:crypto';
import { mkdir, open, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { shortHex } from '../../src/errors.js';
import { cairn } from '../cli/run.js';
import { type TempDir, tempDir } from '../helpers.js';
import { hasCommand, sh, withMount } from '../image/util.js';
import { detachAllUnder, MountProcess, noFuse, titled } from './util.js';

const skip =
  noFuse ??
  (['mkfs.ext4', 'sfdisk'].find((c) => !hasCommand(c)) &&
    'mkfs.ext4 (e2fsprogs) and sfdisk (fdisk) are needed');

let d: TempDir;
let env: Record<string, string>;
let mount: MountProcess;

/** A directory of random files, and what is in it. */
async function files(dir: string, sizes: number[]): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  await mkdir(join(dir, 'sub'), { recursive: true });
  for (const [i, size] of sizes.entries()) {
    const rel = i % 2 ? `sub/f${i}.bin` : `f${i}.bin`;
    const data = randomBytes(size);
    await writeFile(join(dir, rel), data);
    out.set(rel, data);
  }
  return out;
}

/** An ext4 filesystem image of `bytes` holding the files of `dir` (mke2fs -d: no mount). */
async function ext4(path: string, bytes: number, dir: string): Promise<void> {
  const fh = await open(path, 'w');
  await fh.truncate(bytes);
  await fh.close();
  sh('mkfs.ext4', ['-q', '-F', '-d', dir, path]);
}

async function expectFiles(dir: string, want: Map<string, Buffer>): Promise<void> {
  for (const [rel, data] of want) {
    expect((await readFile(join(dir, rel))).equals(data), rel).toBe(true);
  }
}

async function image(args: string[]): Promise<string> {
  const r = await cairn(['image', '--json', ...args], { env });
  expect(r.code, r.stderr).toBe(0);
  return (JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { snapshot_id: string }).snapshot_id;
}

let sysFiles: Map<string, Buffer>;
let sysId: string;
let diskId: string;
let partFiles: Map<string, Buffer>[];
let partitions: { start: number; size: number }[];
let diskPath: string;

beforeAll(async () => {
  if (skip) return;
  d = await tempDir();
  env = { CAIRN_REPO: join(d.path, 'repo'), CAIRN_CACHE_DIR: join(d.path, 'cache') };
  const init = ['init', '--no-encryption', '--chunk-min', '16K', '--chunk-avg', '64K'];
  expect((await cairn(init, { env })).code).toBe(0);

  sysFiles = await files(join(d.path, 'sys'), [3 << 20, 700_001, 4096, 1, 0]);
  await ext4(join(d.path, 'sys.ext4'), 24 << 20, join(d.path, 'sys'));
  sysId = await image([join(d.path, 'sys.ext4'), '--name', 'sys']);

  diskPath = join(d.path, 'disk.raw');
  const fh = await open(diskPath, 'w');
  await fh.truncate(40 << 20);
  await fh.close();
  sh('sfdisk', ['-q', diskPath], 'label: gpt\n,12M\n,\n');
  const table = JSON.parse(sh('sfdisk', ['--json', diskPath])) as {
    partitiontable: { partitions: { start: number; size: number }[] };
  };
  partitions = table.partitiontable.partitions.map((p) => ({
    start: p.start * 512,
    size: p.size * 512,
  }));
  partFiles = [];
  const disk = await open(diskPath, 'r+');
  for (const [i, p] of partitions.entries()) {
    const dir = join(d.path, `part${i + 1}`);
    partFiles.push(await files(dir, [1 << 20, 300_000 + i]));
    await ext4(`${dir}.ext4`, p.size, dir);
    await disk.write(await readFile(`${dir}.ext4`), 0, p.size, p.start);
  }
  await disk.close();
  diskId = await image([diskPath, '--name', 'disk']);

  await mkdir(join(d.path, 'mnt'));
  mount = await MountProcess.start(env, join(d.path, 'mnt'));
});

afterAll(async () => {
  if (skip) return;
  await MountProcess.stopAll();
  await detachAllUnder(d.path);
  await d.cleanup();
});

describe.skipIf(skip)(titled('cairn mount: image snapshots', skip), () => {
  it('shows an image as <name>.img of its exact size, loop-mountable read-only', async () => {
    const dir = join(mount.dir, 'ids', shortHex(sysId));
    expect((await readdir(dir)).sort()).toEqual(['sys.files', 'sys.img']);
    const img = join(dir, 'sys.img');
    expect((await stat(img)).size).toBe(24 << 20);
    expect((await readFile(img)).equals(await readFile(join(d.path, 'sys.ext4')))).toBe(true);
    await withMount(img, { readOnly: true }, (inside) => expectFiles(inside, sysFiles));
  });

  it("shows a GPT disk's partitions as <name>-part<N>.img, each loop-mountable", async () => {
    const dir = join(mount.dir, 'ids', shortHex(diskId));
    expect((await readdir(dir)).sort()).toEqual([
      'disk-part1.img',
      'disk-part2.img',
      'disk.files',
      'disk.img',
    ]);
    expect((await readFile(join(dir, 'disk.img'))).equals(await readFile(diskPath))).toBe(true);
    for (const [i, p] of partitions.entries()) {
      const part = join(dir, `disk-part${i + 1}.img`);
      expect((await stat(part)).size).toBe(p.size);
      await withMount(part, { readOnly: true }, (inside) => expectFiles(inside, partFiles[i]!));
    }
  });
});
