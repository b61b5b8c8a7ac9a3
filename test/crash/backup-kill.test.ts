import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { cairn, cliEnv, FAST_KDF_FLAGS, type RunResult } from '../cli/run.js';
import { type TempDir, tempDir } from '../helpers.js';
import { count, iterations, killAtRandom, killWhen, start } from './harness.js';

const MiB = 1 << 20;
/** 12 kills by default (half backups, half images): about 30 s on two idle cores. */
const KILLS = iterations(12);

let d: TempDir;
let env: Record<string, string>;
let src: string;
let disk: string;
beforeEach(async () => {
  d = await tempDir();
  src = join(d.path, 'src');
  disk = join(d.path, 'disk.img');
  await mkdir(src);
  for (let i = 0; i < 3; i++) await writeFile(join(src, `f${i}`), randomBytes(12 * MiB));
  await writeFile(disk, Buffer.concat([randomBytes(24 * MiB), Buffer.alloc(8 * MiB)]));
  env = cliEnv(d.path);
  expect((await cairn(['init', ...FAST_KDF_FLAGS], { env })).code).toBe(0);
});
afterEach(() => d.cleanup());

const summary = (r: RunResult) => JSON.parse(r.stdout.trim().split('\n').at(-1)!);

describe('backups killed with SIGKILL', () => {
  it('leave a repository check passes; the next backup and image reuse it', async () => {
    const segments = () => count(join(env.CAIRN_REPO!, 'index'));
    let killed = 0;
    for (let i = 0; i < KILLS; i++) {
      const files = i % 2 === 0;
      // New bytes every time, so each run has work to be killed in: a re-run of stored data
      // ends in well under a second, before most random kills.
      if (files) await writeFile(join(src, 'f0'), randomBytes(12 * MiB));
      else await writeFile(disk, randomBytes(8 * MiB), { flag: 'r+' });
      const args = files ? ['backup', src] : ['image', disk, '--name', 'disk'];
      const before = await segments();
      const run = start(['--json', ...args], env);
      // The last kill of each kind waits for an index segment, so something is stored.
      const kill =
        i >= KILLS - 2
          ? killWhen(run, async () => (await segments()) > before)
          : killAtRandom(run, 1500);
      if (await kill) killed++;
      else expect((await run.done).code).toBe(0);
    }
    expect(killed).toBeGreaterThan(0);
    const checked = await cairn(['check'], { env });
    expect([checked.code, checked.stderr]).toEqual([0, '']);

    const files = await cairn(['--json', 'backup', src], { env });
    expect(files.code).toBe(0);
    expect(summary(files).data_added).toBeLessThan(36 * MiB * 0.9);
    const image = await cairn(['--json', 'image', disk, '--name', 'disk'], { env });
    expect(image.code).toBe(0);
    expect(summary(image).data_added).toBeLessThan(24 * MiB * 0.9);

    expect((await cairn(['check', '--read-data'], { env })).code).toBe(0);
    const cat = await cairn(['cat', 'latest', '--name', 'disk'], { env });
    expect(cat.stdoutBytes.equals(await readFile(disk))).toBe(true);
  }, 300_000);
});
