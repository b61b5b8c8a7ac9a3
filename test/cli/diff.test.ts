import { randomBytes } from 'node:crypto';
import { chmod, mkdir, open, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { formatBytes } from '../../src/cli/output.js';
import { type TempDir, tempDir } from '../helpers.js';
import { cairn, type RunOptions } from './run.js';

const FAST = ['--kdf-memory', '1', '--kdf-time', '1'];
const SMALL = ['--chunk-min', '2K', '--chunk-avg', '8K', '--chunk-max', '32K'];
/** Each test starts cairn a dozen times; on a loaded two-core machine that takes a while. */
const SLOW = 120_000;

let d: TempDir;
let env: Record<string, string>;
let src: string;
beforeEach(async () => {
  d = await tempDir();
  src = join(d.path, 'src');
  await mkdir(src);
  env = {
    CAIRN_REPO: join(d.path, 'repo'),
    CAIRN_PASSWORD: 'secret',
    CAIRN_CACHE_DIR: join(d.path, 'cache'),
  };
  expect((await cairn(['init', ...FAST, ...SMALL], { env })).code).toBe(0);
});
afterEach(() => d.cleanup());

async function ok(args: string[], opts: RunOptions = {}) {
  const r = await cairn(args, { env, ...opts });
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

describe('cairn diff of file snapshots', () => {
  it(
    'prints restic-style markers and a summary, or JSON lines',
    async () => {
      await mkdir(join(src, 'gone/deeper'), { recursive: true });
      await writeFile(join(src, 'gone/deeper/f'), 'f');
      await writeFile(join(src, 'edit'), 'before');
      await writeFile(join(src, 'perm'), 'p');
      await writeFile(join(src, 'kind'), 'k');
      // The directory's mtime moves with every add and remove; pinned, it shows no `U`.
      const then = new Date(2020, 0, 1);
      await utimes(src, then, then);
      await ok(['backup', src]);
      const a = await newest();
      await rm(join(src, 'gone'), { recursive: true });
      await writeFile(join(src, 'edit'), 'after, longer');
      await chmod(join(src, 'perm'), 0o600);
      await rm(join(src, 'kind'));
      await symlink('edit', join(src, 'kind'));
      await writeFile(Buffer.from(`${src}/caf\xe9`, 'latin1'), 'new file');
      await utimes(src, then, then);
      await ok(['backup', src]);
      const b = await newest();

      // The directories above src are in the snapshots too, and other tests create and
      // remove entries in them meanwhile: their `U` lines come and go.
      const above = (line: string) => /^U {4}\/.*\/$/.test(line) && src.startsWith(line.slice(5));
      const text = lines((await ok(['diff', a.slice(0, 8), b])).stdout);
      const moved = text.filter(above).length;
      expect(text.filter((l) => !above(l))).toEqual([
        `comparing snapshot ${a.slice(0, 8)} to ${b.slice(0, 8)}:`,
        `+    ${src}/caf\\xe9`,
        `M    ${src}/edit`,
        `-    ${src}/gone/`,
        `-    ${src}/gone/deeper/`,
        `-    ${src}/gone/deeper/f`,
        `T    ${src}/kind`,
        `U    ${src}/perm`,
        'Files:           1 new,     1 removed,     1 changed',
        'Dirs:            0 new,     2 removed',
        'Others:          0 new,     0 removed,     0 changed',
        `Metadata:    ${String(1 + moved).padStart(5)} changed`,
        'Types:           1 changed',
        'Chunks:          2 new,     3 removed',
        `  Added:   ${8 + 13} B`, // caf\xe9, and edit's new chunk
        `  Removed: ${6 + 1 + 1} B`, // edit's old chunk, gone/deeper/f, and kind the file
      ]);

      const all = json((await ok(['diff', '--json', a, b])).stdout);
      const out = all.filter((l) => !(l.modifier === 'U' && src.startsWith(l.path as string)));
      expect(out.slice(0, 3)).toEqual([
        {
          message_type: 'change',
          modifier: '+',
          path: `${src}/caf\\xe9`,
          path_bytes: Buffer.from(`${src}/caf\xe9`, 'latin1').toString('base64'),
        },
        { message_type: 'change', modifier: 'M', path: `${src}/edit` },
        { message_type: 'change', modifier: '-', path: `${src}/gone/` },
      ]);
      expect(out).toHaveLength(7 + 1);
      expect(out.at(-1)).toEqual({
        message_type: 'summary',
        source_snapshot: a,
        target_snapshot: b,
        files_added: 1,
        files_removed: 1,
        files_changed: 1,
        dirs_added: 0,
        dirs_removed: 2,
        others_added: 0,
        others_removed: 0,
        others_changed: 0,
        metadata_changed: 1 + all.length - out.length,
        types_changed: 1,
        added_bytes: 21,
        removed_bytes: 8,
        chunks_added: 2,
        chunks_removed: 3,
        errors: 0,
      });

      const quiet = await ok(['diff', '-q', a, b]);
      expect(lines(quiet.stdout)[0]).toMatch(/^Files: +1 new/);
    },
    SLOW,
  );
});

describe('cairn diff REF PATH…', () => {
  it(
    'shows what changed on disk; --content tells a touch from a change',
    async () => {
      await mkdir(join(src, 'docs'));
      await writeFile(join(src, 'docs/a.txt'), 'alpha');
      await writeFile(join(src, 'docs/b.txt'), 'beta');
      await writeFile(join(src, 'docs/c.txt'), 'gamma');
      await ok(['backup', src]);
      await writeFile(join(src, 'docs/a.txt'), 'ALPHA');
      const later = new Date(Date.now() + 60_000);
      await utimes(join(src, 'docs/b.txt'), later, later);
      await rm(join(src, 'docs/c.txt'));
      await writeFile(join(src, 'docs/d.txt'), 'delta');

      // A relative path is resolved against the working directory, as backup stores it.
      const quick = await ok(['diff', 'latest', 'src/docs'], { cwd: d.path });
      expect(lines(quick.stdout).slice(0, 6)).toEqual([
        expect.stringMatching(/^comparing snapshot [0-9a-f]{8} to live paths:$/),
        `U    ${src}/docs/`,
        `M    ${src}/docs/a.txt`,
        `M    ${src}/docs/b.txt`,
        `-    ${src}/docs/c.txt`,
        `+    ${src}/docs/d.txt`,
      ]);
      const read = json((await ok(['diff', 'latest', src, '--content', '--json'])).stdout);
      expect(read.slice(0, -1).map((c) => `${c.modifier} ${c.path}`)).toEqual([
        `U ${src}/docs/`,
        `M ${src}/docs/a.txt`,
        `U ${src}/docs/b.txt`,
        `- ${src}/docs/c.txt`,
        `+ ${src}/docs/d.txt`,
      ]);
      expect(read.at(-1)).toMatchObject({
        message_type: 'summary',
        target_paths: [src],
        files_added: 1,
        files_removed: 1,
        files_changed: 1,
        metadata_changed: 2,
        added_bytes: 5 + 5,
        removed_bytes: 5 + 5,
      });
    },
    SLOW,
  );
});

describe('cairn diff of image snapshots', () => {
  it(
    'lists changed ranges and counts chunks',
    async () => {
      const disk = join(d.path, 'disk.img');
      const data = randomBytes(2 << 20);
      await writeFile(disk, data);
      await ok(['image', disk]);
      const a = await newest();
      // 14 edits far enough apart (140 kB, over 4 chunks of the largest size) to stay apart.
      const edits = Array.from({ length: 14 }, (_, i) => 20_000 + i * 140_000);
      const fh = await open(disk, 'r+');
      for (const off of edits) await fh.write(randomBytes(4096), 0, 4096, off);
      await fh.close();
      await ok(['image', disk]);
      const b = await newest();

      const out = json((await ok(['diff', '--json', a, b])).stdout);
      const ranges = out.filter((l) => l.message_type === 'range') as {
        offset: number;
        length: number;
      }[];
      expect(ranges).toHaveLength(edits.length);
      for (const [i, off] of edits.entries()) {
        expect(ranges[i]!.offset).toBeLessThanOrEqual(off);
        expect(ranges[i]!.offset + ranges[i]!.length).toBeGreaterThanOrEqual(off + 4096);
      }
      const summary = out.at(-1)!;
      expect(summary).toMatchObject({
        message_type: 'summary',
        source_snapshot: a,
        target_snapshot: b,
        changed_bytes: ranges.reduce((s, r) => s + r.length, 0),
        ranges: edits.length,
        size_a: data.length,
        size_b: data.length,
        partitions: [],
      });
      expect(summary.changed_chunks as number).toBeGreaterThanOrEqual(edits.length);

      const text = lines((await ok(['diff', a, b])).stdout);
      const what = (id: string) => `${id.slice(0, 8)} (disk.img, 2.00 MiB)`;
      expect(text[0]).toBe(`comparing image snapshot ${what(a)} to ${what(b)}:`);
      const rangeLines = ranges.map((r) => `  at ${r.offset}: ${r.length} bytes`);
      expect(text.slice(1, 11).map((l) => l.replace(/ \(.*\)$/, ''))).toEqual(
        rangeLines.slice(0, 10),
      );
      expect(text[11]).toBe('  … and 4 more ranges (--ranges lists them all)');
      expect(text[12]).toBe(
        `Changed:  ${formatBytes(summary.changed_bytes as number)} (${summary.changed_bytes} bytes) in 14 ranges`,
      );
      const all = lines((await ok(['diff', '--ranges', a, b])).stdout);
      expect(all.filter((l) => l.startsWith('  at '))).toHaveLength(14);
      expect(all.some((l) => l.includes('more ranges'))).toBe(false);

      const files = await cairn(['diff', '--files', a, b], { env });
      expect(files.code).toBe(1);
      expect(files.stderr).toMatch(/no readable filesystem in image snapshot/);
    },
    SLOW,
  );
});

describe('cairn diff errors', () => {
  it(
    'refuses mixed kinds, unknown references and flags that do not apply',
    async () => {
      await writeFile(join(src, 'f'), 'f');
      await ok(['backup', src]);
      const files = await newest();
      await writeFile(join(d.path, 'disk.img'), randomBytes(100_000));
      await ok(['image', join(d.path, 'disk.img')]);
      const image = await newest();

      const mixed = await cairn(['diff', files, image], { env });
      expect(mixed.code).toBe(1);
      expect(mixed.stderr).toMatch(/^cairn: cannot compare snapshots of different kinds/);
      const unknown = await cairn(['diff', files, 'beef'], { env });
      expect(unknown.code).toBe(1);
      expect(unknown.stderr).toMatch(/no snapshot with ID beef/);
      const liveImage = await cairn(['diff', image, src], { env });
      expect(liveImage.code).toBe(1);
      expect(liveImage.stderr).toMatch(/live paths can only be compared with a file snapshot/);
      const content = await cairn(['diff', '--content', files, files], { env });
      expect(content.code).toBe(1);
      expect(content.stderr).toMatch(/--content applies to live paths only/);
      const ranges = await cairn(['diff', '--ranges', files, files], { env });
      expect(ranges.code).toBe(1);
      expect(ranges.stderr).toMatch(/--ranges applies to image snapshots only/);
      const missing = await cairn(['diff', files], { env });
      expect(missing.code).toBe(1);
      const nowhere = await cairn(['diff', files, join(d.path, 'nothing-here')], { env });
      expect(nowhere.code).toBe(1);
      expect(nowhere.stderr).toMatch(/neither in the snapshot nor on disk/);
      const same = await ok(['diff', files, files, '--json']);
      expect(json(same.stdout)).toEqual([expect.objectContaining({ message_type: 'summary' })]);
    },
    SLOW,
  );
});
