import { readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BlobWorkerPool } from '../../src/repo/worker-pool.js';
import { type TempDir, tempDir } from '../helpers.js';

let d: TempDir;
beforeEach(async () => {
  d = await tempDir();
});
afterEach(() => d.cleanup());

describe('BlobWorkerPool', () => {
  it('closes only once every worker has finished importing its task modules', async () => {
    // A task module whose import takes a while, then leaves a mark per worker.
    const module = join(d.path, 'slow-task.mjs');
    await writeFile(
      module,
      `import { threadId } from 'node:worker_threads';
import { writeFileSync } from 'node:fs';
await new Promise((resolve) => setTimeout(resolve, 300));
writeFileSync(${JSON.stringify(d.path)} + '/imported-' + threadId, '');
export const createTask = () => () => ({ result: null, blobs: [] });
`,
    );
    const pool = new BlobWorkerPool({ encryptionKey: null, idKey: null, compressionLevel: 1 }, 2);
    pool.loadTask(pathToFileURL(module), null);
    await pool.close();
    const marks = (await readdir(d.path)).filter((name) => name.startsWith('imported-'));
    expect(marks).toHaveLength(2);
  });
});
