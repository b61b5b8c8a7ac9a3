import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type TempDir, tempDir } from '../helpers.js';
import { cairn, cliEnv, FAST_KDF_FLAGS } from './run.js';

let d: TempDir;
let env: Record<string, string>;
beforeEach(async () => {
  d = await tempDir();
  env = cliEnv(d.path, 'secret');
});
afterEach(() => d.cleanup());

const FAST = FAST_KDF_FLAGS;

describe('cairn init', () => {
  it('creates a repository, and refuses a second init with exit 1', async () => {
    const first = await cairn(['init', ...FAST], { env });
    expect(first.code).toBe(0);
    expect(first.stdout).toMatch(/created cairn repository/);
    const second = await cairn(['init', ...FAST], { env });
    expect(second.code).toBe(1);
    expect(second.stderr).toMatch(/^cairn: a repository already exists/);
  });

  it('needs a password from somewhere when there is no terminal', async () => {
    const r = await cairn(['init'], { env: { ...env, CAIRN_PASSWORD: undefined } });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^cairn: no password given: .*--password-file/);
  });

  it('reads the password from --password-file and never prints it', async () => {
    const pw = join(d.path, 'pw');
    await writeFile(pw, 'file-secret\nignored\n');
    const noEnv = { ...env, CAIRN_PASSWORD: undefined };
    const init = await cairn(['init', ...FAST, '--password-file', pw], { env: noEnv });
    expect(init.code).toBe(0);
    const ok = await cairn(['stats', '--password-file', pw, '--json'], { env: noEnv });
    expect(ok.code).toBe(0);
    expect(ok.stdout + ok.stderr).not.toContain('file-secret');
    const wrong = await cairn(['stats'], { env: { ...env, CAIRN_PASSWORD: 'nope' } });
    expect(wrong.code).toBe(12);
    expect(wrong.stderr).toMatch(/^cairn: wrong password/);
  });
});

describe('exit codes', () => {
  it('10 for a missing repository', async () => {
    const r = await cairn(['stats'], { env });
    expect(r.code).toBe(10);
    expect(r.stderr).toMatch(/^cairn: repository .* does not exist/);
  });

  it('1 with the usage text for an unknown flag', async () => {
    const r = await cairn(['init', '--bogus'], { env });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/unknown option/);
    expect(r.stderr).toMatch(/Usage: cairn init/);
  });

  it('1 for bad chunker parameters', async () => {
    const r = await cairn(['init', '--no-encryption', '--chunk-avg', '1000'], { env });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^cairn: /);
  });
});

describe('cairn stats', () => {
  it('prints the SPEC fields as JSON for an empty repository', async () => {
    expect((await cairn(['init', '--no-encryption'], { env })).code).toBe(0);
    const r = await cairn(['stats', '--json'], { env: { ...env, CAIRN_PASSWORD: undefined } });
    expect(r.code).toBe(0);
    const s = JSON.parse(r.stdout);
    expect(s).toMatchObject({ snapshots: 0, total_size: 0, stored_size: 0, chunks: 0, packs: 0 });
    expect(s).toHaveProperty('dedup_ratio');
    expect(s).toHaveProperty('compression_ratio');
  });
});
