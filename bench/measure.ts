import { execFileSync, spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { Command } from './peers.js';

/*
 * Timing a child process as a user would see it: wall time around the whole process,
 * peak RSS from GNU time (`%M`, the largest resident set of the process, from wait4's
 * rusage: cairn, restic, borg and casync each run as one process), the page cache dropped
 * before each timed command when we are root so every tool reads from disk.
 */

export interface Timed {
  seconds: number;
  peakRssKiB: number;
  exitCode: number;
}

/** Empties the page cache, dentries and inodes (after a sync); false when not root. */
export function dropCaches(): boolean {
  if (process.getuid?.() !== 0) return false;
  execFileSync('sync');
  try {
    writeFileSync('/proc/sys/vm/drop_caches', '3');
    return true;
  } catch {
    return false;
  }
}

/** Runs `cmd` under /usr/bin/time; stdout and stderr are appended to `log`. */
export async function timed(cmd: Command, log: string): Promise<Timed> {
  const rusage = `${log}.time`;
  const fd = openSync(log, 'a');
  writeFileSync(fd, `\n$ ${cmd.file} ${cmd.args.join(' ')}\n`);
  const started = performance.now();
  try {
    const exitCode = await new Promise<number>((resolve, reject) => {
      const child = spawn('/usr/bin/time', ['-f', '%e %M', '-o', rusage, cmd.file, ...cmd.args], {
        env: cmd.env,
        cwd: cmd.cwd,
        stdio: ['ignore', fd, fd],
      });
      child.on('error', reject);
      child.on('exit', (code, signal) => resolve(code ?? (signal ? 128 : 1)));
    });
    const seconds = (performance.now() - started) / 1000;
    const last = readFileSync(rusage, 'utf8').trim().split('\n').at(-1) ?? '';
    const peakRssKiB = Number(last.split(' ')[1]);
    if (!(cmd.ok ?? [0]).includes(exitCode)) {
      const tail = readFileSync(log, 'utf8').split('\n').slice(-15).join('\n');
      throw new Error(`${cmd.file} ${cmd.args.join(' ')} exited ${exitCode}:\n${tail}`);
    }
    return { seconds, peakRssKiB, exitCode };
  } finally {
    closeSync(fd);
    rmSync(rusage, { force: true });
  }
}

/** Runs an untimed setup command; throws with its output when it fails. */
export function run(cmd: Command): void {
  execFileSync(cmd.file, cmd.args, { env: cmd.env, cwd: cmd.cwd, stdio: 'pipe' });
}

/** Apparent bytes under `paths` (`du -sb`), 0 for paths that do not exist. */
export function diskUsage(paths: string[]): number {
  let total = 0;
  for (const p of paths) {
    try {
      total += Number(execFileSync('du', ['-sb', p], { encoding: 'utf8' }).split('\t')[0]);
    } catch {
      // missing: nothing stored there yet
    }
  }
  return total;
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

/** The 1-, 5- and 15-minute load averages, as /proc/loadavg gives them. */
export function loadAverage(): string {
  return readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
}
