import { spawn } from 'node:child_process';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  encodeManifest,
  encodeSegment,
  type ManifestEntry,
  type SegmentRef,
} from '../../src/image/index.js';
import { hex } from '../../src/repo/blob.js';
import type { Repository } from '../../src/repo/repository.js';
import { CAIRN, cairn } from '../cli/run.js';
import { makeRepo, type TestRepo, tempDir } from '../helpers.js';

/**
 * Image snapshots written by an attacker (here: by the test, with the format's own encoders
 * and valid seals) whose manifests do not add up, or declare absurd sizes: every command
 * that reads them must refuse with one clear line, or for a huge but consistent image fail
 * cleanly (or succeed sparse), in bounded time and memory.
 */
let t: TestRepo | undefined;
afterEach(async () => {
  await t?.cleanup();
  t = undefined;
});

const CHUNK = 4096;

interface Forgery {
  /** The size the top manifest declares (default: what its segments cover). */
  size?: number;
  /** The size the snapshot document declares (default: the top manifest's). */
  snapSize?: number;
  /** Rewrites the segment list of the top manifest after it was computed honestly. */
  refs?: (refs: SegmentRef[]) => SegmentRef[];
  /** Patches the encoded top manifest. */
  top?: (encoded: Buffer) => Buffer;
}

/** Stores `segments` as manifest segments, a top manifest over them, and an image snapshot. */
async function imageSnapshotOf(
  repo: Repository,
  segments: ManifestEntry[][],
  forge: Forgery = {},
): Promise<string> {
  const store = await repo.blobs();
  let refs: SegmentRef[] = [];
  let start = 0;
  for (const entries of segments) {
    const { id } = await store.put('manifest', encodeSegment(entries));
    const length = entries.reduce((n, e) => n + e.length, 0);
    refs.push({ id, start, length, entries: entries.length });
    start += length;
  }
  refs = forge.refs?.(refs) ?? refs;
  const size = forge.size ?? start;
  const encoded = encodeManifest(size, refs);
  const top = await store.put('manifest', forge.top?.(encoded) ?? encoded);
  await store.flush();
  return repo.saveSnapshot({
    time: new Date().toISOString(),
    hostname: 'evil',
    username: 'evil',
    kind: 'image',
    name: 'disk',
    tags: [],
    root: hex(top.id),
    size: forge.snapSize ?? size,
    extra: { source_kind: 'file' },
  });
}

/** A stored data chunk of CHUNK bytes. */
async function chunk(repo: Repository, fill = 7): Promise<Buffer> {
  const store = await repo.blobs();
  const { id } = await store.put('data', Buffer.alloc(CHUNK, fill));
  await store.flush();
  return id;
}

function env() {
  return { CAIRN_REPO: t!.repoDir, CAIRN_CACHE_DIR: t!.cacheDir };
}

/** A CLI run against the test repository; killed (code -1) if it hangs. */
function cairnOn(args: string[]) {
  return cairn(args, { env: env(), timeoutMs: 10_000 });
}

/** restore onto a new file, cat and ls each refuse the snapshot with the same reason. */
async function expectEveryReaderRefuses(snap: string, why: RegExp): Promise<void> {
  const d = await tempDir();
  try {
    const runs = {
      restore: await cairnOn(['restore', snap, '--target', join(d.path, 'disk.img')]),
      cat: await cairnOn(['cat', snap]),
      ls: await cairnOn(['ls', snap]),
    };
    for (const [command, r] of Object.entries(runs)) {
      expect(r.code, `${command}: ${r.stderr}`).toBe(1);
      const lines = r.stderr.trimEnd().split('\n');
      expect(lines, `${command}: ${r.stderr}`).toHaveLength(1);
      expect(lines[0], command).toMatch(/^cairn: .*damaged: /);
      expect(lines[0], command).toMatch(why);
    }
    // Nothing is written besides (at most) the target itself.
    expect((await readdir(d.path)).filter((n) => n !== 'disk.img')).toEqual([]);
  } finally {
    await d.cleanup();
  }
}

