import { randomBytes } from 'node:crypto';
import { cp, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cairn, cliEnv, FAST_KDF_FLAGS } from '../cli/run.js';
import { type TempDir, tempDir } from '../helpers.js';
import { iterations, killAtRandom, start } from './harness.js';

const MiB = 1 << 20;
/**
 * Every crash point of prune is covered in-process (test/ops/prune.test.ts); these few real
 * SIGKILLs check the same with whole processes.
 */
const KILLS = iterations(3);

let d: TempDir;
let src: string;
let disk: string;
let pristine: string;
let n = 0;

/** The CLI environment for a repository at `repo`, each call with a fresh cache. */
const envFor = (repo: string) => ({
  ...cliEnv(join(d.path, `env-${n++}`)),
  CAIRN_REPO: repo,
});

/** Two file and two image snapshots; the older of each forgotten, so prune has work. */
beforeAll(async () => {
  d = await tempDir();
  src = join(d.path, 'src');
  disk = join(d.path, 'disk.img');
  pristine = join(d.path, 'pristine');
  await mkdir(src);
  const env = envFor(pristine);
  const run = async (...args: string[]) => expect((await cairn(args, { env })).code).toBe(0);
  await run('init', ...FAST_KDF_FLAGS);
  for (const f of ['a', 'b', 'c']) await writeFile(join(src, f), randomBytes(6 * MiB));
  await writeFile(disk, randomBytes(12 * MiB));
  await run('backup', src);
  await run('image', disk, '--name', 'disk');
  await writeFile(join(src, 'b'), randomBytes(6 * MiB));
  await writeFile(disk, randomBytes(3 * MiB), { flag: 'r+' });
  await run('backup', src);
  await run('image', disk, '--name', 'disk');
  await run('forget', '--keep-last', '1');
}, 120_000);
afterAll(() => d.cleanup());

describe('prune killed with SIGKILL', () => {
  it('leaves a repository check passes, whose snapshots restore; prune completes', async () => {
    const probe = join(d.path, 'probe');
    await cp(pristine, probe, { recursive: true });
    const started = Date.now();
    const full = await cairn(['prune', '--max-unused', '0'], { env: envFor(probe) });
    expect(full.code).toBe(0);
    const duration = Date.now() - started;
    let killed = 0;
    // A run that beats its random moment is not a kill: try again, a bounded number of times.
    for (let i = 0; killed < KILLS && i < 3 * KILLS; i++) {
      const repo = join(d.path, `run-${i}`);
      await cp(pristine, repo, { recursive: true });
      const env = envFor(repo);
      const run = start(['prune', '--max-unused', '0'], env);
      if (await killAtRandom(run, duration)) killed++;
      const checked = await cairn(['check', '--read-data'], { env });
      expect([checked.code, checked.stderr]).toEqual([0, '']);
      await expectRestores(env);
      expect((await cairn(['prune', '--max-unused', '0'], { env })).code).toBe(0);
      expect((await cairn(['check'], { env })).code).toBe(0);
      await rm(repo, { recursive: true });
    }
    expect(killed).toBeGreaterThan(0);
  }, 300_000);
});

async function expectRestores(env: Record<string, string>): Promise<void> {
  const target = join(d.path, `restored-${n++}`);
  expect(
    (await cairn(['restore', 'latest', '--path', src, '--target', target], { env })).code,
  ).toBe(0);
  for (const f of ['a', 'b', 'c']) {
    const back = await readFile(join(target, src, f));
    expect(back.equals(await readFile(join(src, f)))).toBe(true);
  }
  const image = await cairn(['cat', 'latest', '--name', 'disk'], { env });
  expect([image.code, image.stderr]).toEqual([0, '']);
  expect(image.stdoutBytes.equals(await readFile(disk))).toBe(true);
  await rm(target, { recursive: true });
}
