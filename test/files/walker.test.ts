import { appendFile, lstat, mkdir, open, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setAttribute } from 'fs-xattr';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Chunker, gearTable } from '../../src/chunker/index.js';
import { pathForest } from '../../src/files/archiver.js';
import { readBufferPool, readChunks } from '../../src/files/content.js';
import { Excludes } from '../../src/files/excludes.js';
import { foldId, listDir, OwnerNames, SourceError } from '../../src/files/fsmeta.js';
import { readXattrs } from '../../src/files/xattrs.js';
import { ChunkerFeed } from '../../src/repo/shared-buffers.js';
import { type TempDir, tempDir } from '../helpers.js';

let d: TempDir;
beforeEach(async () => {
  d = await tempDir();
});
afterEach(() => d.cleanup());

const b = (s: string) => Buffer.from(s);
const names = (entries: { name: Buffer }[]) => entries.map((e) => e.name.toString('latin1'));

describe('listDir', () => {
  it('lists by name bytes with lstat results, not following symlinks', async () => {
    await writeFile(join(d.path, 'b'), 'x');
    await writeFile(join(d.path, 'B'), 'x');
    await writeFile(Buffer.concat([b(`${d.path}/`), Buffer.from([0xff])]), '');
    await mkdir(join(d.path, 'a'));
    await symlink('a', join(d.path, 'link'));
    const { entries, failed } = await listDir(b(d.path));
    expect(failed).toEqual([]);
    expect(names(entries)).toEqual(['B', 'a', 'b', 'link', '\xff']);
    const kinds = Object.fromEntries(entries.map((e) => [e.name.toString('latin1'), e.kind]));
    expect(kinds).toMatchObject({ a: 'dir', b: 'file', link: 'symlink' });
    expect(entries[0]!.path).toEqual(b(join(d.path, 'B')));
  });

  it('leaves out excluded entries, directory-only patterns only for directories', async () => {
    await mkdir(join(d.path, 'cache'));
    await writeFile(join(d.path, 'cache.txt'), '');
    await mkdir(join(d.path, 'logs'));
    await writeFile(join(d.path, 'logs2'), '');
    await writeFile(join(d.path, 'x.log'), '');
    const ex = await Excludes.load(['*.log', 'logs/', `${d.path}/cache`]);
    expect(names((await listDir(b(d.path), ex)).entries)).toEqual(['cache.txt', 'logs2']);
  });

  it('throws a SourceError for a directory that does not exist', async () => {
    const err = await listDir(b(join(d.path, 'nope'))).catch((e) => e);
    expect(err).toBeInstanceOf(SourceError);
    expect(err).toMatchObject({
      reason: 'ENOENT',
      message: expect.stringMatching(/^cannot read /),
    });
  });
});

describe('Excludes', () => {
  it('anchors patterns with a slash at the filesystem root and matches others at any depth', async () => {
    const ex = (await Excludes.load(['/home/u/tmp', 'node_modules/', '*.o', '!keep.o']))!;
    expect(ex.excludes(b('/home/u/tmp'), true)).toBe(true);
    expect(ex.excludes(b('/srv/home/u/tmp'), true)).toBe(false);
    expect(ex.excludes(b('/a/b/node_modules'), true)).toBe(true);
    expect(ex.excludes(b('/a/b/node_modules'), false)).toBe(false);
    expect(ex.excludes(b('/x/y.o'), false)).toBe(true);
    expect(ex.excludes(b('/x/keep.o'), false)).toBe(false);
    expect(ex.excludes(b('/x/Y.O'), false)).toBe(false);
  });

  it('reads exclude files with comments and blank lines', async () => {
    const f = join(d.path, 'ex');
    await writeFile(f, '# comment\n\n*.tmp\r\nbuild/\n');
    const ex = (await Excludes.load([], [f]))!;
    expect(ex.excludes(b('/p/a.tmp'), false)).toBe(true);
    expect(ex.excludes(b('/p/build'), true)).toBe(true);
    expect(ex.excludes(b('/p/# comment'), false)).toBe(false);
    expect(await Excludes.load([], [])).toBeUndefined();
    await expect(Excludes.load([], [join(d.path, 'missing')])).rejects.toThrow(/exclude file/);
  });

  it('matches names that are not UTF-8 in their \\xNN form', async () => {
    const ex = (await Excludes.load(['bad*']))!;
    expect(ex.excludes(Buffer.concat([b('/d/bad'), Buffer.from([0xfe])]), false)).toBe(true);
  });
});

