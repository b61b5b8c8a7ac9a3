import { parentPort, workerData } from 'node:worker_threads';
import { AesGcmSealer, ChecksumSealer, keyedIdHasher, plainIdHasher } from '../crypto/index.js';
import { encodeBlob } from './blob-codec.js';

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
  | { op: 'drop'; job: number };

export interface BlobWorkerReply {
  job: number;
  id?: Uint8Array;
  sealed?: Uint8Array;
  flags?: number;
  error?: string;
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
        // Transfer when the blob owns its memory; otherwise postMessage copies it.
        const owned = sealed.byteOffset === 0 && sealed.byteLength === sealed.buffer.byteLength;
        const transfer = owned ? [sealed.buffer as ArrayBuffer] : [];
        port.postMessage({ job: msg.job, sealed: out, flags } satisfies BlobWorkerReply, transfer);
      } else {
        held.delete(msg.job);
      }
    } catch (err) {
      port.postMessage({ job: msg.job, error: (err as Error).message } satisfies BlobWorkerReply);
    }
  });
}
