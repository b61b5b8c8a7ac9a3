import type { IdHasher } from '../crypto/index.js';

/*
 * Blob tasks: code a caller above the repository layer runs on the blob workers. Most make
 * blobs there (the file archiver reads small files on them), so that their bytes are read,
 * hashed, compressed and sealed on one worker and never cross to the main thread until
 * sealed; others only use the workers' threads (the restorer writes small files on them).
 * The repository knows nothing of what a task does: a task module exports
 * `createTask(init, worker)`, and each run of the task returns its blobs (maybe none) and a
 * result for the caller.
 */

/** What one run of a task returns: blobs to store, and anything else for the caller. */
export interface BlobTaskOutput<R> {
  result: R;
  blobs: Uint8Array[];
  /** Called once the blobs are sealed or dropped: their memory may be reused. */
  release?(): void;
}

/** What a worker lends its tasks. */
export interface BlobWorkerContext {
  /** The repository's chunk ID function. */
  hashId: IdHasher;
}

/** The shape of a task module's export (the module is imported on each worker). */
export type CreateBlobTask<I, A, R> = (
  init: I,
  worker: BlobWorkerContext,
) => (args: A) => BlobTaskOutput<R> | Promise<BlobTaskOutput<R>>;

/** A task loaded on the workers; run it with `BlobStore.putFromTask` or `runTask`. */
export interface BlobTask<A, R> {
  readonly id: number;
  /** Type marker only: the argument and result types of the task's runs. */
  readonly types?: (args: A) => R;
}

/**
 * The compiled module `name` beside the module at `base` (its `import.meta.url`), for a
 * worker to load. Under Vitest modules run from `src/*.ts`, where no compiled module
 * exists, so workers use the build in `dist/` (`npm test` builds first).
 */
export function workerModule(name: string, base: string): URL {
  const url = new URL(name, base);
  if (!base.endsWith('.ts')) return url;
  return new URL(url.href.replace('/src/', '/dist/src/'));
}
