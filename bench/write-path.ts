import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { chunkStream, gearTable } from '../src/chunker/index.js';
import { LocalBackend } from '../src/repo/backend/local.js';
import { allocShared } from '../src/repo/pack.js';
import { Repository } from '../src/repo/repository.js';

export interface WritePathResult {
  mbPerSec: number;
  storedBytes: number;
  chunks: number;
  peakRssMiB: number;
}

/** Streams a file through a repository's whole write path, with reads as a backup does them. */
async function* readFile(path: string, readSize = 4 << 20): AsyncGenerator<Uint8Array> {
  const fh = await open(path, 'r');
  try {
    for (;;) {
      const buf = allocShared(readSize);
      const { bytesRead } = await fh.read(buf, 0, readSize, null);
      if (bytesRead === 0) return;
      yield buf.subarray(0, bytesRead);
    }
  } finally {
    await fh.close();
  }
}

/**
 * The whole write path: read → chunk → hash → dedup → compress → encrypt → pack → fsync →
 * index segment, into a fresh encrypted repository.
 */
export async function benchWritePath(
  file: string,
  size: number,
  dir: string,
): Promise<WritePathResult> {
  const repo = await Repository.init(new LocalBackend(join(dir, 'repo')), {
    encryption: true,
    password: 'bench',
    kdf: { t: 1, m: 64, p: 1 },
    cacheDir: join(dir, 'cache'),
  });
  let peak = 0;
  const sampler = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage.rss());
  }, 50);
  try {
    const store = await repo.blobs();
    const table = gearTable(repo.chunkerSeed);
    const started = performance.now();
    const pending = new Set<Promise<unknown>>();
    let chunks = 0;
    for await (const chunk of chunkStream(readFile(file), repo.config.chunker, table)) {
      chunks++;
      const p: Promise<unknown> = store.put('data', chunk).finally(() => pending.delete(p));
      pending.add(p);
      if (pending.size >= 8) await Promise.race(pending);
    }
    await Promise.all(pending);
    await store.flush();
    const secs = (performance.now() - started) / 1000;
    return {
      mbPerSec: size / 2 ** 20 / secs,
      storedBytes: store.stats.bytesAdded,
      chunks,
      peakRssMiB: Math.max(peak, process.memoryUsage.rss()) / 2 ** 20,
    };
  } finally {
    clearInterval(sampler);
    await repo.close();
  }
}
