import { execFile, execFileSync, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { type MountEntry, mountAt } from '../src/mount/index.js';
import { mixedBlocks } from './data.js';
import type { ExtraRow } from './extras.js';
import { hasFio, randomReadIops, withLoopMount } from './loop.js';
import { dropCaches, run as runCommand } from './measure.js';
import { installPeers, makeTools } from './peers.js';

/**
 * Reads through `cairn mount` (run as its own process, as a user runs it) beside
 * `restic mount` of the same data in the same run:
 *   - sequential: a large file of a file snapshot read once with 1 MiB reads, through each
 *     tool's mount; for cairn also the same bytes as an image snapshot (`<name>.img`) and
 *     `cairn cat` of the file (the library's read path without FUSE);
 *   - random: an ext4 image holding that file (mke2fs -d), image-snapshotted by cairn and
 *     backed up as a file by restic; the image file in each mount is attached to a loop
 *     device with direct I/O and mounted read-only, and fio reads 4 KiB at random offsets of
 *     the file inside with O_DIRECT, one read at a time, for a fixed time.
 * A fresh mount for every case, and the page cache dropped (as root) once the mount is up,
 * so each case reads the repository from disk and through the tool's own caches only.
 */
export interface MountBenchResult {
  bytes: number;
  /** MiB/s reading the file through the mount. */
  fileMbPerSec: number;
  /** MiB/s reading `<name>.img` through the mount. */
  imageMbPerSec: number;
  /** MiB/s of `cairn cat` of the file to /dev/null. */
  catMbPerSec: number;
  /** Random 4 KiB reads per second inside the loop-mounted ext4 image; undefined without fio. */
  iops?: number;
  iopsSeconds: number;
  /** The same through `restic mount`; undefined when restic is not installed. */
  restic?: { version: string; fileMbPerSec: number; iops?: number };
}

const MiB = 2 ** 20;
const CAIRN = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const run = promisify(execFile);

/** Why the bench cannot mount here, or undefined. */
export function cannotMount(): string | undefined {
  if (!existsSync('/dev/fuse')) return '/dev/fuse is missing';
  if (process.getuid?.() !== 0) return 'not root';
  return undefined;
}

export async function benchMount(bytes = 512 * MiB, iopsSeconds = 20): Promise<MountBenchResult> {
  installPeers(['restic'], ['fio']);
  const dir = await mkdtemp(join(tmpdir(), 'cairn-bench-mount-'));
  const env = {
    ...process.env,
    CAIRN_REPO: join(dir, 'repo'),
    CAIRN_CACHE_DIR: join(dir, 'cache'),
    CAIRN_PASSWORD: 'bench',
  };
  const cairn = (args: string[]) => run(process.execPath, [CAIRN, ...args], { env });
  try {
    const src = join(dir, 'src');
    await mkdir(src);
    const file = join(src, 'data.bin');
    const fh = await open(file, 'w');
    for (const block of mixedBlocks(bytes, 3)) await fh.write(block);
    await fh.close();
    const ext4 = join(dir, 'ext4.img');
    makeExt4(ext4, src, bytes);
    await cairn(['init', '--kdf-memory', '1', '--kdf-time', '1']);
    const fileSnap = snapshotId(await cairn(['backup', '--json', src]));
    const imageSnap = snapshotId(await cairn(['image', '--json', file, '--name', 'disk']));
    const ext4Snap = snapshotId(await cairn(['image', '--json', ext4, '--name', 'ext4']));

    dropCaches();
    const catStart = performance.now();
    await new Promise<void>((resolve, reject) => {
      const cat = spawn(process.execPath, [CAIRN, 'cat', fileSnap, file], {
        env,
        stdio: ['ignore', 'ignore', 'inherit'],
      });
      cat.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`cat: ${code}`))));
    });
    const catMbPerSec = bytes / MiB / ((performance.now() - catStart) / 1000);
    // A fresh mount for each case: the image holds the file's chunks, which the first
    // mount's chunk cache would still have.
    const mnt = join(dir, 'mnt');
    await mkdir(mnt);
    const server: Server = {
      file: process.execPath,
      args: [CAIRN, 'mount', '--quiet', mnt],
      env,
      isUp: (m) => m.fstype === 'fuse.cairn',
      stop: 'SIGTERM',
    };
    const through = (path: string) =>
      serving(server, mnt, () => readThrough(join(mnt, path), bytes));
    const fileMbPerSec = await through(join('ids', fileSnap.slice(0, 8), file));
    const imageMbPerSec = await through(join('ids', imageSnap.slice(0, 8), 'disk.img'));
    const fio = hasFio();
    const loopIops = (image: string) => randomInImage(image, join(dir, 'loop'), iopsSeconds);
    const iops = fio
      ? await serving(server, mnt, () =>
          loopIops(join(mnt, 'ids', ext4Snap.slice(0, 8), 'ext4.img')),
        )
      : undefined;
    const restic = await benchRestic(dir, mnt, { src, file, ext4, bytes, iopsSeconds, fio });
    return { bytes, fileMbPerSec, imageMbPerSec, catMbPerSec, iops, iopsSeconds, restic };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** The mount section's rows for `npm run bench` (bench/extras.ts). */
