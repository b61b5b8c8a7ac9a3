/**
 * Named immutable objects. Names are `/`-separated relative paths such as `config`,
 * `keys/<hex>`, `data/ab/<hex>`, `index/<hex>`, `snapshots/<hex>`, `locks/<hex>`.
 * An object, once written, is never modified; it is only deleted (prune, lock release).
 * Implementations: a local directory (here) and object stores (S3) behind the same contract.
 */
export interface Backend {
  /** Human-readable location, used in messages. */
  readonly location: string;
  /** What writing to this storage costs; absent: a local disk's (LOCAL_TRAITS). */
  readonly traits?: BackendTraits;
  /** Names of all objects under a top-level folder (`data`, `index`, …), in any order. */
  list(folder: string): AsyncIterable<ObjectInfo>;
  /** Whole object, or `length` bytes at `offset`. Missing object: CairnError code NotFound. */
  read(name: string, range?: ByteRange): Promise<Buffer>;
  /**
   * `read` of a range into the caller's buffer (its first `range.length` bytes): a restore
   * reads packs into shared memory that worker threads open without a copy. Optional: see
   * `readRangeInto`.
   */
  readInto?(name: string, range: ByteRange, into: Uint8Array): Promise<void>;
  /**
   * Writes an object atomically and durably: it is either absent or complete once this
   * resolves, and survives a crash. Existing objects are not overwritten unless `overwrite`.
   * `data` may be read until the returned promise settles (S3 sends it without a copy): the
   * caller must not change it before then.
   */
  write(name: string, data: Uint8Array | readonly Uint8Array[], opts?: WriteOptions): Promise<void>;
  /**
   * Starts an object that is written piece by piece and named once complete (a pack, named
   * by its hash), so its bytes need not all be in memory at once. Optional: a backend
   * without it is given whole objects (`write`).
   */
  startObject?(folder: string): ObjectWriter;
  /** Size of an object, or undefined when it does not exist. */
  stat(name: string): Promise<ObjectInfo | undefined>;
  /** Deletes an object; deleting a missing object is not an error. */
  delete(name: string): Promise<void>;
  /**
   * The current time by the storage's own clock (ms since the epoch), where it has one that
   * several hosts share (S3); locks use it so hosts whose clocks differ judge staleness alike.
   */
  now?(): Promise<number>;
  close(): Promise<void>;
}

/** An object being written by `Backend.startObject`: absent until `commit` resolves. */
export interface ObjectWriter {
  /**
   * Appends `data`. Calls may overlap; the bytes land in call order. `data` must not change
   * until the returned promise settles.
   */
  append(data: Uint8Array): Promise<void>;
  /**
   * Makes the object durable as `name` (in the folder it was started in), atomically, like
   * `write` without `overwrite`. Call it once every append has settled.
   */
  commit(name: string): Promise<void>;
  /** Discards what was written; the writer is not used again. */
  abort(): Promise<void>;
}

export interface ObjectInfo {
  name: string;
  size: number;
}

export interface ByteRange {
  offset: number;
  length: number;
}

export interface WriteOptions {
  /** Replace an existing object (only locks are ever rewritten). */
  overwrite?: boolean;
  /**
   * Digests of the whole body that the caller already has (a pack's, hashed on a worker
   * thread), for a backend that sends them with it (`traits.digests`) rather than hashing the
   * body again on the main thread. The server checks the body against them: a wrong digest
   * fails the write, it never stores other bytes.
   */
  digests?: BodyDigests;
}

export interface BodyDigests {
  md5?: Uint8Array;
  sha256?: Uint8Array;
}

export type DigestName = keyof BodyDigests;

export interface BackendTraits {
  /**
   * Each object is a request over a network, paid in latency and per-request fees and
   * listed and fetched again by every other client: callers writing small objects often
   * (index checkpoints) write fewer of them.
   */
  remote: boolean;
  /** Digests of a body that `write` sends along; callers that can pass them in WriteOptions. */
  digests: readonly DigestName[];
}

export const LOCAL_TRAITS: BackendTraits = { remote: false, digests: [] };

/** Reads `range` of `name` into `into`, by `readInto` where the backend has it. */
export async function readRangeInto(
  backend: Backend,
  name: string,
  range: ByteRange,
  into: Uint8Array,
): Promise<void> {
  if (backend.readInto) return backend.readInto(name, range, into);
  into.set(await backend.read(name, range));
}
