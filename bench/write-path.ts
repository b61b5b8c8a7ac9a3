import { join } from 'node:path';
import { backup } from '../src/files/archiver.js';
import { LocalBackend } from '../src/repo/backend/local.js';
import { Repository } from '../src/repo/repository.js';

export interface WritePathResult {
  mbPerSec: number;
  storedBytes: number;
  chunks: number;
  peakRssMiB: number;
}

/**
 * The whole write path: read → chunk → hash → dedup → compress → encrypt → pack → fsync →
 * index segment, into a fresh encrypted repository, as `cairn backup FILE` runs it (the
 * archiver: 4 MiB reads into pooled shared buffers, 8 chunks in flight).
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
    const started = performance.now();
    const run = backup(repo, [file], { host: 'bench' });
    let next = await run.next();
    while (!next.done) next = await run.next();
    const summary = next.value;
    const secs = (performance.now() - started) / 1000;
    return {
      mbPerSec: size / 2 ** 20 / secs,
      storedBytes: summary.dataAdded,
      chunks: summary.dataBlobs,
      peakRssMiB: Math.max(peak, process.memoryUsage.rss()) / 2 ** 20,
    };
  } finally {
    clearInterval(sampler);
    await repo.close();
  }
}
