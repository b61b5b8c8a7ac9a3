import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { basename } from 'node:path';

/*
 * Loop devices for the mount and image-files benches (root only): a file attached and
 * mounted, always detached again; random 4 KiB reads with fio; bytes a device read.
 */

/**
 * Runs `fn` with `file` attached to a loop device and its filesystem mounted at `mnt`.
 * `directIo` makes the loop device read its backing file with O_DIRECT, so the kernel keeps
 * no second copy of it in the page cache: reads inside go to whatever serves the file (a
 * FUSE mount), as `mount -o loop` alone would not guarantee.
 */
export async function withLoopMount<T>(
  file: string,
  mnt: string,
  opts: { readOnly?: boolean; directIo?: boolean },
  fn: (device: string) => Promise<T>,
): Promise<T> {
  const readOnly = opts.readOnly ?? true;
  const args = ['-f', '--show', ...(readOnly ? ['-r'] : []), file];
  if (opts.directIo) args.unshift('--direct-io=on');
  const device = execFileSync('losetup', args, { encoding: 'utf8' }).trim();
  try {
    mkdirSync(mnt, { recursive: true });
    execFileSync('mount', ['-o', readOnly ? 'ro' : 'rw', device, mnt]);
    try {
      return await fn(device);
    } finally {
      execFileSync('umount', [mnt]);
    }
  } finally {
    execFileSync('losetup', ['-d', device]);
  }
}

/** Bytes `device` (e.g. /dev/loop3) has read since it was attached: /sys/block/…/stat. */
export function deviceBytesRead(device: string): number {
  const stat = readFileSync(`/sys/block/${basename(device)}/stat`, 'utf8');
  return Number(stat.trim().split(/\s+/)[2]) * 512;
}

export function hasFio(): boolean {
  return spawnSync('fio', ['--version'], { stdio: 'ignore' }).status === 0;
}

/**
 * Random 4 KiB reads of `file` for `seconds`, one at a time (queue depth 1), with O_DIRECT
 * so the page cache does not answer them: reads per second, as fio reports them. fio's
 * default seed makes every run read the same offsets, so tools are compared on one sequence.
 */
export function randomReadIops(file: string, seconds: number): number {
  const out = execFileSync(
    'fio',
    [
      '--name=randread',
      `--filename=${file}`,
      '--readonly',
      '--rw=randread',
      '--bs=4k',
      '--direct=1',
      '--ioengine=psync',
      '--time_based',
      `--runtime=${seconds}`,
      '--output-format=json',
    ],
    { encoding: 'utf8', maxBuffer: 1 << 24 },
  );
  const job = (JSON.parse(out) as { jobs: { read: { iops: number } }[] }).jobs[0];
  if (!job) throw new Error(`fio printed no job for ${file}`);
  return job.read.iops;
}
