import { randomBytes } from 'node:crypto';
import {
  type FileHandle,
  link,
  lstat,
  mkdir,
  open,
  opendir,
  readFile,
  rename,
  unlink,
} from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { CairnError } from '../../errors.js';
import type { Backend, ByteRange, ObjectInfo, ObjectWriter, WriteOptions } from './backend.js';

const TEMP_PREFIX = '.tmp-';
const FILE_MODE = 0o600;
const DIR_MODE = 0o700;
/** lstat calls in flight while listing: enough to hide latency, few enough for small fd limits. */
const LIST_STAT_BATCH = 64;
/** link(2) is missing on some filesystems (FAT, exFAT, some network mounts). */
const NO_LINK_CODES = new Set(['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS']);

/**
 * A repository in a local directory; object `a/b/c` is the file `<root>/a/b/c`.
 * Writes go to `.tmp-<random>` beside the target, are fsynced, then linked or renamed into
 * place and the directory fsynced, so an object is either absent or complete after a crash.
 */
export class LocalBackend implements Backend {
  readonly location: string;
  readonly #root: string;
  /** Directories known to exist; concurrent writes into a new one share its creation. */
  readonly #dirs = new Map<string, Promise<void>>();
  #closed = false;

  constructor(root: string) {
    this.#root = resolve(root);
    this.location = this.#root;
  }

  async *list(folder: string): AsyncIterable<ObjectInfo> {
    const trimmed = folder.replace(/\/+$/, '');
    yield* this.#walk(this.#path(trimmed), trimmed);
  }

