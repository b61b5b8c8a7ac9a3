import type { Repository } from '../repo/repository.js';

/**
 * Runs `fn` under a repository lock (exclusive for anything that deletes), released whatever
 * happens. How long to wait for a conflicting lock is the repository's `lockWaitMs`.
 */
export async function withLock<T>(
  repo: Repository,
  exclusive: boolean,
  command: string,
  fn: () => Promise<T>,
): Promise<T> {
  const lock = await repo.lock(exclusive, command);
  try {
    return await fn();
  } finally {
    await lock.release();
  }
}
