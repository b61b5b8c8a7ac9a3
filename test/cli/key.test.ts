import { randomBytes } from 'node:crypto';
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type TempDir, tempDir } from '../helpers.js';
import { cairn, cliEnv, FAST_KDF_FLAGS } from './run.js';

let d: TempDir;
let env: Record<string, string>;
const FAST = FAST_KDF_FLAGS;

beforeEach(async () => {
  d = await tempDir();
  env = cliEnv(d.path, 'first-secret');
  expect((await cairn(['init', ...FAST], { env })).code).toBe(0);
});
afterEach(() => d.cleanup());

async function passwordFile(name: string, password: string): Promise<string> {
  const path = join(d.path, name);
  await writeFile(path, `${password}\n`);
  return path;
}

describe('cairn key', () => {
  it('adds a second password, lists both, and removes one', async () => {
    const second = await passwordFile('pw2', 'second-secret');
    const add = await cairn(['key', 'add', ...FAST, '--new-password-file', second], { env });
    expect(add.code).toBe(0);
    const list = await cairn(['key', 'list', '--json'], { env });
    const keys = JSON.parse(list.stdout) as { id: string; current: boolean }[];
    expect(keys).toHaveLength(2);
    expect(keys.filter((k) => k.current)).toHaveLength(1);

    const withSecond = { ...env, CAIRN_PASSWORD: 'second-secret' };
    expect((await cairn(['stats'], { env: withSecond })).code).toBe(0);

    const current = keys.find((k) => k.current)!.id;
    const refused = await cairn(['key', 'remove', current.slice(0, 8)], { env });
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/^cairn: refusing to remove the key in use/);

    const other = keys.find((k) => !k.current)!.id;
    expect((await cairn(['key', 'remove', other.slice(0, 8)], { env })).code).toBe(0);
    expect((await cairn(['stats'], { env: withSecond })).code).toBe(12);
  });

  it('changes the password in use', async () => {
    const next = await passwordFile('pw-next', 'next-secret');
    const r = await cairn(['key', 'passwd', ...FAST, '--new-password-file', next], { env });
    expect(r.code).toBe(0);
    expect((await cairn(['stats'], { env })).code).toBe(12);
    expect((await cairn(['stats'], { env: { ...env, CAIRN_PASSWORD: 'next-secret' } })).code).toBe(
      0,
    );
    expect(await readdir(join(d.path, 'repo', 'keys'))).toHaveLength(1);
  });

  it('creates repository files 0600 and directories 0700, and never stores the password', async () => {
    const src = join(d.path, 'src');
    await import('node:fs/promises').then((fs) => fs.mkdir(src));
    await writeFile(join(src, 'a.txt'), 'hello');
    const backup = await cairn(['backup', src, '--json'], { env });
    expect(backup.code).toBe(0);
    // Every command's output, in both forms, and the errors of a wrong password.
    const runs = [
      backup,
      await cairn(['backup', src], { env }),
      await cairn(['snapshots'], { env }),
      await cairn(['snapshots', '--json'], { env }),
      await cairn(['ls', 'latest', '-l'], { env }),
      await cairn(['ls', 'latest', '--json'], { env }),
      await cairn(['cat', 'latest', join(src, 'a.txt')], { env }),
      await cairn(['diff', 'latest', src, '--json'], { env }),
      await cairn(['restore', 'latest', '--target', join(d.path, 'r'), '--json'], { env }),
      await cairn(['stats', '--json'], { env }),
      await cairn(['check', '--read-data'], { env }),
      await cairn(['key', 'list', '--json'], { env }),
      await cairn(['stats'], { env: { ...env, CAIRN_PASSWORD: 'wrong-first-secret' } }),
    ];
    for (const r of runs) expect(r.stdout + r.stderr).not.toContain('first-secret');
    const walk = async (dir: string): Promise<void> => {
      for (const e of await readdir(dir, { withFileTypes: true })) {
        const p = join(dir, e.name);
        const mode = (await stat(p)).mode & 0o777;
        expect(mode, p).toBe(e.isDirectory() ? 0o700 : 0o600);
        if (e.isDirectory()) await walk(p);
        else {
          const bytes = await import('node:fs/promises').then((fs) => fs.readFile(p));
          expect(bytes.includes(Buffer.from('first-secret')), p).toBe(false);
        }
      }
    };
    await walk(join(d.path, 'repo'));
  });

  it('never shows a password in any output, the repository or the cache, however given', async () => {
    const secrets = ['first-secret', 'second-secret', 'third-secret'];
    const first = await passwordFile('pw1', 'first-secret');
    const second = await passwordFile('pw2', 'second-secret');
    const third = await passwordFile('pw3', 'third-secret');
    const wrong = await passwordFile('pw-wrong', 'wrong-first-secret');
    // The password from a file (env or flag), never from argv or CAIRN_PASSWORD here.
    const { CAIRN_PASSWORD: _, ...base } = env;
    const withFile = { ...base, CAIRN_PASSWORD_FILE: first };
    const disk = join(d.path, 'disk.img');
    await writeFile(disk, Buffer.concat([randomBytes(200_000), Buffer.alloc(300_000)]));
    const image = await cairn(['image', disk, '--json'], { env: withFile });
    expect(image.code, image.stderr).toBe(0);
    const snap = (JSON.parse(image.stdout.trim().split('\n').at(-1)!) as { snapshot_id: string })
      .snapshot_id;
    const run = (args: string[], e = withFile) => cairn(args, { env: e });
    const runs = [
      image,
      await cairn(['image', '-', '--name', 'piped'], { env: withFile, input: randomBytes(50_000) }),
      await run(['ls', snap, '--json']),
      await run(['cat', snap]),
      await run(['restore', snap, '--target', join(d.path, 'restored.img'), '--verify', '--json']),
      await run(['diff', snap, 'latest', '--json']),
      await run(['key', 'add', ...FAST, '--new-password-file', second]),
      await run([
        '--password-file',
        second,
        'key',
        'passwd',
        ...FAST,
        '--new-password-file',
        third,
      ]),
      await run(['key', 'list', '--json'], { ...base, CAIRN_PASSWORD_FILE: third }),
      await run(['check', '--read-data'], { ...base, CAIRN_PASSWORD_FILE: third }),
      await run(['stats'], { ...base, CAIRN_PASSWORD_FILE: wrong }),
    ];
    expect(runs.map((r) => r.code)).toEqual([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12]);
    for (const r of runs) {
      for (const secret of secrets) expect(r.stdout + r.stderr).not.toContain(secret);
    }
    const grep = async (dir: string): Promise<void> => {
      for (const e of await readdir(dir, { withFileTypes: true })) {
        const p = join(dir, e.name);
        if (e.isDirectory()) await grep(p);
        else if (e.isFile()) {
          const bytes = await readFile(p);
          for (const secret of secrets) expect(bytes.includes(Buffer.from(secret)), p).toBe(false);
        }
      }
    };
    expect(await readdir(env.CAIRN_CACHE_DIR!)).not.toEqual([]);
    await grep(env.CAIRN_REPO!);
    await grep(env.CAIRN_CACHE_DIR!);
  });
});
