import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { chmod, mkdir, open, readdir, readFile, writeFile } from 'node:fs/promises';
import { constants as osConstants } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { shortHex } from '../../src/errors.js';
import { imageBackup } from '../../src/image/index.js';
import { ChunkCache } from '../../src/mount/content.js';
import { SnapshotFs } from '../../src/mount/fs.js';
import { SnapshotList } from '../../src/mount/layout.js';
import { cairn } from '../cli/run.js';
import { makeRepo, type TempDir, type TestRepo, tempDir } from '../helpers.js';
import { hasCommand, SMALL_CHUNKER, sh } from '../image/util.js';
import { generateTree } from './image-tree.js';
import {
  type Captured,
  captureTree,
  detachAllUnder,
  MountProcess,
  noFuse,
  titled,
} from './util.js';

const noTools = ['mke2fs', 'sfdisk'].find((c) => !hasCommand(c))
  ? 'mke2fs (e2fsprogs) and sfdisk (fdisk) are needed'
  : undefined;
const noKernel = noFuse ?? noTools ?? (hasCommand('setpriv') ? undefined : 'setpriv is needed');
if (noTools) console.warn(`test/mount/image-files: skipped: ${noTools}`);

/** An ext4 image of `bytes` holding `dir` (mke2fs -d: no mount, no root needed). */
async function ext4(path: string, bytes: number, dir: string): Promise<void> {
  const fh = await open(path, 'w');
  await fh.truncate(bytes);
  await fh.close();
  sh('mke2fs', ['-q', '-F', '-t', 'ext4', '-d', dir, path]);
}

/** A GPT disk: partition 1 holds `fsImage`, partition 2 random bytes (no filesystem). */
async function gptDisk(path: string, fsImage: string): Promise<void> {
  const fs = await readFile(fsImage);
  const fh = await open(path, 'w');
  await fh.truncate(fs.length + (4 << 20));
  await fh.close();
  sh('sfdisk', ['-q', path], `label: gpt\n,${fs.length / 512}\n,\n`);
  const table = JSON.parse(sh('sfdisk', ['--json', path])) as {
    partitiontable: { partitions: { start: number; size: number }[] };
  };
  const [p1, p2] = table.partitiontable.partitions;
  const disk = await open(path, 'r+');
  await disk.write(fs, 0, fs.length, p1!.start * 512);
  await disk.write(randomBytes(p2!.size * 512), 0, p2!.size * 512, p2!.start * 512);
  await disk.close();
}

/** What the mount must show of each entry: everything but a directory's own size. */
function comparable(tree: Map<string, Captured>): Map<string, object> {
  const out = new Map<string, object>();
  for (const [path, c] of tree) {
    if (path === '' || path === 'lost+found' || path.startsWith('lost+found/')) continue;
    const { mtimeMs, content, ...rest } = c;
    out.set(path, { ...rest, mtimeS: mtimeMs / 1000n, sha: content && hash(content) });
  }
  return out;
}