export async function mountRows(quick: boolean): Promise<ExtraRow[]> {
  const why = cannotMount();
  if (why) return [{ section: 'mount', case: 'skipped', note: why }];
  const r = await benchMount((quick ? 32 : 512) * MiB, quick ? 3 : 20);
  const size = `${r.bytes / MiB} MiB`;
  const vs = (x?: number, y?: number) =>
    x !== undefined && y !== undefined ? `${(x / y).toFixed(2)}x restic` : undefined;
  const row = (c: string, tool: string, mibPerSec?: number, note?: string): ExtraRow => ({
    section: 'mount',
    case: c,
    tool,
    mibPerSec,
    ...(note ? { note } : {}),
  });
  const rows = [
    row(
      `file through the mount, ${size}`,
      'cairn',
      r.fileMbPerSec,
      vs(r.fileMbPerSec, r.restic?.fileMbPerSec),
    ),
    row(
      `file through the mount, ${size}`,
      'restic',
      r.restic?.fileMbPerSec,
      r.restic ? r.restic.version : 'restic not installed',
    ),
    row(`image through the mount, ${size}`, 'cairn', r.imageMbPerSec),
    row(`cairn cat of the file, ${size}`, 'cairn', r.catMbPerSec),
  ];
  const random = `random 4 KiB reads in loop-mounted ext4 image, ${r.iopsSeconds} s`;
  const iopsRow = (tool: string, iops?: number, other?: string): ExtraRow => ({
    ...row(
      random,
      tool,
      undefined,
      iops === undefined
        ? 'not measured (no fio or restic)'
        : [`${iops.toFixed(0)} IOPS`, other].filter(Boolean).join(', '),
    ),
    ...(iops === undefined ? {} : { values: { iops } }),
  });
  rows.push(
    iopsRow('cairn', r.iops, vs(r.iops, r.restic?.iops)),
    iopsRow('restic', r.restic?.iops),
  );
  return rows;
}

/** An ext4 image holding the files of `src`, with room to spare (mke2fs -d, 4 KiB blocks). */
function makeExt4(image: string, src: string, bytes: number): void {
  const mib = Math.ceil((bytes * 1.1) / MiB) + 16;
  execFileSync('mke2fs', ['-q', '-F', '-t', 'ext4', '-b', '4096', '-d', src, image, `${mib}M`]);
}

/** Random 4 KiB reads of data.bin inside `image`, loop-mounted read-only with direct I/O. */
function randomInImage(image: string, loopMnt: string, seconds: number): Promise<number> {
  return withLoopMount(image, loopMnt, { directIo: true }, async () => {
    dropCaches();
    return randomReadIops(join(loopMnt, 'data.bin'), seconds);
  });
}

interface ResticCase {
  src: string;
  file: string;
  ext4: string;
  bytes: number;
  iopsSeconds: number;
  fio: boolean;
}

/** The same reads through `restic mount`: the file's snapshot, then the image file's. */
async function benchRestic(
  dir: string,
  mnt: string,
  c: ResticCase,
): Promise<MountBenchResult['restic']> {
  const tool = makeTools(['restic'], join(dir, 'restic-work')).tools[0];
  if (!tool) return undefined;
  const repo = join(dir, 'restic-repo');
  for (const cmd of tool.init(repo)) runCommand(cmd);
  const backup = (path: string) => {
    const cmd = tool.backup(repo, path, 'bench');
    runCommand(cmd);
    const list = execFileSync(
      'restic',
      ['-r', repo, ...cacheArgs(cmd.args), 'snapshots', '--json'],
      {
        env: cmd.env,
        encoding: 'utf8',
      },
    );
    const snaps = JSON.parse(list) as { short_id: string; time: string }[];
    snaps.sort((a, b) => Date.parse(a.time) - Date.parse(b.time));
    return { id: snaps.at(-1)!.short_id, env: cmd.env, cache: cacheArgs(cmd.args) };
  };
  const fileSnap = backup(c.src);
  const imageSnap = backup(c.ext4);
  const server: Server = {
    file: 'restic',
    args: ['-r', repo, ...fileSnap.cache, 'mount', mnt],
    env: fileSnap.env,
    isUp: (m) => m.fstype === 'fuse' && m.source === 'restic',
    stop: 'SIGINT',
  };
  // restic shows each backed-up path under the snapshot with its absolute path.
  const fileMbPerSec = await serving(server, mnt, () =>
    readThrough(join(mnt, 'ids', fileSnap.id, c.file), c.bytes),
  );
  const image = join(mnt, 'ids', imageSnap.id, c.ext4);
  const iops = c.fio
    ? await serving(server, mnt, () => randomInImage(image, join(dir, 'loop'), c.iopsSeconds))
    : undefined;
  return { version: tool.version, fileMbPerSec, iops };
}

