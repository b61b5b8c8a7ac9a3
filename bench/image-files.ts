import { spawn } from 'node:child_process';
import { closeSync, openSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { ExtraRow } from './extras.js';
import { ensureImages, imageSubset } from './image.js';
import { deviceBytesRead, withLoopMount } from './loop.js';
import { dropCaches } from './measure.js';
import { type FileSpec, treeSpec } from './tree.js';

/**
 * Files inside an image snapshot (issue 10): from an image snapshot of the peers' first
 * ext4 image (bench/image.ts: 2 GiB holding 48 000 files at scale 1; 64 MiB with --quick),
 * the time to list every file (`cairn ls REF`) and to get one file out (`cairn cat REF PATH`
 * and `cairn restore REF --files --include PATH`), beside the way without cairn's file
 * view: restore the whole image (`cairn restore`), loop-mount it and read the file.
 *
 * Bytes read from the repository: the repository and cairn's cache directory (which holds
 * its index) live on their own ext4 filesystem, loop-mounted from a file, and each command
 * is charged with what that loop device read during it (/sys/block/loopN/stat), the page
 * cache dropped before. That is what the disk had to deliver: pack bytes, index and
 * metadata, and the kernel's read-ahead, without the node binary and cairn's own code,
 * which a process-wide count (/proc/PID/io) would mix in. The KDF is set cheap, as in the
 * mount bench, so the times are the reading and not the ~1 s key derivation of every command.
 */
export interface ImageFilesCase {
  name: string;
  seconds: number;
  /** Bytes the repository's filesystem read. */
  bytesRead?: number;
  note?: string;
}

export interface ImageFilesResult {
  imageBytes: number;
  /** Entries `cairn ls` listed, and entries found by walking the loop-mounted image. */
  listed: number;
  walked: number;
  file: { path: string; size: number };
  cases: ImageFilesCase[];
}

const MiB = 2 ** 20;
const CAIRN = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const cacheDir = new URL('./.cache/', new URL('../../bench/', import.meta.url)).pathname;

/** The section's rows for `npm run bench` (bench/extras.ts). */
export async function imageFilesRows(quick: boolean): Promise<ExtraRow[]> {
  if (process.getuid?.() !== 0) {
    return [{ section: 'image-files', case: 'skipped', note: 'not root (loop mounts)' }];
  }
  const r = await benchImageFiles(quick ? 0.005 : 1);
  const rows: ExtraRow[] = r.cases.map((c) => ({
    section: 'image-files',
    case: c.name,
    tool: 'cairn',
    seconds: c.seconds,
    note: [
      c.bytesRead === undefined ? '' : `${(c.bytesRead / MiB).toFixed(1)} MiB read from the repo`,
      c.note ?? '',
    ]
      .filter(Boolean)
      .join('; '),
    ...(c.bytesRead === undefined ? {} : { values: { bytesRead: c.bytesRead } }),
  }));
  rows.push({
    section: 'image-files',
    case: `(${r.imageBytes / MiB} MiB ext4 image; ls listed ${r.listed} entries, the loop mount has ${r.walked})`,
  });
  return rows;
}

/** One file to extract: the largest ordinary file of at most 4 MiB in the image. */
function pickFile(files: FileSpec[]): FileSpec {
  const fit = files.filter((f) => f.kind !== 'sparse' && f.size <= 4 * MiB);
  return fit.reduce((a, b) => (b.size > a.size ? b : a));
}

export async function benchImageFiles(scale: number): Promise<ImageFilesResult> {
  const files = treeSpec(scale);
  const images = ensureImages(join(cacheDir, `peers-${scale}`, 'images'), files, scale);
  const spec = pickFile(imageSubset(files));
  const path = `/${spec.path}`;
  const dir = await mkdtemp(join(tmpdir(), 'cairn-bench-imgfiles-'));
  try {
    const repoFs = join(dir, 'repo.fs');
    // Room for the repository (at most about the image's size) and the index cache.
    closeSync(openSync(repoFs, 'w'));
    await runTo(null, 'truncate', ['-s', String(images.size + 512 * MiB), repoFs]);
    await runTo(null, 'mkfs.ext4', ['-q', '-F', '-E', 'nodiscard', repoFs]);
    const store = join(dir, 'store');
    return await withLoopMount(repoFs, store, { readOnly: false }, async (device) => {
      const env = {
        ...process.env,
        CAIRN_REPO: join(store, 'repo'),
        CAIRN_CACHE_DIR: join(store, 'cache'),
        CAIRN_PASSWORD: 'bench',
      };
      const cairn = (args: string[], out: string | null = null) =>
        runTo(out, process.execPath, [CAIRN, ...args], env);
      await cairn(['init', '--kdf-memory', '1', '--kdf-time', '1']);
      const summary = await cairn(['image', '--json', images.v1, '--name', 'disk']);
      const id = (JSON.parse(summary.trim().split('\n').at(-1)!) as { snapshot_id: string })
        .snapshot_id;
      const cases: ImageFilesCase[] = [];
      /** Times `fn` with the page cache dropped, charging it the repository's reads. */
      const measure = async (name: string, fn: () => Promise<string | undefined>) => {
        dropCaches();
        const before = deviceBytesRead(device);
        const t0 = performance.now();
        const note = await fn();
        const seconds = (performance.now() - t0) / 1000;
        cases.push({ name, seconds, bytesRead: deviceBytesRead(device) - before, note });
      };

      const listing = join(dir, 'ls.txt');
      await measure('list all files: cairn ls', async () => {
        await cairn(['ls', id], listing);
        return undefined;
      });
      const listed = readFileSync(listing, 'utf8')
        .split('\n')
        .filter((l) => l.startsWith('/')).length;
      const size = `${(spec.size / 1024).toFixed(0)} KiB`;
      const catOut = join(dir, 'cat.out');
      await measure(`one file (${size}): cairn cat`, async () => {
        await cairn(['cat', id, path], catOut);
        return sizeCheck(catOut, spec.size);
      });
      const extracted = join(dir, 'files');
      await measure(`one file (${size}): cairn restore --files --include`, async () => {
        await cairn(['restore', id, '-t', extracted, '--files', '--include', path]);
        return sizeCheck(join(extracted, spec.path), spec.size);
      });
      await mkdir(join(dir, 'restored'));
      const restored = join(dir, 'restored', 'disk.img');
      await measure(`whole image (${images.size / MiB} MiB): cairn restore`, async () => {
        await cairn(['restore', id, '-t', restored]);
        return undefined;
      });
      // The restored image was just written: sync and drop it, so the mount reads the disk.
      dropCaches();
      const loopStart = performance.now();
      let readSeconds = 0;
      let walked = 0;
      const note = await withLoopMount(restored, join(dir, 'loop'), {}, async () => {
        const copy = readFileSync(join(dir, 'loop', spec.path));
        readSeconds = (performance.now() - loopStart) / 1000;
        walked = readdirSync(join(dir, 'loop'), { recursive: true }).length;
        return copy.equals(readFileSync(catOut)) ? 'same bytes as cairn cat' : 'DIFFERS from cat';
      });
      cases.push({ name: 'then loop-mount it and read the file', seconds: readSeconds, note });
      const whole = cases.at(-2)!.seconds + readSeconds;
      cases.push({ name: 'one file by whole restore + loop mount, in all', seconds: whole });
      return { imageBytes: images.size, listed, walked, file: { path, size: spec.size }, cases };
    });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function sizeCheck(file: string, size: number): string | undefined {
  const got = statSync(file).size;
  return got === size ? undefined : `WRONG SIZE: ${got} bytes, expected ${size}`;
}

/** Runs a command; stdout goes to `out` (a file) or is returned; throws with its stderr. */
async function runTo(
  out: string | null,
  file: string,
  args: string[],
  env: NodeJS.ProcessEnv = process.env,
): Promise<string> {
  const fd = out === null ? 'pipe' : openSync(out, 'w');
  try {
    return await new Promise<string>((resolve, reject) => {
      const child = spawn(file, args, { env, stdio: ['ignore', fd, 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout?.on('data', (d: Buffer) => {
        stdout += d.toString();
      });
      child.stderr?.on('data', (d: Buffer) => {
        stderr += d.toString();
      });
      child.on('error', reject);
      child.on('exit', (code) =>
        code === 0
          ? resolve(stdout)
          : reject(new Error(`${file} ${args.join(' ')} exited ${code}: ${stderr.trim()}`)),
      );
    });
  } finally {
    if (typeof fd === 'number') closeSync(fd);
  }
}

async function main(): Promise<void> {
  const quick = process.argv.includes('--quick');
  for (const r of await imageFilesRows(quick)) {
    const s = r.seconds === undefined ? '' : `${r.seconds.toFixed(2)} s`;
    process.stdout.write(`${r.case.padEnd(56)} ${s.padStart(9)}  ${r.note ?? ''}\n`);
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await mkdir(cacheDir, { recursive: true });
  await main();
}
