import { lstatSync } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import { asBuffer } from '../util/bytes.js';
import { Excludes } from './excludes.js';
import { listDir, type WalkEntry } from './fsmeta.js';
import type { StatAheadInit, StatAheadReport } from './stat-ahead.js';

/*
 * The thread body of StatAhead (stat-ahead.ts): lists and lstats the backup's directories in
 * the walk's order (depth first, names sorted), with its exclusions and its one-file-system
 * rule, and keeps nothing. Errors are the walk's to report: here a directory that cannot be
 * read is passed over.
 */

if (parentPort) {
  const port = parentPort;
  const init = workerData as StatAheadInit;
  const excludes = await Excludes.load(init.excludes);
  const report: StatAheadReport = { dirs: 0, entries: 0 };
  for (const given of init.roots) {
    const root = asBuffer(given);
    let dev: bigint;
    try {
      const st = lstatSync(root, { bigint: true });
      if (!st.isDirectory()) continue;
      dev = st.dev;
    } catch {
      continue;
    }
    // Directories still to list, the next one last: popped in the walk's order.
    const stack: Buffer[] = [root];
    for (let dir = stack.pop(); dir; dir = stack.pop()) {
      let entries: WalkEntry[];
      try {
        ({ entries } = await listDir(dir, excludes));
      } catch {
        continue;
      }
      report.dirs++;
      report.entries += entries.length;
      for (let i = entries.length - 1; i >= 0; i--) {
        const e = entries[i]!;
        if (e.kind === 'dir' && (!init.oneFileSystem || e.stat.dev === dev)) stack.push(e.path);
      }
    }
  }
  port.postMessage(report);
}
