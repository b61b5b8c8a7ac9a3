import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import {
  chmod,
  chown,
  link,
  lstat,
  mkdir,
  open,
  readFile,
  symlink,
  utimes,
  writeFile,
} from 'node:fs/promises';
import { join } from 'node:path';
import fc from 'fast-check';
import { setAttribute } from 'fs-xattr';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { findEntry, rootTreeId, verifyFile } from '../../src/files/browse.js';
import { utimesArg } from '../../src/files/metadata.js';
import {
  type RestoreEvent,
  type RestoreOptions,
  type RestoreSummary,
  restore,
} from '../../src/files/restorer.js';
import { packName } from '../../src/repo/pack.js';
import type { StoredSnapshot } from '../../src/repo/snapshot.js';
import { makeRepo, type TempDir, type TestRepo, tempDir } from '../helpers.js';
import { describeTree, snapshotDir } from './build-snapshot.js';

const isRoot = process.getuid?.() === 0;
const B = (s: string) => Buffer.from(s, 'latin1');

let t: TestRepo;
let d: TempDir;
let src: string;
let dst: string;
beforeEach(async () => {
  t = await makeRepo({ encryption: false });
  d = await tempDir();
  src = join(d.path, 'src');
  dst = join(d.path, 'dst');
  await mkdir(src);
});
afterEach(async () => {
  await t.cleanup();
  // Fixtures hold read-only directories, which an ordinary user could not empty otherwise.
  execFileSync('chmod', ['-R', 'u+rwX', d.path]);
  await d.cleanup();
});

async function run(
  snap: StoredSnapshot,
  opts: RestoreOptions = {},
): Promise<{ summary: RestoreSummary; errors: RestoreEvent[] }> {
  const errors: RestoreEvent[] = [];
  const gen = restore(t.repo, snap, dst, opts);
  for (;;) {
    const next = await gen.next();
    if (next.done) return { summary: next.value, errors };
    if (next.value.type === 'error') errors.push(next.value);
  }
}

/** Counts the repository's backend reads of packs from now on. */
function countPackReads(): { count: number } {
  const backend = t.repo.backend;
  const read = backend.read.bind(backend);
  const reads = { count: 0 };
  backend.read = (name, range) => {
    if (name.startsWith('data/')) reads.count++;
    return read(name, range);
  };
  return reads;
}

/** Where the snapshot of `src` lands under the target: its absolute path, as restic does. */
const restored = () => join(dst, src);

/** A bit of everything restore must reproduce, with awkward names and times. */
async function populate(dir: string): Promise<void> {
  await writeFile(join(dir, 'small.txt'), 'hello\n');
  await writeFile(join(dir, 'empty'), '');
  await writeFile(join(dir, 'multi.bin'), Buffer.alloc(300_000, 7).fill(9, 100_000, 150_000));
  await writeFile(B(`${dir}/caf\xe9-latin1`), 'not utf-8 name');
  await writeFile(join(dir, 'line\nbreak'), 'newline in name');
  await writeFile(join(dir, '-rf'), 'leading dash');
  await mkdir(join(dir, 'sub', 'deep'), { recursive: true });
  await writeFile(join(dir, 'sub', 'deep', 'x'), 'x');
  await writeFile(join(dir, 'suid'), '#!/bin/sh\n');
  await chmod(join(dir, 'suid'), 0o4755);
  await symlink('small.txt', join(dir, 'link'));
  await symlink('/nonexistent/target', join(dir, 'dangling'));
  await link(join(dir, 'small.txt'), join(dir, 'sub', 'hard'));
  execFileSync('mkfifo', [join(dir, 'fifo')]);
  await setAttribute(join(dir, 'small.txt'), 'user.note', Buffer.from([0, 1, 2, 255]));
  await setAttribute(join(dir, 'sub'), 'user.dir', 'yes');
  await mkdir(join(dir, 'ro'));
  await writeFile(join(dir, 'ro', 'inside'), 'in a read-only dir');
  await chmod(join(dir, 'ro'), 0o555);
  await utimes(join(dir, 'sub', 'deep', 'x'), 1_000_000_000.123456, 1_000_000_000.123456);
  await utimes(join(dir, 'sub', 'deep'), 1_200_000_000.5, 1_200_000_000.5);
}