  async read(name: string, range?: ByteRange): Promise<Buffer> {
    if (range === undefined) {
      try {
        return await readFile(this.#path(name));
      } catch (err) {
        throw this.#mapError(err, name);
      }
    }
    checkRange(range, name);
    const buf = Buffer.allocUnsafe(range.length);
    await this.readInto(name, range, buf);
    return buf;
  }

  async readInto(name: string, range: ByteRange, into: Uint8Array): Promise<void> {
    checkRange(range, name);
    let fh: FileHandle;
    try {
      fh = await open(this.#path(name), 'r');
    } catch (err) {
      throw this.#mapError(err, name);
    }
    try {
      await readExactly(fh, range, into, name);
    } finally {
      await fh.close();
    }
  }

  async write(
    name: string,
    data: Uint8Array | readonly Uint8Array[],
    opts: WriteOptions = {},
  ): Promise<void> {
    const path = this.#path(name);
    const dir = dirname(path);
    const parts = data instanceof Uint8Array ? [data] : data;
    const temp = tempName(dir);
    try {
      await this.#writeTemp(temp, dir, parts);
      if (opts.overwrite) await rename(temp, path);
      else await this.#linkNoReplace(temp, path, name);
      await fsyncDir(dir);
    } catch (err) {
      await unlink(temp).catch(() => {});
      throw this.#writeFailed(err, name);
    }
  }

  /**
   * The object goes to `<folder>/.tmp-<random>` (listing skips it), created at the first
   * append; `commit` fsyncs it and links it into place as `write` does, `abort` unlinks it.
   * A crash leaves at most the temporary file, as with `write`.
   */
  startObject(folder: string): ObjectWriter {
    const dir = this.#path(folder);
    const temp = tempName(dir);
    let opened: Promise<FileHandle> | undefined;
    let end = 0;
    const handle = () => {
      opened ??= this.#openTemp(temp, dir);
      return opened;
    };
    return {
      append: async (data) => {
        const at = end;
        end += data.length;
        try {
          const fh = await handle();
          for (let done = 0; done < data.length; ) {
            const { bytesWritten } = await fh.write(data, done, data.length - done, at + done);
            done += bytesWritten;
          }
        } catch (err) {
          throw this.#writeFailed(err, `a new object in ${folder}`);
        }
      },
      commit: async (name) => {
        const path = this.#path(name);
        try {
          const fh = await handle();
          try {
            await fh.datasync();
          } finally {
            await fh.close();
          }
          await this.#ensureDir(dirname(path));
          await this.#linkNoReplace(temp, path, name);
          await fsyncDir(dirname(path));
        } catch (err) {
          await unlink(temp).catch(() => {});
          throw this.#writeFailed(err, name);
        }
      },
      abort: async () => {
        if (!opened) return;
        await (await opened.catch(() => undefined))?.close().catch(() => {});
        await unlink(temp).catch(() => {});
      },
    };
  }

  async stat(name: string): Promise<ObjectInfo | undefined> {
    const path = this.#path(name);
    try {
      const st = await lstat(path);
      return st.isFile() ? { name, size: st.size } : undefined;
    } catch (err) {
      if (isMissing(err)) return undefined;
      throw this.#mapError(err, name);
    }
  }

  /**
   * No directory fsync: a delete lost in a crash brings back an object nothing references
   * any more (prune deletes only after the new index is durable) or a stale lock, which
   * the next run handles; fsyncing the directory per pack would make prune crawl.
   */
  async delete(name: string): Promise<void> {
    try {
      await unlink(this.#path(name));
    } catch (err) {
      if (!isMissing(err)) throw this.#mapError(err, name);
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#dirs.clear();
  }

  /** A failed write as the caller sees it: a CairnError naming the object and repository. */
  #writeFailed(err: unknown, name: string): CairnError {
    if (err instanceof CairnError) return err;
    const why = `cannot write ${name} in ${this.location}: ${describe(err)}`;
    return new CairnError(why, 'Fatal', { cause: err });
  }

  /** Creates the temp file, recreating directories once if they vanished since cached. */
  async #openTemp(temp: string, dir: string): Promise<FileHandle> {
    await this.#ensureDir(dir);
    try {
      return await open(temp, 'wx', FILE_MODE);
    } catch (err) {
      if (errno(err) !== 'ENOENT') throw err;
      this.#dirs.clear();
      await this.#ensureDir(dir);
      return await open(temp, 'wx', FILE_MODE);
    }
  }

  async #writeTemp(temp: string, dir: string, parts: readonly Uint8Array[]): Promise<void> {
    const fh = await this.#openTemp(temp, dir);
    try {
      await writeAll(fh, parts);
      // fdatasync also persists the file size, which is all that reading the data needs.
      await fh.datasync();
    } finally {
      await fh.close();
    }
  }

  /**
   * link(2) fails with EEXIST atomically, where check-then-rename would let two writers
   * race; the temp name is then unlinked. A crash in between leaves only a `.tmp-` file,
   * which `list` skips. Filesystems without hard links fall back to check-then-rename.
   */
  async #linkNoReplace(temp: string, path: string, name: string): Promise<void> {
    try {
      await link(temp, path);
      await unlink(temp);
      return;
    } catch (err) {
      if (errno(err) === 'EEXIST') throw this.#exists(name, err);
      if (!NO_LINK_CODES.has(errno(err) ?? '')) throw err;
    }
    if ((await this.stat(name)) !== undefined) throw this.#exists(name);
    await rename(temp, path);
  }

  /** mkdir -p, fsyncing each parent so a new directory's entry survives a crash too. */
  #ensureDir(dir: string): Promise<void> {
    let pending = this.#dirs.get(dir);
    if (pending === undefined) {
      pending = this.#makeDir(dir);
      this.#dirs.set(dir, pending);
      pending.catch(() => this.#dirs.delete(dir));
    }
    return pending;
  }

