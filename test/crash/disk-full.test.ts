import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { cairn, cliEnv, FAST_KDF_FLAGS } from '../cli/run.js';
import { type TempDir, tempDir } from '../helpers.js';

const MiB = 1 << 20;

let d: TempDir;
let mnt: string;
let mounted = false;
beforeEach(async () => {
  d = await tempDir();
  mnt = join(d.path, 'mnt');
  await mkdir(mnt);
});
afterEach(async () => {
  if (mounted) execFileSync('umount', [mnt]);
  mounted = false;
  await d.cleanup();
});

describe('a full disk', () => {
  it('fails a backup cleanly (ENOSPC, exit 1); the repository passes check', async (ctx) => {
    // Room for two 16 MiB packs, not for the 48 MiB backed up. Needs root (mount).
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=40m', 'tmpfs', mnt], { stdio: 'ignore' });
      mounted = true;
    } catch {
      ctx.skip();
    }
    const src = join(d.path, 'src');
    await mkdir(src);
    await writeFile(join(src, 'big'), randomBytes(48 * MiB));
    const env = { ...cliEnv(d.path), CAIRN_REPO: join(mnt, 'repo') };
    expect((await cairn(['init', ...FAST_KDF_FLAGS], { env })).code).toBe(0);
    const full = await cairn(['backup', src], { env });
    expect(full.code).toBe(1);
    expect(full.stderr).toMatch(/^cairn: cannot write .*ENOSPC: no space left on device/);
    expect(full.stderr.trim().split('\n')).toHaveLength(1);
    const checked = await cairn(['check', '--read-data'], { env });
    expect([checked.code, checked.stderr]).toEqual([0, '']);
    // Prune removes what the failed backup left, and a smaller backup then fits.
    expect((await cairn(['prune'], { env })).code).toBe(0);
    await writeFile(join(src, 'big'), randomBytes(8 * MiB));
    expect((await cairn(['backup', src], { env })).code).toBe(0);
    expect((await cairn(['check'], { env })).code).toBe(0);
  }, 120_000);
});
