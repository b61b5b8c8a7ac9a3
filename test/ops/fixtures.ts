import { createHash, randomBytes } from 'node:crypto';
import { cp, mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { backup } from '../../src/files/archiver.js';
import { readFileContent, walkTree } from '../../src/files/browse.js';
import { displayText } from '../../src/files/paths.js';
import { imageBackup } from '../../src/image/index.js';
import type { Backend, ByteRange, WriteOptions } from '../../src/repo/backend/backend.js';
import { LocalBackend } from '../../src/repo/backend/local.js';
import { BlobEncoder } from '../../src/repo/blob-codec.js';
import { PackBuilder, packName } from '../../src/repo/pack.js';
import { Repository } from '../../src/repo/repository.js';
import type { StoredSnapshot } from '../../src/repo/snapshot.js';
import { FAST_KDF, PassThroughBackend, TEST_PASSWORD } from '../helpers.js';
import { catToBuffer } from '../image/util.js';

/** Small chunks and packs, so a few hundred KiB of data make many of both. */
export const SMALL = {
  chunker: { min: 1024, avg: 4096, max: 16384 },
  packSize: 64 << 10,
};

export async function initRepo(dir: string, encryption = true): Promise<void> {
  const repo = await Repository.init(new LocalBackend(dir), {
    encryption,
    password: encryption ? TEST_PASSWORD : undefined,
    kdf: FAST_KDF,
    cacheDir: join(dir, '..', 'init-cache'),
    ...SMALL,
  });
  await repo.close();
}

export function openRepo(dir: string, cacheDir: string, backend?: Backend): Promise<Repository> {
  return Repository.open(backend ?? new LocalBackend(dir), {
    cacheDir,
    password: async () => TEST_PASSWORD,
    workers: 1,
  });
}

/** Writes `files` (relative path → bytes) under `dir`. */
export async function writeTree(dir: string, files: Map<string, Buffer>): Promise<void> {
  for (const [rel, data] of files) {
    await mkdir(join(dir, rel, '..'), { recursive: true });
    await writeFile(join(dir, rel), data);
  }
}

export function randomFiles(names: string[], size: number): Map<string, Buffer> {
  return new Map(names.map((n) => [n, randomBytes(size)]));
}

/** A file snapshot of `dir` through the real backup pipeline; returns the snapshot ID. */
export async function backupDir(repo: Repository, dir: string, tags: string[] = []) {
  const events = backup(repo, [dir], { tags, force: true });
  for (;;) {
    const next = await events.next();
    if (next.done) return next.value.snapshotId!;
  }
}

export async function backupImage(repo: Repository, file: string, name: string) {
  return (await imageBackup(repo, file, { name })).snapshotId;
}

/**
 * What a snapshot restores to: file path (as text) → SHA-256 of its bytes; an image → the
 * hash of its bytes. Hashes, because deep equality of large buffers is slow in expect().
 */
export async function contentOf(
  repo: Repository,
  snap: StoredSnapshot,
): Promise<Map<string, string>> {
  if (snap.kind === 'image') return new Map([['', sha256(await catToBuffer(repo, snap))]]);
  const store = await repo.blobs();
  const out = new Map<string, string>();
  for await (const { path, entry } of walkTree(store, Buffer.from(snap.root, 'hex'))) {
    if (entry.type !== 'file') continue;
    const parts: Buffer[] = [];
    for await (const b of readFileContent(store, entry)) parts.push(Buffer.from(b));
    out.set(displayText(path), sha256(Buffer.concat(parts)));
  }
  return out;
}

export function sha256(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}

export async function copyRepo(from: string, to: string): Promise<void> {
  await rm(to, { recursive: true, force: true });
  await cp(from, to, { recursive: true });
}

/** Removes every lock: what a crashed process leaves is stale, but ours is still alive. */
export async function dropLocks(repoDir: string): Promise<void> {
  for (const f of await readdir(join(repoDir, 'locks')).catch(() => [])) {
    await rm(join(repoDir, 'locks', f));
  }
}

/** A valid pack no index segment lists, as a backup killed before indexing it leaves one. */
export async function writeStrayPack(repo: Repository): Promise<Buffer> {
  const data = randomBytes(100);
  const { sealed, flags } = new BlobEncoder(repo.sealer, 1).encode(data);
  const builder = new PackBuilder();
  builder.add({ id: repo.hashId(data), type: 'data', flags, rawLength: data.length }, sealed);
  const { id, bytes } = await builder.finish(repo.sealer, async (b) =>
    Buffer.from(sha256(b), 'hex'),
  );
  await repo.backend.write(packName(id), bytes);
  return id;
}

/** Thrown by CrashingBackend: the process "dies" at this operation. */
export class SimulatedCrash extends Error {}

/**
 * A backend that dies before its N-th write or delete: that operation and every one after it
 * throw, as if the process had been killed there. Writes are atomic, so these are exactly the
 * states a real kill can leave behind.
 */
export class CrashingBackend extends PassThroughBackend {
  mutations = 0;

  constructor(
    inner: Backend,
    private readonly crashAt = Number.POSITIVE_INFINITY,
  ) {
    super(inner);
  }

  override read(name: string, range?: ByteRange) {
    this.alive();
    return super.read(name, range);
  }

  override async write(
    name: string,
    data: Uint8Array | readonly Uint8Array[],
    opts?: WriteOptions,
  ) {
    this.mutate();
    return super.write(name, data, opts);
  }

  override async delete(name: string) {
    this.mutate();
    return super.delete(name);
  }

  private mutate(): void {
    this.mutations++;
    this.alive();
  }

  private alive(): void {
    if (this.mutations >= this.crashAt) throw new SimulatedCrash(`crashed at ${this.crashAt}`);
  }
}
