import { createHash } from 'node:crypto';
import { parentPort, workerData } from 'node:worker_threads';
import { AesGcmSealer, ChecksumSealer, keyedIdHasher, plainIdHasher } from '../crypto/index.js';
import { CairnError, type ErrorCode } from '../errors.js';
import { asBuffer } from '../util/bytes.js';
import type { BlobLocation } from './blob.js';
import { BlobDecoder, BlobEncoder } from './blob-codec.js';
import type { BlobTaskOutput, CreateBlobTask } from './blob-task.js';
import { madeGarbage } from './worker-gc.js';

export interface BlobWorkerInit {
  /** AES-256-GCM key, or null for an unencrypted repository. */
  encryptionKey: Uint8Array | null;
  /** HMAC key for chunk IDs, or null for plain SHA-256. */
  idKey: Uint8Array | null;
  compressionLevel: number;
}

export type BlobWorkerRequest =
  | { op: 'hash'; job: number; data: Uint8Array }
  /** Seals a held blob into `into` (see SealTarget). */
  | { op: 'seal'; job: number; into?: Uint8Array }
  | { op: 'drop'; job: number }
  | { op: 'open'; job: number; sealed: Uint8Array; loc: BlobLocation }
  /** SHA-256 of `data` (a pack), and its MD5 when asked (a backend sends it with the body). */
  | { op: 'digests'; job: number; data: Uint8Array; md5?: boolean }
  /** Imports a task module (see blob-task.ts); its runs wait for it. No reply. */
  /** Imports a task module; the reply (no error even if it failed) says it is settled. */
  | { op: 'load'; job: number; task: number; module: string; init: unknown }
  /** Runs a task: its blobs are hashed and held, as with `hash`, until `seal-some`/`drop`. */
  | { op: 'produce'; job: number; task: number; args: unknown }
  /** Seals the held blobs of a `produce` job at the given indices, drops the rest. */
  | { op: 'seal-some'; job: number; keep: number[]; into?: Uint8Array }
  /** Opens blobs of pack `pack` lying in `sealed` into `into` (see OpenTarget). */
  | {
      op: 'open-into';
      job: number;
      sealed: Uint8Array;
      into: Uint8Array;
      pack: Uint8Array;
      /** The blobs' IDs, 32 bytes each, in the order of `blobs`. */
      ids: Uint8Array;
      blobs: PlacedBlob[];
    };

/**
 * A blob to open: its sealed bytes at `at` in the message's `sealed`, its plaintext written
 * at `to` in `into`; where it lies in its pack, for messages.
 */
export interface PlacedBlob {
  at: number;
  to: number;
  offset: number;
  length: number;
  rawLength: number;
  flags: number;
}

/*
 * OpenTarget: a restore's blobs are opened straight from the shared memory the main thread
 * read their pack range into, and their plaintext written into shared memory it lends (and
 * reuses once written out), so neither crosses the threads by copy nor leaves a dead buffer
 * to the main thread's collector. The reply says which blobs failed, each with its error.
 */

/*
 * Sealed blobs are written one after another into `into`, shared memory the main thread
 * lends (and reuses) when they fit, else into a buffer of the worker's that is transferred:
 * either way no copy crosses the threads, and in the first no dead buffer is left to the
 * main thread's collector.
 */

export interface BlobWorkerReply {
  job: number;
  id?: Uint8Array;
  md5?: Uint8Array;
  /** Sealed blobs when they did not fit in `into`. */
  sealed?: Uint8Array;
  /** Plaintext of an opened blob. */
  data?: Uint8Array;
  /** `produce`: the task's result, and the IDs of its blobs (32 bytes each, in order). */
  result?: unknown;
  ids?: Uint8Array;
  /** `open-into`: for each blob, null or why it could not be opened. */
  failures?: ({ error: string; code?: ErrorCode } | null)[];
  /** `produce`: the lengths of its blobs; seals: the sealed lengths and flags. */
  lengths?: number[];
  flags?: number[];
  error?: string;
  code?: ErrorCode;
}

type Held = Uint8Array | BlobTaskOutput<unknown>;

