import { randomBytes } from 'node:crypto';
import {
  chmod,
  chown,
  link,
  mkdir,
  open,
  readdir,
  readFile,
  readlink,
  rename,
  rm,
  symlink,
  truncate,
  unlink,
  utimes,
  writeFile,
} from 'node:fs/promises';
import { join } from 'node:path';
import { setAttribute } from 'fs-xattr';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { shortHex } from '../../src/errors.js';
import { mountAt } from '../../src/mount/index.js';
import { cairn } from '../cli/run.js';
import { type TempDir, tempDir } from '../helpers.js';
import { sh } from '../image/util.js';
import {
  backupJson,
  type Captured,
  captureTree,
  detachAllUnder,
  MountProcess,
  noFuse,
  titled,
  waitFor,
} from './util.js';

const NAME = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ_[0-9a-f]{8}$/;
/** A name that is not UTF-8: "caf" and Latin-1 é. */
const ODD = Buffer.from([0x63, 0x61, 0x66, 0xe9]);

let d: TempDir;
let env: Record<string, string>;
let src: string;
let mount: MountProcess;
let first: { id: string; tree: Map<string, Captured> };
let second: { id: string; tree: Map<string, Captured> };

/** A tree with every kind of entry and metadata the mount must show as it was. */
async function fill(dir: string): Promise<void> {
  await mkdir(join(dir, 'sub/deep'), { recursive: true });
  const big = Buffer.concat([randomBytes(700_000), Buffer.alloc(300_000), randomBytes(500_001)]);
  await writeFile(join(dir, 'big.bin'), big);
  await writeFile(join(dir, 'empty'), '');
  await writeFile(join(dir, 'sub/deep/a.txt'), 'alpha\n');
  await link(join(dir, 'sub/deep/a.txt'), join(dir, 'sub/hard'));
  await symlink('sub/deep/a.txt', join(dir, 'link'));
  await symlink('/nowhere/at/all', join(dir, 'dangling'));
  await writeFile(join(dir, 'owned'), 'someone else');
  await chown(join(dir, 'owned'), 1234, 5678);
  await chmod(join(dir, 'owned'), 0o4750);
  await setAttribute(join(dir, 'big.bin'), 'user.comment', Buffer.from('kept'));
  sh('mkfifo', [join(dir, 'fifo')]);
  await mkdir(join(dir, 'odd'));
  await writeFile(Buffer.from(`${join(dir, 'odd')}/${ODD.toString('latin1')}`, 'latin1'), 'odd');
  await utimes(join(dir, 'sub/deep/a.txt'), 1_000_000_000, 981_173_106.5);
}

/** The captured tree without `odd/`, whose name Node cannot give back as a string. */
function capture(dir: string): Promise<Map<string, Captured>> {
  return captureTree(dir, ['odd']);
}

function snapDir(id: string, under = 'ids'): string {
  return join(mount.dir, under, shortHex(id), src);
}

beforeAll(async () => {
  if (noFuse) return;
  d = await tempDir();
  src = join(d.path, 'src');
  env = {
    CAIRN_REPO: join(d.path, 'repo'),
    CAIRN_PASSWORD: 'mount test',
    CAIRN_CACHE_DIR: join(d.path, 'cache'),
  };
  const init = await cairn(
    ['init', '--kdf-memory', '1', '--kdf-time', '1', '--chunk-min', '2K', '--chunk-avg', '8K'],
    { env },
  );
  expect(init.code, init.stderr).toBe(0);
  await fill(src);
  first = {
    id: await backupJson(env, [src, '--tag', 'one', '--host', 'h1']),
    tree: await capture(src),
  };
  await writeFile(join(src, 'big.bin'), randomBytes(1_200_000));
  await writeFile(join(src, 'sub/new.txt'), 'new in the second snapshot');
  await rm(join(src, 'empty'));
  second = {
    id: await backupJson(env, [src, '--tag', 'two', '--host', 'h2']),
    tree: await capture(src),
  };
  await mkdir(join(d.path, 'mnt'));
  mount = await MountProcess.start(env, join(d.path, 'mnt'));
});

afterAll(async () => {
  if (noFuse) return;
  await MountProcess.stopAll();
  await detachAllUnder(d.path);
  await d.cleanup();
});

