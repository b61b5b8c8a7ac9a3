import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ext4Image, type FTree, writeTree } from '../diff/fs-trees.js';
import { hasCommand } from '../fs/util.js';
import { type TempDir, tempDir } from '../helpers.js';
import { cairn, cliEnv, FAST_KDF_FLAGS } from './run.js';

const SMALL = ['--chunk-min', '2K', '--chunk-avg', '8K', '--chunk-max', '32K'];
const NO_MKE2FS = !hasCommand('mke2fs');
/** A dozen cairn runs on a loaded two-core machine. */
const SLOW = 180_000;

const A: FTree = {
  'keep.txt': { kind: 'file', data: 'the same on both sides' },
  'edit.bin': { kind: 'file', data: 'a'.repeat(5000) },
  'mode.txt': { kind: 'file', data: 'mode changes' },
  'gone.txt': { kind: 'file', data: 'bye' },
  sub: { kind: 'dir', children: { 'inner.txt': { kind: 'file', data: 'x' } } },
};
const B: FTree = {
  ...A,
  'edit.bin': { kind: 'file', data: 'b'.repeat(5000) },
  'mode.txt': { kind: 'file', data: 'mode changes', mode: 0o600 },
  'new.txt': { kind: 'file', data: 'hello' },
  sub: {
    kind: 'dir',
    children: {
      'inner.txt': { kind: 'file', data: 'x' },
      deeper: { kind: 'dir', children: { f: { kind: 'file', data: 'f' } } },
    },
  },
};
delete B['gone.txt'];

const CHANGES = [
  ['M', '/edit.bin'],
  ['-', '/gone.txt'],
  ['U', '/mode.txt'],
  ['+', '/new.txt'],
  ['+', '/sub/deeper/'],
  ['+', '/sub/deeper/f'],
];

let d: TempDir;
let env: Record<string, string>;
const ids: Record<'imageA' | 'imageB' | 'random' | 'filesA' | 'filesB', string> = {
  imageA: '',
  imageB: '',
  random: '',
  filesA: '',
  filesB: '',
};

async function ok(args: string[]) {
  const r = await cairn(args, { env });
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  return r;
}

/** The ID of the snapshot a command just saved (the newest). */
async function newest(): Promise<string> {
  const list = JSON.parse((await ok(['snapshots', '--json'])).stdout) as { id: string }[];
  return list.at(-1)!.id;
}

const lines = (s: string) => s.split('\n').filter(Boolean);
const json = (s: string) => lines(s).map((l) => JSON.parse(l) as Record<string, unknown>);

beforeAll(async () => {
  if (NO_MKE2FS) return;
  d = await tempDir();
  env = cliEnv(d.path);
  await ok(['init', ...FAST_KDF_FLAGS, ...SMALL]);
  for (const [side, tree] of [
    ['A', A],
    ['B', B],
  ] as const) {
    const src = join(d.path, `src${side}`);
    await writeTree(src, tree);
    await ok(['image', await ext4Image(d.path, `${side}.img`, src), '--name', 'disk']);
    ids[`image${side}`] = await newest();
    await ok(['backup', src]);
    ids[`files${side}`] = await newest();
  }
  await writeFile(join(d.path, 'random.img'), randomBytes(200_000));
  await ok(['image', join(d.path, 'random.img')]);
  ids.random = await newest();
}, SLOW);
afterAll(() => d?.cleanup());

describe.skipIf(NO_MKE2FS)('cairn diff --files (needs mke2fs)', () => {
  it(
    'lists the files that differ inside two ext4 images as a file snapshot diff does',
    async () => {
      const short = (id: string) => id.slice(0, 8);
      const text = lines((await ok(['diff', '--files', ids.imageA, ids.imageB])).stdout);
      expect(text[0]).toMatch(
        new RegExp(
          `^comparing files in image snapshot ${short(ids.imageA)} \\(disk, 8\\.00 MiB\\) ` +
            `to ${short(ids.imageB)} \\(disk, 8\\.00 MiB\\):$`,
        ),
      );
      expect(text.slice(1, 1 + CHANGES.length)).toEqual(
        CHANGES.map(([m, p]) => `${m!.padEnd(5)}${p}`),
      );
      expect(text.slice(1 + CHANGES.length)).toEqual([
        'Files:           2 new,     1 removed,     1 changed',
        'Dirs:            1 new,     0 removed',
        'Others:          0 new,     0 removed,     0 changed',
        'Metadata:        1 changed',
        'Types:           0 changed',
        'Chunks:          0 new,     0 removed',
        '  Added:   6 B',
        '  Removed: 3 B',
      ]);

      const out = json((await ok(['diff', '--files', '--json', ids.imageA, ids.imageB])).stdout);
      expect(out.slice(0, -1)).toEqual(
        CHANGES.map(([modifier, path]) => ({ message_type: 'change', modifier, path })),
      );
      expect(out.at(-1)).toMatchObject({
        message_type: 'summary',
        source_snapshot: ids.imageA,
        target_snapshot: ids.imageB,
        files_added: 2,
        files_removed: 1,
        files_changed: 1,
        dirs_added: 1,
        metadata_changed: 1,
        added_bytes: 6,
        removed_bytes: 3,
        errors: 0,
      });
      // The summary has the fields of a file snapshot diff's, and no others.
      const files = json((await ok(['diff', '--json', ids.filesA, ids.filesB])).stdout);
      expect(Object.keys(out.at(-1)!).sort()).toEqual(Object.keys(files.at(-1)!).sort());

      const same = json((await ok(['diff', '--files', '--json', ids.imageA, ids.imageA])).stdout);
      expect(same).toEqual([expect.objectContaining({ message_type: 'summary', errors: 0 })]);
      const quiet = await ok(['diff', '--files', '-q', ids.imageA, ids.imageB]);
      expect(lines(quiet.stdout)[0]).toMatch(/^Files: /);
    },
    SLOW,
  );

  it(
    'refuses file snapshots, unknown filesystems and --ranges with --files',
    async () => {
      const mixed = await cairn(['diff', '--files', ids.filesA, ids.imageB], { env });
      expect(mixed.code).toBe(1);
      expect(mixed.stderr).toMatch(/^cairn: cannot compare snapshots of different kinds/);
      const files = await cairn(['diff', '--files', ids.filesA, ids.filesB], { env });
      expect(files.code).toBe(1);
      expect(files.stderr).toMatch(/--files applies to image snapshots only/);
      const unknown = await cairn(['diff', '--files', ids.imageA, ids.random], { env });
      expect(unknown.code).toBe(1);
      expect(unknown.stderr).toMatch(
        new RegExp(
          `^cairn: no readable filesystem in image snapshot ${ids.random.slice(0, 8)}: ` +
            'no filesystem cairn can read',
        ),
      );
      const both = await cairn(['diff', '--files', '--ranges', ids.imageA, ids.imageB], { env });
      expect(both.code).toBe(1);
      expect(both.stderr).toMatch(/--ranges and --files cannot be combined/);
    },
    SLOW,
  );
});
