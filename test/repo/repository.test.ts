import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { LocalBackend } from '../../src/repo/backend/local.js';
import { Repository } from '../../src/repo/repository.js';
import { resolveRef } from '../../src/repo/snapshot.js';
import { FAST_KDF, makeRepo, type TestRepo, tempDir } from '../helpers.js';

let t: TestRepo | undefined;
afterEach(async () => {
  await t?.cleanup();
  t = undefined;
});

describe('repository', () => {
  it('refuses to init twice', async () => {
    t = await makeRepo();
    await expect(
      Repository.init(new LocalBackend(t.repoDir), { encryption: false, cacheDir: t.cacheDir }),
    ).rejects.toMatchObject({ code: 'RepoExists' });
  });

  it('reports a missing repository', async () => {
    const d = await tempDir();
    await expect(
      Repository.open(new LocalBackend(join(d.path, 'nope')), { cacheDir: d.path }),
    ).rejects.toMatchObject({ code: 'RepoNotFound' });
    await d.cleanup();
  });

  it('rejects a wrong password', async () => {
    t = await makeRepo({ kdf: FAST_KDF });
    await expect(
      Repository.open(new LocalBackend(t.repoDir), {
        cacheDir: t.cacheDir,
        password: async () => 'wrong',
      }),
    ).rejects.toMatchObject({ code: 'WrongPassword' });
  });

  it('saves, lists and resolves snapshots', async () => {
    t = await makeRepo();
    const base = { hostname: 'h', username: 'u', tags: [], root: 'ab'.repeat(32), size: 1 };
    const a = await t.repo.saveSnapshot({ ...base, time: '2026-01-01T00:00:00Z', kind: 'files' });
    const b = await t.repo.saveSnapshot({
      ...base,
      time: '2026-02-01T00:00:00Z',
      kind: 'image',
      name: 'disk',
    });
    const snaps = await (await t.reopen()).listSnapshots();
    expect(snaps.map((s) => s.id).sort()).toEqual([a, b].sort());
    expect(resolveRef('latest', snaps).id).toBe(b);
    expect(resolveRef('latest', snaps, { host: 'h', name: 'disk' }).id).toBe(b);
    expect(resolveRef(a.slice(0, 6), snaps).id).toBe(a);
    expect(() => resolveRef('zzzz', snaps)).toThrow(/invalid snapshot reference/);
    expect(() => resolveRef('latest', snaps, { host: 'other' })).toThrow(/no snapshot/);
  });

  it('saves a snapshot identical to a stored one as that one', async () => {
    t = await makeRepo();
    const snap = {
      hostname: 'h',
      username: 'u',
      tags: [],
      root: 'cd'.repeat(32),
      size: 1,
      time: '2026-03-01T00:00:00.000Z',
      kind: 'files' as const,
    };
    const [a, b] = await Promise.all([t.repo.saveSnapshot(snap), t.repo.saveSnapshot(snap)]);
    expect(b).toBe(a);
    expect((await t.repo.listSnapshots()).map((s) => s.id)).toEqual([a]);
  });

  it('gives callers that open the blob store at once one store over a synced index', async () => {
    t = await makeRepo();
    const store = await t.repo.blobs();
    const { id } = await store.put('data', Buffer.from('indexed before the reopen'));
    await store.flush();
    const repo = await t.reopen();
    const stores = await Promise.all([repo.blobs(), repo.blobs(), repo.blobs()]);
    expect(new Set(stores).size).toBe(1);
    expect((await stores[2]!.get(id)).toString()).toBe('indexed before the reopen');
  });

  it('detects a tampered snapshot', async () => {
    t = await makeRepo({ encryption: false });
    const id = await t.repo.saveSnapshot({
      time: '2026-01-01T00:00:00Z',
      hostname: 'h',
      username: 'u',
      kind: 'files',
      tags: [],
      root: 'ab'.repeat(32),
      size: 1,
    });
    await mkdir(join(t.repoDir, 'snapshots'), { recursive: true });
    const forged = Buffer.from('{"kind":"files"}');
    await writeFile(join(t.repoDir, 'snapshots', id), forged);
    await expect((await t.reopen()).listSnapshots()).rejects.toThrow(/damaged/);
  });
});

describe('locks', () => {
  it('shared locks coexist; an exclusive lock waits, then names the holder', async () => {
    t = await makeRepo({ encryption: false });
    const other = await t.reopen();
    const s1 = await t.repo.lock(false, 'backup');
    const s2 = await other.lock(false, 'restore');
    const err = await other.lock(true, 'prune', 300).catch((e) => e);
    expect(err).toMatchObject({ code: 'Locked' });
    expect(String(err.message)).toMatch(/PID \d+ .*"backup"|"restore"/);
    await s1.release();
    await s2.release();
    const ex = await other.lock(true, 'prune');
    await expect(t.repo.lock(false, 'backup')).rejects.toMatchObject({ code: 'Locked' });
    await ex.release();
  });

  it('ignores the lock of a dead process on this host', async () => {
    t = await makeRepo({ encryption: false });
    const lock = await t.repo.lock(true, 'prune');
    // Rewrite our own lock as if held by a PID that cannot exist.
    const { readLock } = await import('../../src/repo/lock.js');
    const names: string[] = [];
    for await (const o of t.repo.backend.list('locks')) names.push(o.name);
    const info = (await readLock(t.repo.backend, t.repo.sealer, names[0]!))!;
    const dead = { ...info, pid: 2 ** 22 + 12345 };
    await t.repo.backend.write(names[0]!, t.repo.sealer.seal(Buffer.from(JSON.stringify(dead))), {
      overwrite: true,
    });
    const again = await t.repo.lock(true, 'prune');
    await again.release();
    await lock.release();
  });
});
