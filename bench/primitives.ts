import { createHmac, randomBytes } from 'node:crypto';
import { compress } from 'zstd-napi';
import { AesGcmSealer } from '../src/crypto/index.js';

export interface PrimitiveResult {
  name: string;
  mbPerSec: number;
}

/** Median MB/s (2^20 bytes) of `fn` over `data` in 1 MiB pieces, one core. */
function measure(
  name: string,
  data: Buffer,
  fn: (piece: Buffer) => void,
  runs = 3,
): PrimitiveResult {
  const piece = 1 << 20;
  const once = () => {
    for (let off = 0; off < data.length; off += piece) fn(data.subarray(off, off + piece));
  };
  once();
  const secs: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    once();
    secs.push((performance.now() - t0) / 1000);
  }
  secs.sort((a, b) => a - b);
  return { name, mbPerSec: data.length / 2 ** 20 / secs[Math.floor(runs / 2)]! };
}

/** Single-core throughput of each stage of the write path over a sample of the data. */
export function benchPrimitives(sample: Buffer, level: number): PrimitiveResult[] {
  const key = randomBytes(32);
  const sealer = new AesGcmSealer(key);
  return [
    measure('HMAC-SHA-256 (1 core)', sample, (p) => createHmac('sha256', key).update(p).digest()),
    measure(`zstd level ${level} (1 core)`, sample, (p) =>
      compress(p, { compressionLevel: level }),
    ),
    measure('AES-256-GCM seal (1 core)', sample, (p) => sealer.seal(p)),
  ];
}
