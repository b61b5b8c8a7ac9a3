import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type TempDir, tempDir } from '../helpers.js';
import { CAIRN, cairn } from './run.js';

let d: TempDir;
let env: Record<string, string>;
let source: string;
let data: Buffer;
beforeAll(async () => {
  d = await tempDir();
  env = { CAIRN_REPO: join(d.path, 'repo'), CAIRN_CACHE_DIR: join(d.path, 'cache') };
  const init = await cairn(
    ['init', '--no-encryption', '--chunk-min', '2K', '--chunk-avg', '8K', '--chunk-max', '32K'],
    { env },
  );
  expect(init.code).toBe(0);
  data = Buffer.concat([randomBytes(300_000), Buffer.alloc(1 << 20), randomBytes(200_000)]);
  source = join(d.path, 'disk.img');
  await writeFile(source, data);
});
afterAll(() => d.cleanup());

function jsonLines(stdout: string): Record<string, unknown>[] {
  return stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

describe('cairn image', () => {
  it('--json prints status lines, then the summary', async () => {
    const r = await cairn(['image', source, '--json', '--tag', 'a', '--tag', 'b', '--host', 'h1'], {
      env,
    });
    expect(r.code, r.stderr).toBe(0);
    const lines = jsonLines(r.stdout);
    const summary = lines.at(-1)!;
    expect(lines.slice(0, -1).length).toBeGreaterThan(0);
    for (const l of lines.slice(0, -1)) expect(l.message_type).toBe('status');
    expect(summary).toMatchObject({
      message_type: 'summary',
      snapshot_id: expect.stringMatching(/^[0-9a-f]{64}$/),
      size: data.length,
      bytes_read: data.length,
      zero_bytes: expect.any(Number),
      chunks_total: expect.any(Number),
      chunks_new: expect.any(Number),
      data_added: expect.any(Number),
      total_duration: expect.any(Number),
    });
    expect(summary.zero_bytes).toBeGreaterThanOrEqual(1 << 19);
    expect(summary.chunks_new).toBe(summary.chunks_total);

    const list = await cairn(['snapshots', '--json'], { env });
    const snaps = JSON.parse(list.stdout) as Record<string, unknown>[];
    expect(snaps.find((s) => s.id === summary.snapshot_id)).toMatchObject({
      kind: 'image',
      name: 'disk.img',
      hostname: 'h1',
      tags: ['a', 'b'],
      size: data.length,
    });

    const again = jsonLines(
      (await cairn(['image', source, '--json', '--host', 'h1'], { env })).stdout,
    );
    expect(again.at(-1)).toMatchObject({
      chunks_new: 0,
      parent: summary.snapshot_id,
      changed_bytes: 0,
    });
  });

  it('prints a human summary, and reads stdin with --name', async () => {
    const r = await cairn(['image', '-', '--name', 'piped'], { env, input: data });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/image piped: /);
    expect(r.stdout).toMatch(/snapshot [0-9a-f]{8} saved/);
    const noName = await cairn(['image', '-'], { env });
    expect(noName.code).toBe(1);
    expect(noName.stderr).toMatch(/^cairn: .*needs --name/);
  });

  it('fails with exit 1 for a missing source', async () => {
    const r = await cairn(['image', join(d.path, 'nope')], { env });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^cairn: ENOENT/);
  });

  it('stops cleanly on SIGINT with exit 130, saving nothing and leaving no lock', async () => {
    const list = (dir: string) => readdir(join(d.path, 'repo', dir)).catch(() => []);
    const before = (await list('snapshots')).length;
    const child = spawn(process.execPath, [CAIRN, 'image', '-', '--name', 'endless'], {
      env: { PATH: process.env.PATH ?? '', ...env },
    });
    const stderr: Buffer[] = [];
    child.stderr.on('data', (b: Buffer) => stderr.push(b));
    const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
    child.stdin.on('error', () => undefined);
    child.stdin.write(randomBytes(2 << 20));
    // Interrupt once the backup holds its lock, i.e. is under way; stdin stays open.
    while ((await list('locks')).length === 0) {
      await new Promise((r) => setTimeout(r, 20));
    }
    child.kill('SIGINT');
    expect(await exited, Buffer.concat(stderr).toString()).toBe(130);
    expect(Buffer.concat(stderr).toString()).toMatch(/^cairn: interrupted/m);
    expect(await list('locks')).toEqual([]);
    expect((await list('snapshots')).length).toBe(before);
  });

  it('cat streams the whole image to stdout', async () => {
    const r = await cairn(['image', source, '--json', '--name', 'for-cat'], { env });
    const id = jsonLines(r.stdout).at(-1)!.snapshot_id as string;
    const cat = await cairn(['cat', id.slice(0, 8)], { env });
    expect(cat.code, cat.stderr).toBe(0);
    expect(cat.stdoutBytes.equals(data)).toBe(true);
  });
});