if (parentPort) {
  const port = parentPort;
  const init = workerData as BlobWorkerInit;
  const sealer = init.encryptionKey
    ? new AesGcmSealer(Buffer.from(init.encryptionKey))
    : new ChecksumSealer();
  const hashId = init.idKey ? keyedIdHasher(Buffer.from(init.idKey)) : plainIdHasher();
  const encoder = new BlobEncoder(sealer, init.compressionLevel);
  const decoder = new BlobDecoder(sealer, hashId);
  /** Blobs hashed and not yet sealed or dropped, by job: one, or a task run's several. */
  const held = new Map<number, Held>();
  const tasks = new Map<number, Promise<(args: unknown) => unknown>>();

  const reply = (r: BlobWorkerReply, transfer: ArrayBuffer[] = []) => port.postMessage(r, transfer);

  const take = (job: number): Held => {
    const h = held.get(job);
    if (!h) throw new Error(`blob job ${job} is not held by this worker`);
    held.delete(job);
    return h;
  };

  const seal = (job: number, blobs: Uint8Array[], into: Uint8Array | undefined) => {
    const bound = blobs.reduce((n, b) => n + encoder.bound(b), 0);
    const out = into && bound <= into.length ? into : new Uint8Array(bound);
    const lengths: number[] = [];
    const flags: number[] = [];
    let at = 0;
    for (const b of blobs) {
      const r = encoder.encodeInto(b, out, at);
      at += r.length;
      lengths.push(r.length);
      flags.push(r.flags);
    }
    if (out === into) reply({ job, lengths, flags });
    else reply({ job, sealed: out, lengths, flags }, [out.buffer as ArrayBuffer]);
    madeGarbage(at);
  };

  const produce = async (msg: { job: number; task: number; args: unknown }) => {
    const run = tasks.get(msg.task);
    if (!run) throw new Error(`blob task ${msg.task} is not loaded on this worker`);
    const out = (await (await run)(msg.args)) as BlobTaskOutput<unknown>;
    const ids = new Uint8Array(32 * out.blobs.length);
    for (const [i, b] of out.blobs.entries()) ids.set(hashId(b), 32 * i);
    held.set(msg.job, out);
    const lengths = out.blobs.map((b) => b.length);
    reply({ job: msg.job, result: out.result, ids, lengths }, [ids.buffer]);
  };

  const handle = (msg: BlobWorkerRequest) => {
    switch (msg.op) {
      case 'hash':
        held.set(msg.job, msg.data);
        return reply({ job: msg.job, id: hashId(msg.data) });
      case 'seal': {
        const data = take(msg.job);
        if (!(data instanceof Uint8Array)) throw new Error(`blob job ${msg.job} is a task run`);
        return seal(msg.job, [data], msg.into);
      }
      case 'seal-some': {
        const run = take(msg.job);
        if (run instanceof Uint8Array) throw new Error(`blob job ${msg.job} is not a task run`);
        seal(
          msg.job,
          msg.keep.map((i) => run.blobs[i]!),
          msg.into,
        );
        return run.release?.();
      }
      case 'drop': {
        const h = held.get(msg.job);
        held.delete(msg.job);
        if (h && !(h instanceof Uint8Array)) h.release?.();
        return;
      }
      case 'digests': {
        const id = createHash('sha256').update(msg.data).digest();
        const md5 = msg.md5 ? createHash('md5').update(msg.data).digest() : undefined;
        return reply({ job: msg.job, id, md5 });
      }
      case 'open': {
        const sealed = asBuffer(msg.sealed);
        const data = decoder.decode(sealed, msg.loc);
        return reply({ job: msg.job, data }, ownedBuffer(data));
      }
      case 'open-into':
        reply({ job: msg.job, failures: openInto(msg) });
        return madeGarbage(msg.blobs.reduce((n, b) => n + b.length, 0));
      case 'load': {
        const loading = import(msg.module).then(
          (m: { createTask: CreateBlobTask<unknown, unknown, unknown> }) =>
            m.createTask(msg.init, { hashId }),
        );
        // A failure is reported to each run that needs it.
        const settled = () => reply({ job: msg.job });
        loading.then(settled, settled);
        tasks.set(msg.task, loading as Promise<(args: unknown) => unknown>);
        return;
      }
      case 'produce':
        return void produce(msg).catch((err) => fail(msg.job, err));
    }
  };

  const openInto = (msg: Extract<BlobWorkerRequest, { op: 'open-into' }>) => {
    const sealed = asBuffer(msg.sealed);
    const into = asBuffer(msg.into);
    const pack = asBuffer(msg.pack);
    const ids = asBuffer(msg.ids);
    return msg.blobs.map((b, i) => {
      const loc = { ...b, pack, id: ids.subarray(32 * i, 32 * i + 32) };
      try {
        decoder.decodeInto(
          sealed.subarray(b.at, b.at + b.length),
          loc,
          into.subarray(b.to, b.to + b.rawLength),
        );
        return null;
      } catch (err) {
        return { error: (err as Error).message, code: errorCode(err) };
      }
    });
  };

  const fail = (job: number, err: unknown) => {
    reply({ job, error: (err as Error).message, code: errorCode(err) });
  };

  port.on('message', (msg: BlobWorkerRequest) => {
    try {
      handle(msg);
    } catch (err) {
      fail((msg as { job?: number }).job ?? 0, err);
    }
  });
}

function errorCode(err: unknown): ErrorCode | undefined {
  return err instanceof CairnError ? err.code : undefined;
}

/** Transfer a result when it owns its memory; otherwise postMessage copies it. */
function ownedBuffer(b: Uint8Array): ArrayBuffer[] {
  const owned = b.byteOffset === 0 && b.byteLength === b.buffer.byteLength;
  return owned && b.buffer instanceof ArrayBuffer ? [b.buffer] : [];
}
