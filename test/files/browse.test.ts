import { link, mkdir, open, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  findEntry,
  HardlinkTracker,
  readFileContent,
  rootTreeId,
  walkFrom,
  walkTree,
} from '../../src/files/browse.js';
import {
  childPath,
  displayText,
  jsonPath,
  PathSelector,
  relativeText,
  splitUserPath,
} from '../../src/files/paths.js';
import type { StoredSnapshot } from '../../src/repo/snapshot.js';
import { makeRepo, type TempDir, type TestRepo, tempDir } from '../helpers.js';
import { snapshotDir } from './build-snapshot.js';

const B = (s: string) => Buffer.from(s, 'latin1');

describe('path text', () => {
  it('joins and splits byte paths', () => {
    expect(childPath(B('/'), B('a')).toString()).toBe('/a');
    expect(childPath(B('/a'), B('b')).toString()).toBe('/a/b');
    expect(splitUserPath('/home//u/./docs/../x/')).toEqual(['home', 'u', 'x']);
    expect(splitUserPath('/')).toEqual([]);
    expect(relativeText(B('/a/\xff'))).toBe('a/\\xff');
  });

  it('escapes for terminals: invalid UTF-8, controls, C1 controls and backslashes', () => {
    expect(displayText(B('plain/é'.replace('é', '\xc3\xa9')))).toBe('plain/é');
    expect(displayText(B('a\nb\tc\rd'))).toBe('a\\nb\\tc\\rd');
    expect(displayText(B('\x1b[2Jx\x7f'))).toBe('\\x1b[2Jx\\x7f');
    expect(displayText(B('c1\xc2\x85'))).toBe('c1\\xc2\\x85');
    expect(displayText(B('caf\xe9'))).toBe('caf\\xe9');
    expect(displayText(B('back\\slash'))).toBe('back\\\\slash');
    // Overlong encodings and surrogates are not valid UTF-8.
    expect(displayText(B('\xc0\xaf\xed\xa0\x80'))).toBe('\\xc0\\xaf\\xed\\xa0\\x80');
  });

  it('gives JSON the raw bytes as base64 only when the path is not UTF-8', () => {
    expect(jsonPath(B('/ok/\xc3\xa9\n'))).toEqual({ path: '/ok/é\n' });
    expect(jsonPath(B('/bad/\xff'))).toEqual({ path: '/bad/\\xff', path_bytes: 'L2JhZC//' });
    expect(jsonPath(B('x\xfe'), 'target')).toEqual({ target: 'x\\xfe', target_bytes: 'eP4=' });
  });
});

describe('PathSelector', () => {
  const sel = new PathSelector({
    include: ['/home/u/docs', '*.md'],
    exclude: ['*.tmp', '/home/u/docs/cache/'],
  });

  it('includes a subtree and names matched at any depth; excludes win', () => {
    expect(sel.included('home/u/docs', true)).toBe(true);
    expect(sel.included('home/u/docs/a/b.txt', false)).toBe(true);
    expect(sel.included('home/u/docsx', false)).toBe(false);
    expect(sel.included('srv/README.md', false)).toBe(true);
    expect(sel.included('home/u', true)).toBe(false);
    expect(sel.excluded('home/u/docs/x.tmp', false)).toBe(true);
    expect(sel.excluded('home/u/docs/cache', true)).toBe(true);
    expect(sel.excluded('home/u/docs/cache', false)).toBe(false);
    expect(sel.included('home/U/docs', true)).toBe(false);
  });

  it('walks only directories that may lead to an anchored include', () => {
    const anchored = new PathSelector({ include: ['/home/*/docs'] });
    expect(anchored.mayContainIncluded('home')).toBe(true);
    expect(anchored.mayContainIncluded('home/u')).toBe(true);
    expect(anchored.mayContainIncluded('srv')).toBe(false);
    expect(anchored.mayContainIncluded('home/u/music')).toBe(false);
    expect(sel.mayContainIncluded('srv/deep')).toBe(true);
    expect(new PathSelector({ include: ['/a/**/z'] }).mayContainIncluded('a/b/c')).toBe(true);
  });

  it('selects everything without patterns', () => {
    const all = new PathSelector({});
    expect(all.included('x', false)).toBe(true);
    expect(all.excluded('x', false)).toBe(false);
    expect(all.mayContainIncluded('x')).toBe(true);
  });
});