describe('hostile image snapshots', () => {
  it('refuses a segment whose entries cover less than the top manifest says', async () => {
    t = await makeRepo({ encryption: false });
    const id = await chunk(t.repo);
    const snap = await imageSnapshotOf(
      t.repo,
      [
        [
          { id, length: CHUNK },
          { id: null, length: CHUNK },
        ],
      ],
      { size: 3 * CHUNK, refs: (refs) => refs.map((r) => ({ ...r, length: 3 * CHUNK })) },
    );
    await expectEveryReaderRefuses(snap, /covers 8192 bytes, the top manifest says 12288/);
  });

  it('refuses a top manifest whose segments do not add up to its size', async () => {
    t = await makeRepo({ encryption: false });
    const id = await chunk(t.repo);
    const snap = await imageSnapshotOf(t.repo, [[{ id, length: CHUNK }]], { size: 2 * CHUNK });
    await expectEveryReaderRefuses(snap, /segments cover 4096 bytes of 8192/);
  });

  it('refuses a top manifest whose size differs from the snapshot document', async () => {
    t = await makeRepo({ encryption: false });
    const id = await chunk(t.repo);
    const snap = await imageSnapshotOf(t.repo, [[{ id, length: CHUNK }]], { snapSize: 2 ** 40 });
    await expectEveryReaderRefuses(snap, /covers 4096 bytes, the snapshot says 1099511627776/);
  });

  it('refuses a top manifest listing more segments than it can hold', async () => {
    t = await makeRepo({ encryption: false });
    const id = await chunk(t.repo);
    // The segment count (varint 1, after magic, version and u64 size) patched to 2^28 - 1.
    const snap = await imageSnapshotOf(t.repo, [[{ id, length: CHUNK }]], {
      top: (b) =>
        Buffer.concat([b.subarray(0, 13), Buffer.from([0xff, 0xff, 0xff, 0x7f]), b.subarray(14)]),
    });
    await expectEveryReaderRefuses(snap, /absurd segment count 268435455/);
  });

  it('refuses a chunk shorter than its manifest entry says', async () => {
    t = await makeRepo({ encryption: false });
    const id = await chunk(t.repo);
    // Consistent as a manifest (2 × 4096 bytes), but the chunk it names holds 4096 bytes.
    const snap = await imageSnapshotOf(t.repo, [[{ id, length: 2 * CHUNK }]]);
    await expectEveryReaderRefuses(
      snap,
      /chunk [0-9a-f]{8} is damaged: the chunk has 4096 bytes, not 8192/,
    );
  });

  it('refuses a chunk longer than its manifest entry says', async () => {
    t = await makeRepo({ encryption: false });
    const id = await chunk(t.repo);
    const other = await chunk(t.repo, 9);
    const snap = await imageSnapshotOf(t.repo, [
      [
        { id, length: CHUNK / 2 },
        { id: other, length: CHUNK * 1.5 },
      ],
    ]);
    await expectEveryReaderRefuses(
      snap,
      /chunk [0-9a-f]{8} is damaged: the chunk has 4096 bytes, not 2048/,
    );
  });
});

describe('a huge image snapshot (consistent, 1 PiB of holes)', () => {
  const HUGE = 2 ** 50;

  async function hugeSnapshot(): Promise<string> {
    t = await makeRepo({ encryption: false });
    const id = await chunk(t.repo);
    return imageSnapshotOf(t.repo, [
      [
        { id, length: CHUNK },
        { id: null, length: HUGE - CHUNK },
      ],
    ]);
  }

  it('restores onto a file sparse, or fails cleanly where the filesystem cannot hold it', async () => {
    const snap = await hugeSnapshot();
    const d = await tempDir();
    const target = join(d.path, 'disk.img');
    const r = await cairnOn(['restore', snap, '--target', target]);
    if (r.code === 0) {
      // XFS and btrfs hold files this large: then it is a sparse file of the right size.
      const st = await stat(target);
      expect(st.size).toBe(HUGE);
      expect(st.blocks * 512).toBeLessThan(1 << 20);
    } else {
      expect(r.code).toBe(1);
      expect(r.stderr.trimEnd().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(/^cairn: restore target .* cannot hold 1125899906842624 bytes/);
      expect(r.stdout).toBe('');
      // The target it created is removed again: no partial image is left behind.
      expect(await readdir(d.path)).toEqual([]);
    }
    await d.cleanup();
  });

  it('lists its name and size', async () => {
    const snap = await hugeSnapshot();
    const r = await cairnOn(['ls', snap]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`(${HUGE} bytes)`);
  });

  it('streams it with cat for as long as the reader reads, then stops', async () => {
    const snap = await hugeSnapshot();
    const child = spawn(process.execPath, [CAIRN, 'cat', snap], {
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/', ...env() },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const killer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    let got = 0;
    let first: Buffer | undefined;
    child.stdout.on('data', (b: Buffer) => {
      first ??= b;
      got += b.length;
      // Like `| head -c 8M`: the reader goes away; cat must end quietly (EPIPE).
      if (got >= 8 << 20) child.stdout.destroy();
    });
    let stderr = '';
    child.stderr.on('data', (b: Buffer) => {
      stderr += b;
    });
    const code = await new Promise<number | null>((res) => child.on('close', res));
    clearTimeout(killer);
    expect(stderr).toBe('');
    expect(code).toBe(0);
    expect(got).toBeGreaterThanOrEqual(8 << 20);
    expect(first![0]).toBe(7);
  });
});
