import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { mountAt } from '../src/mount/index.js';
import { mixedBlocks } from './data.js';

/**
 * Sequential reads through `cairn mount` (run as its own process, as a user runs it): a
 * large file of a file snapshot and the same bytes as an image snapshot, each read once
 * with 1 MiB reads, beside `cairn cat` of the same file (the library's read path without
 * FUSE). The repository was just written, so its packs are in the page cache: this
 * measures cairn and FUSE, not the disk.
 */
export interface MountBenchResult {
  bytes: number;
  /** MiB/s reading the file through the mount. */
  fileMbPerSec: number;
  /** MiB/s reading `<name>.img` through the mount. */
  imageMbPerSec: number;
  /** MiB/s of `cairn cat` of the file to /dev/null. */
  catMbPerSec: number;
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

export async function benchMount(bytes = 512 * MiB): Promise<MountBenchResult> {
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
    await cairn(['init', '--kdf-memory', '1', '--kdf-time', '1']);
    const fileSnap = snapshotId(await cairn(['backup', '--json', src]));
    const imageSnap = snapshotId(await cairn(['image', '--json', file, '--name', 'disk']));

    const catStart = performance.now();
    await new Promise<void>((resolve, reject) => {
      const cat = spawn(process.execPath, [CAIRN, 'cat', fileSnap, file], {
        env,
        stdio: ['ignore', 'ignore', 'inherit'],
      });
      cat.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`cat: ${code}`))));
    });
    const catMbPerSec = bytes / MiB / ((performance.now() - catStart) / 1000);
    // A fresh mount for each read: the image holds the file's chunks, which the first
    // mount's chunk cache would still have.
    const mnt = join(dir, 'mnt');
    await mkdir(mnt);
    const through = (path: string) => mounted(env, mnt, () => readThrough(join(mnt, path), bytes));
    const fileMbPerSec = await through(join('ids', fileSnap.slice(0, 8), file));
    const imageMbPerSec = await through(join('ids', imageSnap.slice(0, 8), 'disk.img'));
    return { bytes, fileMbPerSec, imageMbPerSec, catMbPerSec };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Runs `fn` while `cairn mount mnt` runs, then stops it with SIGTERM. */
async function mounted<T>(env: NodeJS.ProcessEnv, mnt: string, fn: () => Promise<T>): Promise<T> {
  const mount = spawn(process.execPath, [CAIRN, 'mount', '--quiet', mnt], {
    env,
    stdio: ['ignore', 'ignore', 'ignore'],
  });
  const exited = new Promise((resolve) => mount.on('exit', resolve));
  try {
    while ((await mountAt(mnt))?.fstype !== 'fuse.cairn') {
      if (mount.exitCode !== null) throw new Error(`cairn mount exited with ${mount.exitCode}`);
      await sleep(20);
    }
    return await fn();
  } finally {
    mount.kill('SIGTERM');
    await exited;
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
  process.stdout.write(
    `sequential reads of ${bytes / MiB} MiB of mixed data (encrypted repository):\n` +
      `  file through the mount   ${r.fileMbPerSec.toFixed(0).padStart(5)} MiB/s\n` +
      `  image through the mount  ${r.imageMbPerSec.toFixed(0).padStart(5)} MiB/s\n` +
      `  cairn cat of the file    ${r.catMbPerSec.toFixed(0).padStart(5)} MiB/s\n`,
  );
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) await main();