function hash(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

let d: TempDir;
let src: string;
let sysImage: string;
let diskImage: string;
let junkImage: string;

beforeAll(async () => {
  if (noTools) return;
  d = await tempDir();
  // Others may pass through: the mount below is read as nobody too.
  await chmod(d.path, 0o755);
  src = join(d.path, 'src');
  await mkdir(src);
  await generateTree(src, 20261126);
  await writeFile(join(src, 'public.txt'), 'for everyone\n', { mode: 0o644 });
  await writeFile(join(src, 'secret'), 'root only\n', { mode: 0o600 });
  sysImage = join(d.path, 'sys.ext4');
  await ext4(sysImage, 48 << 20, src);
  diskImage = join(d.path, 'disk.raw');
  const small = join(d.path, 'small');
  await mkdir(join(small, 'etc'), { recursive: true });
  await writeFile(join(small, 'etc/hostname'), 'inside-a-partition\n');
  await ext4(join(d.path, 'small.ext4'), 8 << 20, small);
  await gptDisk(diskImage, join(d.path, 'small.ext4'));
  junkImage = join(d.path, 'junk.raw');
  await writeFile(junkImage, randomBytes(1 << 20));
});

afterAll(async () => {
  await d?.cleanup();
});

describe.skipIf(noTools)(titled('SnapshotFs: files inside image snapshots', noTools), () => {
  let t: TestRepo;
  let fs: SnapshotFs;
  let cache: ChunkCache;
  const notices: string[] = [];
  const ids: Record<string, string> = {};

  beforeAll(async () => {
    t = await makeRepo({ encryption: false, chunker: SMALL_CHUNKER });
    ids.sys = (await imageBackup(t.repo, sysImage, { name: 'sys' })).snapshotId;
    ids.disk = (await imageBackup(t.repo, diskImage, { name: 'disk' })).snapshotId;
    ids.junk = (await imageBackup(t.repo, junkImage, { name: 'junk' })).snapshotId;
    const mounted = await t.reopen();
    const store = await mounted.blobs();
    const list = new SnapshotList(mounted, { refreshMs: 60_000, onNotice: () => undefined });
    cache = new ChunkCache((id) => store.get(id), 64 << 20);
    fs = new SnapshotFs(store, list, cache, (m) => notices.push(m));
  });

  afterAll(async () => {
    await t?.cleanup();
  });

  const dir = (which: string) => `/ids/${shortHex(ids[which]!)}`;

  it('shows <name>.files beside <name>.img, reading only the chunks a file needs', async () => {
    expect(await fs.readdir(dir('sys'))).toEqual(['.', '..', 'sys.img', 'sys.files']);
    const files = `${dir('sys')}/sys.files`;
    const names = (await fs.readdir(files)).filter((n) => !['.', '..'].includes(n));
    expect(names).toContain('lost+found');
    const wanted = (await readdir(src)).sort();
    expect(names.filter((n) => n !== 'lost+found').sort()).toEqual(wanted);
    // The largest top-level file, read whole: a few metadata chunks and its own.
    const sizes = await Promise.all(
      wanted.map(async (n) => ({ n, a: await fs.getattr(`${files}/${n}`) })),
    );
    const { n, a } = sizes
      .filter((x) => (x.a.mode & constants.S_IFMT) === constants.S_IFREG)
      .sort((x, y) => y.a.size - x.a.size)[0]!;
    const before = cache.fetches;
    const fh = await fs.open(`${files}/${n}`, constants.O_RDONLY);
    const buf = Buffer.alloc(a.size);
    expect(await fs.read(fh, buf, a.size, 0)).toBe(a.size);
    fs.release(fh);
    expect(buf.equals(await readFile(join(src, n)))).toBe(true);
    const imageChunks = (48 << 20) / SMALL_CHUNKER.avg;
    expect(cache.fetches - before).toBeLessThan(a.size / SMALL_CHUNKER.min + 16);
    expect(cache.fetches).toBeLessThan(imageChunks / 10);
  });

  it("shows a partitioned disk's readable partitions as part<N>/", async () => {
    expect(await fs.readdir(dir('disk'))).toEqual([
      '.',
      '..',
      'disk.img',
      'disk-part1.img',
      'disk-part2.img',
      'disk.files',
    ]);
    expect(await fs.readdir(`${dir('disk')}/disk.files`)).toEqual(['.', '..', 'part1']);
    const fh = await fs.open(`${dir('disk')}/disk.files/part1/etc/hostname`, constants.O_RDONLY);
    const buf = Buffer.alloc(100);
    const n = await fs.read(fh, buf, 100, 0);
    expect(buf.subarray(0, n).toString()).toBe('inside-a-partition\n');
  });

  it('shows no .files for an image with no filesystem it can read, and says why', async () => {
    expect(await fs.readdir(dir('junk'))).toEqual(['.', '..', 'junk.img']);
    const errno = await fs.getattr(`${dir('junk')}/junk.files`).then(
      () => 0,
      (e: { errno: number }) => e.errno,
    );
    expect(errno).toBe(osConstants.errno.ENOENT);
    expect(notices.join('\n')).toMatch(/shows no files: no filesystem cairn can read/);
    expect(notices.filter((m) => m.includes(shortHex(ids.junk!)))).toHaveLength(1);
  });
});

/** Runs a command as nobody (uid and gid 65534, no other groups). */
function asNobody(cmd: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(
    'setpriv',
    ['--reuid=65534', '--regid=65534', '--clear-groups', '--', ...cmd],
    {
      encoding: 'utf8',
    },
  );
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe.skipIf(noKernel)(titled('cairn mount: files inside image snapshots', noKernel), () => {
  let env: Record<string, string>;
  let mount: MountProcess;
  const ids: Record<string, string> = {};

  async function image(path: string, name: string): Promise<string> {
    const r = await cairn(['image', '--json', path, '--name', name], { env });
    expect(r.code, r.stderr).toBe(0);
    return (JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { snapshot_id: string }).snapshot_id;
  }

  const dir = (which: string) => join(mount.dir, 'ids', shortHex(ids[which]!));

  beforeAll(async () => {
    env = { CAIRN_REPO: join(d.path, 'repo'), CAIRN_CACHE_DIR: join(d.path, 'cache') };
    const init = ['init', '--no-encryption', '--chunk-min', '16K', '--chunk-avg', '64K'];
    expect((await cairn(init, { env })).code).toBe(0);
    ids.sys = await image(sysImage, 'sys');
    ids.disk = await image(diskImage, 'disk');
    ids.junk = await image(junkImage, 'junk');
    await mkdir(join(d.path, 'mnt'));
    mount = await MountProcess.start(env, join(d.path, 'mnt'));
  });

  afterAll(async () => {
    await MountProcess.stopAll();
    await detachAllUnder(d.path);
  });

  it('shows every file as it was: bytes, size, mode, owner, mtime, links', async () => {
    expect((await readdir(dir('sys'))).sort()).toEqual(['sys.files', 'sys.img']);
    const shown = comparable(await captureTree(join(dir('sys'), 'sys.files')));
    const want = comparable(await captureTree(src));
    expect(want.size).toBeGreaterThan(30);
    expect(shown).toEqual(want);
  });

  it('lets other users in, as far as the permissions recorded in the image allow', async () => {
    const files = join(dir('sys'), 'sys.files');
    const ls = asNobody(['ls', '-a', files]);
    expect(ls.code, ls.stderr).toBe(0);
    expect(ls.stdout.split('\n')).toEqual(expect.arrayContaining(['public.txt', 'secret']));
    const cat = asNobody(['cat', join(files, 'public.txt')]);
    expect(cat).toMatchObject({ code: 0, stdout: 'for everyone\n' });
    expect(asNobody(['cat', join(files, 'secret')]).stderr).toMatch(/Permission denied/);
    // The raw image holds every file, whatever its mode: only for whoever mounted.
    expect(asNobody(['head', '-c1', join(dir('sys'), 'sys.img')]).stderr).toMatch(
      /Permission denied/,
    );
  });

  it("shows a GPT disk's readable partitions as part<N>/, and no files for junk", async () => {
    const files = join(dir('disk'), 'disk.files');
    expect(await readdir(files)).toEqual(['part1']);
    expect(await readFile(join(files, 'part1/etc/hostname'), 'utf8')).toBe('inside-a-partition\n');
    expect((await readdir(dir('junk'))).sort()).toEqual(['junk.img']);
    expect((await readFile(join(dir('junk'), 'junk.img'))).equals(await readFile(junkImage))).toBe(
      true,
    );
    expect(mount.stderr).toMatch(/shows no files: no filesystem cairn can read/);
  });
});