describe('browsing a snapshot', () => {
  let t: TestRepo;
  let d: TempDir;
  let src: string;
  let snap: StoredSnapshot;
  const holey = Buffer.alloc(3 << 20);

  beforeAll(async () => {
    t = await makeRepo({ encryption: false });
    d = await tempDir();
    src = join(d.path, 'src');
    await mkdir(join(src, 'dir', 'sub'), { recursive: true });
    await writeFile(join(src, 'dir', 'sub', 'f'), 'deep');
    await writeFile(join(src, 'a'), 'first');
    await link(join(src, 'a'), join(src, 'dir', 'z-link'));
    await writeFile(B(`${src}/n\xe4me`), 'latin1 name');
    holey.fill(7, 0, 1000).fill(8, holey.length - 10);
    const fh = await open(join(src, 'holey'), 'w');
    await fh.write(holey.subarray(0, 1000), 0, 1000, 0);
    await fh.write(holey.subarray(holey.length - 10), 0, 10, holey.length - 10);
    await fh.close();
    snap = await snapshotDir(t.repo, src, { chunkSize: 64 << 10 });
  });
  afterAll(async () => {
    await t.cleanup();
    await d.cleanup();
  });

  it('walks depth first, directories before their contents, absolute paths', async () => {
    const store = await t.repo.blobs();
    const paths: string[] = [];
    for await (const { path } of walkTree(store, rootTreeId(snap)))
      paths.push(path.toString('latin1'));
    const inside = paths.filter((p) => p.startsWith(`${src}/`)).map((p) => p.slice(src.length));
    expect(inside).toEqual([
      '/a',
      '/dir',
      '/dir/sub',
      '/dir/sub/f',
      '/dir/z-link',
      '/holey',
      '/n\xe4me',
    ]);
    expect(paths.indexOf(src)).toBe(paths.indexOf(`${src}/a`) - 1);
  });

  it('finds entries by raw name or by the escaped form ls prints', async () => {
    const store = await t.repo.blobs();
    const root = rootTreeId(snap);
    expect((await findEntry(store, root, '/'))?.entry).toBeUndefined();
    expect((await findEntry(store, root, `${src}/dir/sub/f`))?.entry?.type).toBe('file');
    expect((await findEntry(store, root, `${src}//dir/./sub/`))?.entry?.type).toBe('dir');
    const latin = await findEntry(store, root, `${src}/n\\xe4me`);
    expect(latin?.path).toEqual(B(`${src}/n\xe4me`));
    expect(await findEntry(store, root, `${src}/missing`)).toBeUndefined();
    expect(await findEntry(store, root, `${src}/a/below-a-file`)).toBeUndefined();
  });

  it('walks from an entry: itself, then what is below it', async () => {
    const store = await t.repo.blobs();
    const root = rootTreeId(snap);
    const found = (await findEntry(store, root, `${src}/dir`))!;
    const paths: string[] = [];
    for await (const { path } of walkFrom(store, root, found)) paths.push(path.toString());
    expect(paths).toEqual([
      `${src}/dir`,
      `${src}/dir/sub`,
      `${src}/dir/sub/f`,
      `${src}/dir/z-link`,
    ]);
  });

  it('streams a file with holes as its exact bytes', async () => {
    const store = await t.repo.blobs();
    const found = (await findEntry(store, rootTreeId(snap), `${src}/holey`))!;
    expect(found.entry!.content!.some((p) => p.id === null)).toBe(true);
    const pieces: Buffer[] = [];
    for await (const piece of readFileContent(store, found.entry!)) pieces.push(Buffer.from(piece));
    expect(Buffer.concat(pieces).equals(holey)).toBe(true);
  });

  it('names the first path of a hard-linked inode as the target of later ones', async () => {
    const store = await t.repo.blobs();
    const tracker = new HardlinkTracker();
    const targets: [string, string | undefined][] = [];
    for await (const { path, entry } of walkTree(store, rootTreeId(snap))) {
      const original = tracker.linkTarget(entry, path);
      if (entry.nlink > 1 && entry.type !== 'dir')
        targets.push([path.toString(), original?.toString()]);
    }
    expect(targets).toEqual([
      [`${src}/a`, undefined],
      [`${src}/dir/z-link`, `${src}/a`],
    ]);
  });
});