  /** Only a directory made here gets its parent fsynced: existing ancestors may be unreadable. */
  async #makeDir(dir: string): Promise<void> {
    const parent = dirname(dir);
    try {
      await mkdir(dir, { mode: DIR_MODE });
    } catch (err) {
      if (errno(err) === 'EEXIST') return;
      if (errno(err) !== 'ENOENT' || parent === dir) throw err;
      await this.#ensureDir(parent);
      await mkdir(dir, { mode: DIR_MODE }).catch((again) => {
        if (errno(again) !== 'EEXIST') throw again;
      });
    }
    await fsyncDir(parent);
  }

  async *#walk(dir: string, prefix: string): AsyncGenerator<ObjectInfo> {
    let handle: Awaited<ReturnType<typeof opendir>>;
    try {
      handle = await opendir(dir);
    } catch (err) {
      if (isMissing(err)) return;
      throw this.#mapError(err, prefix);
    }
    const subdirs: string[] = [];
    let files: string[] = [];
    // `for await` over a Dir closes it, also when the consumer stops early.
    for await (const entry of handle) {
      if (entry.name.startsWith(TEMP_PREFIX)) continue;
      if (entry.isDirectory()) subdirs.push(entry.name);
      else if (entry.isFile()) files.push(entry.name);
      if (files.length >= LIST_STAT_BATCH) {
        yield* await statBatch(dir, prefix, files);
        files = [];
      }
    }
    yield* await statBatch(dir, prefix, files);
    for (const sub of subdirs) yield* this.#walk(join(dir, sub), `${prefix}/${sub}`);
  }

  #path(name: string): string {
    if (this.#closed) throw new CairnError(`backend ${this.location} is closed`);
    const segments = name.split('/');
    const bad = segments.some(
      (s) => s === '' || s === '.' || s === '..' || s.startsWith(TEMP_PREFIX) || s.includes('\0'),
    );
    if (bad) throw new CairnError(`invalid object name ${JSON.stringify(name)}`);
    return join(this.#root, ...segments);
  }

  #exists(name: string, cause?: unknown): CairnError {
    return new CairnError(`${name} already exists in ${this.location}`, 'Fatal', { cause });
  }

  #mapError(err: unknown, name: string): CairnError {
    if (isMissing(err) || errno(err) === 'EISDIR') {
      return new CairnError(`${name} not found in ${this.location}`, 'NotFound', { cause: err });
    }
    return new CairnError(`cannot access ${name} in ${this.location}: ${describe(err)}`, 'Fatal', {
      cause: err,
    });
  }
}

async function statBatch(dir: string, prefix: string, files: string[]): Promise<ObjectInfo[]> {
  const infos = await Promise.all(
    files.map(async (file) => {
      try {
        const st = await lstat(join(dir, file));
        return st.isFile() ? { name: `${prefix}/${file}`, size: st.size } : undefined;
      } catch (err) {
        // Deleted between readdir and lstat (a concurrent prune): no longer listed.
        if (isMissing(err)) return undefined;
        throw err;
      }
    }),
  );
  return infos.filter((info) => info !== undefined);
}

async function readExactly(
  fh: FileHandle,
  range: ByteRange,
  buf: Uint8Array,
  name: string,
): Promise<void> {
  let got = 0;
  while (got < range.length) {
    const { bytesRead } = await fh.read(buf, got, range.length - got, range.offset + got);
    if (bytesRead === 0) {
      const { size } = await fh.stat();
      throw new CairnError(
        `${name} is damaged: read ${got} of ${range.length} bytes at offset ${range.offset}, ` +
          `but it is only ${size} bytes`,
        'Damaged',
      );
    }
    got += bytesRead;
  }
}

/** A fresh temporary name in `dir`, which `list` skips. */
function tempName(dir: string): string {
  return join(dir, TEMP_PREFIX + randomBytes(8).toString('hex'));
}

/** writev may write less than asked; keep going from where it stopped. */
async function writeAll(fh: FileHandle, parts: readonly Uint8Array[]): Promise<void> {
  let pending = parts.filter((p) => p.length > 0);
  while (pending.length > 0) {
    let { bytesWritten } = await fh.writev(pending);
    let i = 0;
    while (i < pending.length && bytesWritten >= pending[i]!.length) {
      bytesWritten -= pending[i]!.length;
      i++;
    }
    pending = pending.slice(i);
    if (pending.length > 0) pending[0] = pending[0]!.subarray(bytesWritten);
  }
}

async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

function checkRange(range: ByteRange, name: string): void {
  const ok = (n: number) => Number.isSafeInteger(n) && n >= 0;
  if (!ok(range.offset) || !ok(range.length)) {
    throw new CairnError(`invalid byte range ${JSON.stringify(range)} for ${name}`);
  }
}

function errno(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code;
}

function isMissing(err: unknown): boolean {
  return errno(err) === 'ENOENT' || errno(err) === 'ENOTDIR';
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