/** `--cache-dir DIR` from a restic command made by peers.ts. */
function cacheArgs(args: string[]): string[] {
  const i = args.indexOf('--cache-dir');
  return i < 0 ? [] : args.slice(i, i + 2);
}

/** A FUSE server process: how to start it, know it is mounted, and stop it. */
interface Server {
  file: string;
  args: string[];
  env: NodeJS.ProcessEnv;
  isUp: (m: MountEntry) => boolean;
  stop: NodeJS.Signals;
}

/**
 * Runs `fn` while the server is mounted at `mnt`, with the page cache dropped once it is up;
 * then stops it with its signal, and unmounts lazily if it left the mount behind.
 */
async function serving<T>(server: Server, mnt: string, fn: () => Promise<T>): Promise<T> {
  const child = spawn(server.file, server.args, { env: server.env, stdio: 'ignore' });
  let failed: Error | undefined;
  const exited = new Promise<void>((resolve) => {
    child.on('exit', () => resolve());
    child.on('error', (e) => {
      failed = e;
      resolve();
    });
  });
  try {
    const deadline = Date.now() + 60_000;
    for (;;) {
      const m = await mountAt(mnt);
      if (m && server.isUp(m)) break;
      if (failed) throw failed;
      if (child.exitCode !== null)
        throw new Error(`${server.file} mount exited with ${child.exitCode}`);
      if (Date.now() > deadline) throw new Error(`${server.file} mount: not mounted after 60 s`);
      await sleep(20);
    }
    dropCaches();
    return await fn();
  } finally {
    child.kill(server.stop);
    await Promise.race([exited, sleep(10_000)]);
    if (await mountAt(mnt)) execFileSync('umount', ['-l', mnt]);
    if (child.exitCode === null && child.signalCode === null && !failed) {
      child.kill('SIGKILL');
      await exited;
    }
  }
}

/** The snapshot ID in the summary line of `backup --json` or `image --json`. */
function snapshotId(r: { stdout: string }): string {
  const summary = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { snapshot_id: string };
  return summary.snapshot_id;
}

/** MiB/s of reading `path` (of `bytes` bytes) from start to end, 1 MiB at a time. */
async function readThrough(path: string, bytes: number): Promise<number> {
  const fh = await open(path, 'r');
  const buf = Buffer.allocUnsafe(MiB);
  const started = performance.now();
  let total = 0;
  try {
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, null);
      if (bytesRead === 0) break;
      total += bytesRead;
    }
  } finally {
    await fh.close();
  }
  if (total !== bytes) throw new Error(`read ${total} bytes of ${path}, expected ${bytes}`);
  return bytes / MiB / ((performance.now() - started) / 1000);
}

async function main(): Promise<void> {
  const why = cannotMount();
  if (why) {
    process.stdout.write(`mount bench skipped: ${why}\n`);
    return;
  }
  const i = process.argv.indexOf('--size');
  const bytes = (i > 0 ? Number(process.argv[i + 1]) : 512) * MiB;
  const r = await benchMount(bytes);
  const f = (x?: number) => (x === undefined ? '    -' : x.toFixed(0).padStart(5));
  process.stdout.write(
    `sequential reads of ${bytes / MiB} MiB of mixed data (encrypted repository):\n` +
      `  file through the mount   ${f(r.fileMbPerSec)} MiB/s (restic mount ${f(r.restic?.fileMbPerSec)})\n` +
      `  image through the mount  ${f(r.imageMbPerSec)} MiB/s\n` +
      `  cairn cat of the file    ${f(r.catMbPerSec)} MiB/s\n` +
      `random 4 KiB reads in the loop-mounted ext4 image, ${r.iopsSeconds} s:\n` +
      `  cairn mount ${f(r.iops)} IOPS, restic mount ${f(r.restic?.iops)} IOPS\n`,
  );
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) await main();
