import { randomBytes } from 'node:crypto';
import { mkdir, open, readdir, readFile, readlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { shortHex } from '../../src/errors.js';
import { cairn } from '../cli/run.js';
import { type TempDir, tempDir } from '../helpers.js';
import { backupJson, detachAllUnder, MountProcess, noFuse, titled, waitFor } from './util.js';

let d: TempDir;
let env: Record<string, string>;
let mount: MountProcess;

beforeAll(async () => {
  if (noFuse) return;
  d = await tempDir();
  env = { CAIRN_REPO: join(d.path, 'repo'), CAIRN_CACHE_DIR: join(d.path, 'cache') };
  const init = ['init', '--no-encryption', '--chunk-min', '4K', '--chunk-avg', '16K'];
  expect((await cairn(init, { env })).code).toBe(0);
  await mkdir(join(d.path, 'mnt'));
});

afterAll(async () => {
  if (noFuse) return;
  await MountProcess.stopAll();
  await detachAllUnder(d.path);
  await d.cleanup();
});

describe.skipIf(noFuse)(titled('cairn mount while backups run'), () => {
  it('stays readable during a backup by another process, then shows its snapshot', async () => {
    const before = join(d.path, 'before');
    await mkdir(before);
    const old = randomBytes(6 << 20);
    await writeFile(join(before, 'old.bin'), old);
    const oldId = await backupJson(env, [before]);
    mount = await MountProcess.start(env, join(d.path, 'mnt'));

    const after = join(d.path, 'after');
    await mkdir(after);
    const fresh = randomBytes(24 << 20);
    await writeFile(join(after, 'new.bin'), fresh);
    const fh = await open(join(mount.dir, 'ids', shortHex(oldId), before, 'old.bin'), 'r');
    let reads = 0;
    try {
      let done = false;
      const backup = backupJson(env, [after]).finally(() => {
        done = true;
      });
      // Random reads through the mount for as long as the backup runs.
      while (!done) {
        const offset = Math.floor(Math.random() * (old.length - 65536));
        const buf = Buffer.alloc(65536);
        await fh.read(buf, 0, buf.length, offset);
        expect(buf.equals(old.subarray(offset, offset + buf.length))).toBe(true);
        reads++;
      }
      const newId = await backup;
      expect(reads).toBeGreaterThan(0);

      // Appears without remounting; its blobs, new to the repository, are found.
      const ids = join(mount.dir, 'ids');
      await waitFor(async () => (await readdir(ids)).includes(shortHex(newId)), 'the snapshot');
      const shown = await readFile(join(ids, shortHex(newId), after, 'new.bin'));
      expect(shown.equals(fresh)).toBe(true);
      expect(await readlink(join(mount.dir, 'snapshots/latest'))).toMatch(shortHex(newId));
    } finally {
      await fh.close();
    }
    expect(mount.exitCode).toBeUndefined();
  });
});