describe('pathForest', () => {
  it('merges paths into one tree from / and drops paths inside others', () => {
    const root = pathForest(['/a/b/c', '/a/d', '/a/b/c/e', '/z']);
    const show = (n: typeof root): unknown =>
      Object.fromEntries(
        n.children.map((c) => [c.name.toString() + (c.given ? '*' : ''), show(c)]),
      );
    expect(show(root)).toEqual({ a: { b: { 'c*': {} }, 'd*': {} }, 'z*': {} });
    expect(root.children[0]!.children[0]!.path).toEqual(b('/a/b'));
    expect(pathForest(['/', '/a']).given).toBe(true);
  });
});

describe('readChunks', () => {
  const table = gearTable(Buffer.alloc(32, 7));
  const params = { min: 64, avg: 256, max: 1024 };
  const feed = () => new ChunkerFeed(readBufferPool(1), new Chunker(params, table));

  it('hands over every byte in order and reports an unchanged file', async () => {
    const f = join(d.path, 'f');
    const data = Buffer.from(Array.from({ length: 5000 }, (_, i) => (i * 31) % 251));
    await writeFile(f, data);
    const st = await lstat(f, { bigint: true });
    const got: Buffer[] = [];
    const read = await readChunks(b(f), st, feed(), async (c) => {
      got.push(Buffer.from(c));
    });
    expect(read).toEqual({ size: 5000, changed: false });
    expect(got.length).toBeGreaterThan(3);
    expect(Buffer.concat(got)).toEqual(data);
  });

  it('reports a file that changed since it was lstat-ed and stores what it read', async () => {
    const f = join(d.path, 'f');
    await writeFile(f, 'first');
    const st = await lstat(f, { bigint: true });
    await appendFile(f, ' and more');
    const got: Buffer[] = [];
    const read = await readChunks(b(f), st, feed(), async (c) => {
      got.push(Buffer.from(c));
    });
    expect(read).toEqual({ size: 14, changed: true });
    expect(Buffer.concat(got).toString()).toBe('first and more');
  });

  it('fails with a SourceError when the file is gone', async () => {
    const f = join(d.path, 'f');
    await writeFile(f, 'x');
    const st = await lstat(f, { bigint: true });
    await rm(f);
    const noop = async () => {};
    await expect(readChunks(b(f), st, feed(), noop)).rejects.toMatchObject({
      reason: 'ENOENT',
    });
  });
});

describe('readXattrs', () => {
  it('returns user xattrs sorted by name, also for a path that is not UTF-8', async () => {
    const plain = join(d.path, 'plain');
    await writeFile(plain, '');
    const supported = await setAttribute(plain, 'user.z', 'last').then(
      () => true,
      () => false,
    );
    if (!supported) return; // no user xattrs on this filesystem: nothing to check
    await setAttribute(plain, 'user.a', 'first');
    const pairs = (xs: { name: Buffer; value: Buffer }[]) =>
      xs.map((x) => [x.name.toString(), x.value.toString()]);
    expect(pairs(readXattrs(b(plain), 'file'))).toEqual([
      ['user.a', 'first'],
      ['user.z', 'last'],
    ]);
    expect(readXattrs(b(plain), 'symlink')).toEqual([]);

    const odd = Buffer.concat([b(`${d.path}/n`), Buffer.from([0xc3, 0x28])]);
    await writeFile(odd, '');
    const fh = await open(odd, 'r');
    await setAttribute(`/proc/self/fd/${fh.fd}`, 'user.k', 'v').finally(() => fh.close());
    expect(pairs(readXattrs(odd, 'file'))).toEqual([['user.k', 'v']]);
  });
});

describe('OwnerNames and foldId', () => {
  it('maps IDs to names from passwd and group files, first line winning', async () => {
    const pw = join(d.path, 'passwd');
    const gr = join(d.path, 'group');
    await writeFile(
      pw,
      'root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/h:/bin/sh\ndup:x:1000:1::/:\n',
    );
    await writeFile(gr, 'wheel:x:10:alice\n\nbroken line\n');
    const owners = await OwnerNames.load(pw, gr);
    expect([owners.user(0), owners.user(1000), owners.user(5)]).toEqual(['root', 'alice', '']);
    expect([owners.group(10), owners.group(0)]).toEqual(['wheel', '']);
    const none = await OwnerNames.load(join(d.path, 'x'), join(d.path, 'y'));
    expect(none.user(0)).toBe('');
  });

  it('keeps small IDs and folds 64-bit ones into stable safe integers', () => {
    expect(foldId(12345n)).toBe(12345);
    const big = (1n << 63n) | 77n;
    expect(Number.isSafeInteger(foldId(big))).toBe(true);
    expect(foldId(big)).toBe(foldId(big));
    expect(foldId(big)).not.toBe(foldId(big + 1n));
  });
});
