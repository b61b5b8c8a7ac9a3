import { CairnError } from '../../errors.js';
import { restoreImage } from '../../image/index.js';
import type { Repository } from '../../repo/repository.js';
import type { StoredSnapshot } from '../../repo/snapshot.js';
import { type GlobalOptions, showProgress, whileNotInterrupted } from '../context.js';
import { formatBytes, printJson, printLine } from '../output.js';
import { createProgress } from '../progress.js';

export interface RestoreImageFlags {
  target: string;
  delta?: boolean;
  verify?: boolean;
  include?: string[];
  exclude?: string[];
}

/** `restore` of an image snapshot onto a file (created sparse) or a block device. */
export async function restoreImageCommand(
  repo: Repository,
  snap: StoredSnapshot,
  flags: RestoreImageFlags,
  g: GlobalOptions,
): Promise<void> {
  if (flags.include?.length || flags.exclude?.length) {
    throw new CairnError(
      '--include/--exclude select files: add --files to extract files from the image',
      'Usage',
    );
  }
  const progress = createProgress(showProgress(g));
  const result = await whileNotInterrupted(async (signal) => {
    try {
      return await restoreImage(repo, snap, flags.target, {
        delta: flags.delta,
        verify: flags.verify,
        signal,
        onProgress: (p) => progress.update({ bytesDone: p.bytesDone, bytesTotal: p.bytesTotal }),
      });
    } finally {
      progress.stop();
    }
  });
  if (g.json) {
    printJson({
      message_type: 'summary',
      size: result.size,
      target_kind: result.targetKind,
      bytes_written: result.bytesWritten,
      bytes_skipped: result.bytesSkipped,
      chunks_written: result.chunksWritten,
      chunks_skipped: result.chunksSkipped,
      ...(flags.verify ? { verified: result.verified } : {}),
      total_duration: result.totalDuration,
    });
  } else if (!g.quiet) {
    const verified = flags.verify ? ', verified' : '';
    printLine(
      `restored ${formatBytes(result.size)} onto ${flags.target} (${result.targetKind}): ` +
        `${formatBytes(result.bytesWritten)} written, ${formatBytes(result.bytesSkipped)} ` +
        `skipped${verified} in ${result.totalDuration.toFixed(1)}s`,
    );
  }
}