describe('restore', () => {
  it('reproduces files, names, modes, times, xattrs, symlinks, hard links and FIFOs', async () => {
    await populate(src);
    const snap = await snapshotDir(t.repo, src, { chunkSize: 64 << 10 });
    const { summary, errors } = await run(snap);
    expect(errors).toEqual([]);
    expect(await describeTree(restored())).toEqual(await describeTree(src));
    expect(summary.errors).toBe(0);
    expect(summary.filesRestored).toBe(13);
    expect(summary.dirsRestored).toBe(6);
    expect(summary.bytesRestored).toBe(snap.size);
    expect((await lstat(join(restored(), 'sub', 'hard'))).nlink).toBe(2);
  });

  it.skipIf(!isRoot)('restores owners, device nodes and symlink xattrs (needs root)', async () => {
    await writeFile(join(src, 'owned'), 'x');
    await chown(join(src, 'owned'), 1234, 5678);
    await symlink('owned', join(src, 'sl'));
    const fh = await open(join(src, 'sl'), 0o10000000 | constants.O_NOFOLLOW);
    await setAttribute(`/proc/self/fd/${fh.fd}`, 'trusted.label', 'v');
    await fh.close();
    execFileSync('mknod', [join(src, 'null'), 'c', '1', '3']);
    execFileSync('mknod', [join(src, 'blk'), 'b', '7', '200']);
    const snap = await snapshotDir(t.repo, src);
    expect((await run(snap)).errors).toEqual([]);
    expect(await describeTree(restored())).toEqual(await describeTree(src));
    expect((await lstat(join(restored(), 'owned'))).uid).toBe(1234);
  });

  it('keeps holes sparse and reads them back as zeros', async () => {
    const size = 8 << 20;
    const fh = await open(join(src, 'sparse'), 'w');
    await fh.write(Buffer.alloc(4096, 1), 0, 4096, 0);
    await fh.write(Buffer.alloc(4096, 2), 0, 4096, size - 4096);
    await fh.close();
    await open(join(src, 'trailing-hole'), 'w').then(async (h) => {
      await h.write(Buffer.from('head'));
      await h.truncate(1 << 20);
      await h.close();
    });
    const snap = await snapshotDir(t.repo, src, { chunkSize: 64 << 10 });
    expect((await run(snap, { verify: true })).errors).toEqual([]);
    const st = await lstat(join(restored(), 'sparse'));
    expect(st.size).toBe(size);
    expect(st.blocks * 512).toBeLessThan(size / 4);
    // Buffer#equals: toEqual compares 8 MiB element by element, for minutes.
    const same = (await readFile(join(restored(), 'sparse'))).equals(
      await readFile(join(src, 'sparse')),
    );
    expect(same).toBe(true);
    expect((await lstat(join(restored(), 'trailing-hole'))).size).toBe(1 << 20);
  });

  it('does not follow symlinks planted in the target, and overwrites existing files', async () => {
    await mkdir(join(src, 'dir'));
    await writeFile(join(src, 'dir', 'f'), 'restored');
    await writeFile(join(src, 'file'), 'restored');
    await writeFile(join(src, 'existing'), 'new content');
    const snap = await snapshotDir(t.repo, src);
    const outside = join(d.path, 'outside');
    await mkdir(outside);
    await writeFile(join(outside, 'victim'), 'untouched');
    await mkdir(restored(), { recursive: true });
    await symlink(outside, join(restored(), 'dir'));
    await symlink(join(outside, 'victim'), join(restored(), 'file'));
    await writeFile(join(restored(), 'existing'), 'old content that is longer');
    expect((await run(snap)).errors).toEqual([]);
    expect(await readFile(join(outside, 'victim'), 'utf8')).toBe('untouched');
    expect((await lstat(join(restored(), 'dir'))).isDirectory()).toBe(true);
    expect((await lstat(join(restored(), 'file'))).isFile()).toBe(true);
    expect(await readFile(join(restored(), 'existing'), 'utf8')).toBe('new content');
  });

  it('restores only what --include selects (with parent dirs) minus --exclude', async () => {
    await mkdir(join(src, 'docs', 'old'), { recursive: true });
    await mkdir(join(src, 'other'));
    await writeFile(join(src, 'docs', 'a.txt'), 'a');
    await writeFile(join(src, 'docs', 'b.tmp'), 'b');
    await writeFile(join(src, 'docs', 'old', 'c.txt'), 'c');
    await writeFile(join(src, 'other', 'd.txt'), 'd');
    await writeFile(join(src, 'top.txt'), 'top');
    const snap = await snapshotDir(t.repo, src);
    const { summary } = await run(snap, {
      include: [`${src}/docs`],
      exclude: ['*.tmp', `${src}/docs/old/`],
    });
    expect(Object.keys(await describeTree(restored()))).toEqual(['docs', 'docs/a.txt']);
    expect(summary.filesRestored).toBe(1);
    const srcDocs = (await lstat(join(src, 'docs'), { bigint: true })).mtimeNs / 1000n;
    expect((await lstat(join(restored(), 'docs'), { bigint: true })).mtimeNs / 1000n).toBe(srcDocs);
  });

  it('reports a damaged chunk naming its pack, and restores the rest', async () => {
    await writeFile(join(src, 'good'), 'fine');
    await writeFile(join(src, 'bad'), Buffer.alloc(10_000, 3));
    const snap = await snapshotDir(t.repo, src);
    const store = await t.repo.blobs();
    const found = await findEntry(store, rootTreeId(snap), `${src}/bad`);
    const loc = (await store.locate(found!.entry!.content![0]!.id!))!;
    const packFile = join(t.repoDir, packName(loc.pack));
    const bytes = await readFile(packFile);
    bytes[loc.offset + 5]! ^= 0xff;
    await writeFile(packFile, bytes);
    const { summary, errors } = await run(snap, { verify: true });
    expect(summary.errors).toBe(1);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatchObject({ type: 'error', path: Buffer.from(`${src}/bad`) });
    expect((errors[0] as { message: string }).message).toMatch(
      new RegExp(`pack ${loc.pack.toString('hex').slice(0, 8)}.*damaged`),
    );
    expect(await readFile(join(restored(), 'good'), 'utf8')).toBe('fine');
  });

  it('replaces what is in the way of a small file, reporting only a directory', async () => {
    for (const name of ['blocked', 'plain', 'linked', 'other']) {
      await writeFile(join(src, name), `new ${name}`);
    }
    const snap = await snapshotDir(t.repo, src);
    await mkdir(join(restored(), 'blocked', 'inside'), { recursive: true });
    await writeFile(join(restored(), 'plain'), 'old contents, longer than the new');
    const outside = join(d.path, 'outside');
    await writeFile(outside, 'untouched');
    await symlink(outside, join(restored(), 'linked'));
    const { summary, errors } = await run(snap);
    expect(summary.errors).toBe(1);
    expect(errors[0]).toMatchObject({ type: 'error', path: Buffer.from(`${src}/blocked`) });
    expect((errors[0] as { message: string }).message).toMatch(/directory is in the way/);
    for (const name of ['plain', 'linked', 'other']) {
      expect(await readFile(join(restored(), name), 'utf8')).toBe(`new ${name}`);
    }
    expect((await lstat(join(restored(), 'linked'))).isFile()).toBe(true);
    expect(await readFile(outside, 'utf8')).toBe('untouched');
  });

  it("reads a large file's chunks a few at a time, neighbours in a pack with one read", async () => {
    const data = randomBytes(12 << 20);
    await writeFile(join(src, 'large'), data);
    const snap = await snapshotDir(t.repo, src, { chunkSize: 256 << 10 });
    const reads = countPackReads();
    const { summary } = await run(snap, { verify: true });
    expect(summary.errors).toBe(0);
    expect((await readFile(join(restored(), 'large'))).equals(data)).toBe(true);
    // 48 chunks in groups of up to 8 (fewer when slots are short), each one read unless a
    // pack ends inside it; and the trees. Read one by one, they took 52 reads.
    expect(reads.count).toBeLessThan(48 / 3);
  });

  it('reads the trees of many directories in a few reads, not one each', async () => {
    for (let i = 0; i < 60; i++) {
      await mkdir(join(src, `d${i}`, 'sub'), { recursive: true });
      await writeFile(join(src, `d${i}`, 'sub', 'f'), `file ${i}`);
    }
    const snap = await snapshotDir(t.repo, src);
    const reads = countPackReads();
    const { summary } = await run(snap);
    expect(summary.errors).toBe(0);
    expect(await readFile(join(restored(), 'd59', 'sub', 'f'), 'utf8')).toBe('file 59');
    // 121 trees (and 60 files): read one by one, the trees alone took 121 reads.
    expect(reads.count).toBeLessThan(20);
  });

  it('reads each pack once, whole, when everything comes from remote storage', async () => {
    for (let i = 0; i < 40; i++) {
      await mkdir(join(src, `d${i}`), { recursive: true });
      await writeFile(join(src, `d${i}`, 'small'), randomBytes(3000));
      await writeFile(join(src, `d${i}`, 'large'), randomBytes(300_000));
    }
    const snap = await snapshotDir(t.repo, src, { chunkSize: 64 << 10 });
    const backend = t.repo.backend;
    Object.defineProperty(backend, 'traits', { value: { remote: true, digests: [] } });
    const read = backend.read.bind(backend);
    const reads: string[] = [];
    backend.read = (name, range) => {
      if (name.startsWith('data/')) reads.push(range ? `${name} range` : name);
      return read(name, range);
    };
    const { summary } = await run(snap, { verify: true });
    expect(summary.errors).toBe(0);
    expect(summary.filesVerified).toBe(80);
    const packs = new Set<string>();
    for await (const o of backend.list('data')) packs.add(o.name);
    // One read per pack, none by ranges: by ranges they took dozens.
    expect(reads.sort()).toEqual([...packs].sort());
  });

  it('verifyFile catches restored bytes that differ from their chunks', async () => {
    await writeFile(join(src, 'f'), Buffer.alloc(200_000, 5));
    const snap = await snapshotDir(t.repo, src, { chunkSize: 64 << 10 });
    await run(snap);
    const entry = (await findEntry(await t.repo.blobs(), rootTreeId(snap), `${src}/f`))!.entry!;
    const fh = await open(join(restored(), 'f'), 'r+');
    try {
      verifyFile(t.repo.hashId, fh.fd, entry);
      await fh.write(Buffer.from([6]), 0, 1, 70_000);
      expect(() => verifyFile(t.repo.hashId, fh.fd, entry)).toThrow(
        /offset 65536 do not match chunk/,
      );
    } finally {
      await fh.close();
    }
  });
});