describe.skipIf(noFuse)(titled('cairn mount: file snapshots'), () => {
  it('lists snapshots by ID, time, host and tag, with latest as a symlink', async () => {
    const ids = await readdir(join(mount.dir, 'ids'));
    expect(ids.sort()).toEqual([shortHex(first.id), shortHex(second.id)].sort());
    const byTime = (await readdir(join(mount.dir, 'snapshots'))).sort();
    expect(byTime).toHaveLength(3);
    expect(byTime.filter((n) => n !== 'latest').every((n) => NAME.test(n))).toBe(true);
    const newest = await readlink(join(mount.dir, 'snapshots/latest'));
    expect(newest).toBe(byTime.find((n) => n.endsWith(shortHex(second.id))));
    expect(await readdir(join(mount.dir, 'hosts'))).toEqual(expect.arrayContaining(['h1', 'h2']));
    const tagged = await readdir(join(mount.dir, 'tags/one'));
    expect(tagged.sort()).toEqual([expect.stringMatching(shortHex(first.id)), 'latest']);
    expect(await readFile(join(mount.dir, 'snapshots/latest', src, 'sub/new.txt'), 'utf8')).toBe(
      'new in the second snapshot',
    );
  });

  it('shows both snapshots byte for byte and stat field by stat field', async () => {
    for (const snap of [first, second]) {
      const shown = await capture(snapDir(snap.id));
      expect([...shown.keys()]).toEqual([...snap.tree.keys()]);
      for (const [rel, { content, ...meta }] of snap.tree) {
        // Contents apart: deep equality on a Buffer goes byte by byte through the matcher.
        const { content: got, ...gotMeta } = shown.get(rel)!;
        expect(gotMeta, rel).toEqual(meta);
        expect(got === content || got?.equals(content!), rel).toBe(true);
      }
    }
    // Spot checks of what the comparison covers.
    const a = first.tree.get('sub/deep/a.txt')!;
    expect(a).toMatchObject({ nlink: 2, mtimeMs: 981_173_106_500n });
    expect(first.tree.get('owned')).toMatchObject({ uid: 1234, gid: 5678, mode: 0o4750 });
    expect(first.tree.get('link')?.target).toBe('sub/deep/a.txt');
    expect(first.tree.get('big.bin')?.xattrs).toEqual({
      'user.comment': Buffer.from('kept').toString('hex'),
    });
  });

  it('reads at any offset', async () => {
    const want = await readFile(join(src, 'big.bin'));
    const fh = await open(join(snapDir(second.id), 'big.bin'), 'r');
    try {
      for (let i = 0; i < 200; i++) {
        const offset = Math.floor(Math.random() * want.length);
        const length = 1 + Math.floor(Math.random() * 100_000);
        const buf = Buffer.alloc(length);
        const { bytesRead } = await fh.read(buf, 0, length, offset);
        expect(buf.subarray(0, bytesRead).equals(want.subarray(offset, offset + length))).toBe(
          true,
        );
      }
    } finally {
      await fh.close();
    }
  });

  it("raises the kernel's read-ahead for the mount from 128 KiB to 1 MiB", async () => {
    const { device } = (await mountAt(mount.dir))!;
    const kb = () => readFile(`/sys/class/bdi/${device}/read_ahead_kb`, 'utf8');
    // Raised once the kernel has the mount's INIT answer, maybe after the listing works.
    await waitFor(async () => (await kb()).trim() === '1024', 'read_ahead_kb 1024', 5000);
  });

  it('shows a name that is not UTF-8 escaped as `cairn ls` prints it', async () => {
    const dir = join(snapDir(first.id), 'odd');
    expect(await readdir(dir)).toEqual(['caf\\xe9']);
    expect(await readFile(join(dir, 'caf\\xe9'), 'utf8')).toBe('odd');
  });

  it('fails every write with EROFS', async () => {
    const dir = snapDir(first.id);
    const file = join(dir, 'sub/deep/a.txt');
    const attempts: [string, () => Promise<unknown>][] = [
      ['create', () => writeFile(join(dir, 'created'), 'x')],
      ['open for writing', () => open(file, 'r+')],
      ['truncate', () => truncate(file, 0)],
      ['mkdir', () => mkdir(join(dir, 'newdir'))],
      ['mkdir at the top', () => mkdir(join(mount.dir, 'snapshots/mine'))],
      ['unlink', () => unlink(file)],
      ['rename', () => rename(file, join(dir, 'moved'))],
      ['link', () => link(file, join(dir, 'linked'))],
      ['symlink', () => symlink('x', join(dir, 'sym'))],
      ['chmod', () => chmod(file, 0o600)],
      ['chown', () => chown(file, 1, 1)],
      ['utimes', () => utimes(file, 1, 1)],
      ['setxattr', () => setAttribute(file, 'user.x', Buffer.from('y'))],
    ];
    for (const [what, attempt] of attempts) {
      await expect(attempt(), what).rejects.toMatchObject({ code: 'EROFS' });
    }
    expect(await readFile(file, 'utf8')).toBe('alpha\n');
  });

  it('clears a mount point left by a killed mount, and exits 0 when unmounted from outside', async () => {
    const dir = join(d.path, 'mnt-stale');
    await mkdir(dir);
    const killed = await MountProcess.start(env, dir);
    await killed.stop('SIGKILL');
    await expect(readdir(dir)).rejects.toMatchObject({ code: 'ENOTCONN' });
    const again = await MountProcess.start(env, dir);
    await waitFor(
      () => /left mounted by a process that has ended; unmounting/.test(again.stderr),
      'the notice',
    );
    expect(await readdir(join(dir, 'ids'))).toHaveLength(2);
    sh('fusermount', ['-u', dir]);
    expect(await again.exited).toBe(0);
    expect(await readdir(dir)).toEqual([]);
  });

  it('unmounts cleanly on SIGTERM and SIGINT, exiting 130, lock released', async () => {
    const locks = await readdir(join(env.CAIRN_REPO!, 'locks'));
    for (const signal of ['SIGTERM', 'SIGINT'] as const) {
      const dir = join(d.path, `mnt-${signal}`);
      await mkdir(dir);
      const m = await MountProcess.start(env, dir);
      expect(await readdir(join(dir, 'ids'))).toHaveLength(2);
      expect(await m.stop(signal)).toBe(130);
      expect(m.stderr).toMatch(/interrupted: unmounted/);
      expect(await mountAt(dir)).toBeUndefined();
      expect(await readdir(dir)).toEqual([]);
    }
    // Theirs are gone: what is left was there before (the mount the other tests use).
    for (const l of await readdir(join(env.CAIRN_REPO!, 'locks'))) expect(locks).toContain(l);
  });
});
