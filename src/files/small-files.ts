import type { BlobTask } from '../repo/blob-task.js';
import { workerModule } from '../repo/blob-task.js';
import { Semaphore } from '../util/semaphore.js';
import type { Content, ContentOptions } from './content.js';
import { SourceError, type WalkEntry } from './fsmeta.js';
import type { ReadTaskInit, SmallFile, SmallFileResult } from './read-task.js';
import { type ContentPart, mergeHoles } from './tree.js';

/*
 * Small files are read on the blob store's worker threads (read-task.ts), many to a message.
 * Read here, each cost the main thread its open, read, fstat and close (synchronous: the
 * async calls' hand-offs cost more than reading a small cached file) and, from a cold page
 * cache, the whole wait for the disk, one file at a time; its chunks were then hashed,
 * compressed and sealed here too (blobs under 64 KiB skip the workers). On the workers the
 * disk waits overlap (one read in flight per worker) and a batch costs the main thread two
 * messages each way, not a dozen calls per file.
 */

/*
 * Measured on the peers bench tree (1.9 GB, 37 451 files), first backup from a cold page
 * cache, 2 cores, two runs each under load ~3: 64 files and 4 batches in flight took
 * 26.7-29.5 s at 255-268 MB RSS; 16 files 28.0-28.4 s; 256 files 22.8-25.7 s but 381 MB;
 * 2 in flight 28.6-30.7 s; 8 in flight 26.9-28.8 s at 304-314 MB.
 */
/** A batch is sent when it has this many files, ... */
const BATCH_FILES = 64;
/** ... this many bytes (what a worker holds for it until its blobs are sealed), ... */
const BATCH_BYTES = 2 << 20;
/** ... or when the walk yields to the event loop. Batches on the workers at once: */
const BATCHES_IN_FLIGHT = 4;

interface Batch {
  files: WalkEntry[];
  bytes: number;
  waiting: { resolve(c: Content): void; reject(err: unknown): void }[];
  sent: boolean;
}

/** Reads small files on the workers, batching the calls; see above. */
export class SmallFileReader {
  private open: Batch | undefined;
  private readonly slots = new Semaphore(BATCHES_IN_FLIGHT);
  private task: BlobTask<SmallFile[], SmallFileResult[]> | undefined;

  constructor(private readonly opts: ContentOptions) {}

  /** The file's xattrs and content, as ContentSaver gives them. */
  read(item: WalkEntry): Promise<Content> {
    const batch = this.open ?? this.newBatch();
    batch.files.push(item);
    batch.bytes += Number(item.stat.size);
    const content = new Promise<Content>((resolve, reject) => {
      batch.waiting.push({ resolve, reject });
    });
    if (batch.files.length >= BATCH_FILES || batch.bytes >= BATCH_BYTES) this.send(batch);
    return content;
  }

  private newBatch(): Batch {
    const batch: Batch = { files: [], bytes: 0, waiting: [], sent: false };
    this.open = batch;
    setImmediate(() => this.send(batch));
    return batch;
  }

  private send(batch: Batch): void {
    if (this.open === batch) this.open = undefined;
    if (batch.sent) return;
    batch.sent = true;
    this.run(batch).catch((err) => {
      for (const w of batch.waiting) w.reject(err);
    });
  }

  private async run(batch: Batch): Promise<void> {
    await this.slots.acquire();
    try {
      const { sink, chunker } = this.opts;
      this.task ??= sink.task(workerModule('./read-task.js', import.meta.url), {
        params: chunker.params,
        table: chunker.table,
      } satisfies ReadTaskInit);
      const args = batch.files.map(({ path, stat }): SmallFile => {
        const { size, mtimeNs, ino } = stat;
        return { path, size, mtimeNs, ino };
      });
      const { result, blobs } = await sink.putFromTask('data', this.task, args);
      for (const [i, r] of result.entries()) {
        const { resolve, reject } = batch.waiting[i]!;
        try {
          if ('error' in r) {
            const cause = Object.assign(new Error(r.error.message), { code: r.error.code });
            throw new SourceError(batch.files[i]!.path, cause);
          }
          const parts = r.parts.map(({ blob, length }): ContentPart => {
            this.opts.onRead(length);
            return { id: blob < 0 ? null : blobs[blob]!.id, length };
          });
          const { xattrs, size, changed } = r;
          resolve({ xattrs, parts: mergeHoles(parts), size, changed });
        } catch (err) {
          reject(err);
        }
      }
    } finally {
      this.slots.release();
    }
  }
}
