import { createHash } from 'node:crypto';
import { parentPort, workerData } from 'node:worker_threads';
import { AesGcmSealer, ChecksumSealer, keyedIdHasher, plainIdHasher } from '../crypto/index.js';
import { CairnError, type ErrorCode } from '../errors.js';
import type { BlobLocation } from './blob.js';
import { decodeBlob, encodeBlob } from './blob-codec.js';

export interface BlobWorkerInit {
  /** AES-256-GCM key, or null for an unencrypted repository. */
  encryptionKey: Uint8Array | null;
  /** HMAC key for chunk IDs, or null for plain SHA-256. */
  idKey: Uint8Array | null;
  compressionLevel: number;
}

export type BlobWorkerRequest =
  | { op: 'hash'; job: number; data: Uint8Array }
  | { op: 'seal'; job: number }
  | { op: 'drop'; job: number }
  | { op: 'open'; job: number; sealed: Uint8Array; loc: BlobLocation }
  /** SHA-256 of `data` (a pack), and its MD5 when asked (a backend sends it with the body). */
  | { op: 'digests'; job: number; data: Uint8Array; md5?: boolean };

export interface BlobWorkerReply {
  job: number;
  id?: Uint8Array;
  md5?: Uint8Array;
  sealed?: Uint8Array;
  flags?: number;
  /** Plaintext of an opened blob. */
  data?: Uint8Array;
  error?: string;
  code?: ErrorCode;
}

if (parentPort) {
  const port = parentPort;
  const init = workerData as BlobWorkerInit;
  const sealer = init.encryptionKey
    ? new AesGcmSealer(Buffer.from(init.encryptionKey))
    : new ChecksumSealer();
  const hashId = init.idKey ? keyedIdHasher(Buffer.from(init.idKey)) : plainIdHasher();
  const held = new Map<number, Uint8Array>();

  port.on('message', (msg: BlobWorkerRequest) => {
    try {
      if (msg.op === 'hash') {
        held.set(msg.job, msg.data);
        port.postMessage({ job: msg.job, id: hashId(msg.data) } satisfies BlobWorkerReply);
      } else if (msg.op === 'seal') {
        const data = held.get(msg.job);
        held.delete(msg.job);
        if (!data) throw new Error(`blob job ${msg.job} is not held by this worker`);
        const { sealed, flags } = encodeBlob(data, sealer, init.compressionLevel);
        const out = new Uint8Array(sealed.buffer, sealed.byteOffset, sealed.byteLength);
        port.postMessage(
          { job: msg.job, sealed: out, flags } satisfies BlobWorkerReply,
          ownedBuffer(sealed),
        );
      } else if (msg.op === 'digests') {
        const id = createHash('sha256').update(msg.data).digest();
        const md5 = msg.md5 ? createHash('md5').update(msg.data).digest() : undefined;
        port.postMessage({ job: msg.job, id, md5 } satisfies BlobWorkerReply);
      } else if (msg.op === 'open') {
        const sealed = Buffer.from(msg.sealed.buffer, msg.sealed.byteOffset, msg.sealed.byteLength);
        const data = decodeBlob(sealed, msg.loc, sealer, hashId);
        port.postMessage({ job: msg.job, data } satisfies BlobWorkerReply, ownedBuffer(data));
      } else {
        held.delete(msg.job);
      }
    } catch (err) {
      const code = err instanceof CairnError ? err.code : undefined;
      const error = (err as Error).message;
      port.postMessage({ job: msg.job, error, code } satisfies BlobWorkerReply);
    }
  });
}

/** Transfer a result when it owns its memory; otherwise postMessage copies it. */
function ownedBuffer(b: Uint8Array): ArrayBuffer[] {
  const owned = b.byteOffset === 0 && b.byteLength === b.buffer.byteLength;
  return owned && b.buffer instanceof ArrayBuffer ? [b.buffer] : [];
}