describe('utimesArg', () => {
  it('restores times exact to the microsecond, also just below a boundary and before 1970', async () => {
    const f = join(d.path, 't');
    await writeFile(f, '');
    const samples = [1_795_680_876_602_446_999n, -1_234_567_891n, 0n, 999n];
    for (let i = 0; i < 500; i++) {
      samples.push(
        BigInt(Math.floor(Math.random() * 4e9)) * 1_000_000_000n + BigInt(i * 1_999_999),
      );
    }
    for (const ns of samples) {
      await utimes(f, utimesArg(ns), utimesArg(ns));
      expect((await lstat(f, { bigint: true })).mtimeNs / 1000n).toBe(ns / 1000n);
    }
  });
});

/** Random small trees: names of arbitrary bytes (valid ones), contents and modes. */
const nameArb = fc
  .uint8Array({ minLength: 1, maxLength: 12 })
  .map((a) => Buffer.from(a.map((b) => (b === 0x2f || b === 0 ? 0x5f : b))))
  .filter((b) => !b.equals(Buffer.from('.')) && !b.equals(Buffer.from('..')));

type Node = { name: Buffer; mode: number; content?: Uint8Array; children?: Node[] };
const nodeArb: fc.Arbitrary<Node> = fc.letrec<{ node: Node }>((tie) => ({
  node: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.record({
      name: nameArb,
      mode: fc.constantFrom(0o644, 0o600, 0o755, 0o400),
      content: fc.uint8Array({ maxLength: 3000 }),
    }),
    fc.record({
      name: nameArb,
      mode: fc.constantFrom(0o755, 0o700, 0o555),
      children: fc.uniqueArray(tie('node'), {
        maxLength: 4,
        selector: (n) => n.name.toString('hex'),
      }),
    }),
  ),
})).node;

async function materialize(dir: Buffer, nodes: Node[]): Promise<void> {
  for (const n of nodes) {
    const path = Buffer.concat([dir, Buffer.from('/'), n.name]);
    if (n.children) {
      await mkdir(path);
      await materialize(path, n.children);
    } else await writeFile(path, n.content!);
    await chmod(path, n.mode);
  }
}

describe('restore(snapshot(tree)) property', () => {
  it('reproduces random trees', async () => {
    let round = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.uniqueArray(nodeArb, { maxLength: 5, selector: (n) => n.name.toString('hex') }),
        async (nodes) => {
          const root = join(src, `case${round++}`);
          await mkdir(root);
          await materialize(Buffer.from(root), nodes);
          const snap = await snapshotDir(t.repo, root, { chunkSize: 1024 });
          const errors: RestoreEvent[] = [];
          for await (const e of restore(t.repo, snap, dst)) if (e.type === 'error') errors.push(e);
          expect(errors).toEqual([]);
          expect(await describeTree(join(dst, root))).toEqual(await describeTree(root));
        },
      ),
      { numRuns: 25 },
    );
  });
});
