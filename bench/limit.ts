import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';

/**
 * The machine's limit for a backup: read the data once and SHA-256 it, on every core.
 * Each worker hashes its own contiguous slice of the file with 4 MiB reads.
 */
export async function machineLimit(file: string, size: number): Promise<number> {
  const cores = availableParallelism();
  const slice = Math.ceil(size / cores);
  const started = performance.now();
  await Promise.all(
    Array.from({ length: cores }, (_, i) => {
      const w = new Worker(new URL(import.meta.url), {
        workerData: { file, offset: i * slice, length: Math.min(slice, size - i * slice) },
      });
      return new Promise((resolve, reject) => {
        w.on('message', resolve);
        w.on('error', reject);
      });
    }),
  );
  return size / 2 ** 20 / ((performance.now() - started) / 1000);
}

async function hashSlice(file: string, offset: number, length: number): Promise<string> {
  const fh = await open(file, 'r');
  const buf = Buffer.allocUnsafe(4 << 20);
  const hash = createHash('sha256');
  try {
    for (let done = 0; done < length; ) {
      const want = Math.min(buf.length, length - done);
      const { bytesRead } = await fh.read(buf, 0, want, offset + done);
      if (bytesRead === 0) break;
      hash.update(buf.subarray(0, bytesRead));
      done += bytesRead;
    }
  } finally {
    await fh.close();
  }
  return hash.digest('hex');
}

const { isMainThread, parentPort, workerData } = await import('node:worker_threads');
if (!isMainThread && workerData?.file) {
  const { file, offset, length } = workerData as { file: string; offset: number; length: number };
  parentPort!.postMessage(await hashSlice(file, offset, length));
}
