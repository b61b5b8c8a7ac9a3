import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/*
 * The other engineers' benches (diff.ts, mount.ts, image-files.ts, maintenance.ts,
 * index-scale.ts, s3.ts), run from `npm run bench` with `--only diff,mount,image-files,
 * maintenance,index,s3` (or `--all`). Each is
 * loaded only when asked for and a failure is reported in its row, so one broken bench does
 * not lose the others' figures.
 */

export interface ExtraRow {
  section: string;
  case: string;
  tool?: string;
  seconds?: number;
  mibPerSec?: number;
  note?: string;
  /** Other figures of the case by name (IOPS, bytes read), for the JSON. */
  values?: Record<string, number | undefined>;
}

const MiB = 2 ** 20;

async function guarded(section: string, fn: () => Promise<ExtraRow[]>): Promise<ExtraRow[]> {
  try {
    return await fn();
  } catch (e) {
    return [{ section, case: 'failed', note: (e as Error).message.split('\n')[0] }];
  }
}

export async function benchExtras(sections: string[], quick: boolean): Promise<ExtraRow[]> {
  const rows: ExtraRow[] = [];
  if (sections.includes('diff')) {
    rows.push(
      ...(await guarded('diff', async () => {
        const { benchDiff } = await import('./diff.js');
        const opts = quick ? { dirs: 10, filesPerDir: 50, imageMiB: 32, runs: 1 } : {};
        const images = await benchmarkImages(quick);
        return (await benchDiff({ ...opts, images })).map((r) => ({ section: 'diff', ...r }));
      })),
    );
  }
  if (sections.includes('mount')) {
    rows.push(
      ...(await guarded('mount', async () => (await import('./mount.js')).mountRows(quick))),
    );
  }
  if (sections.includes('image-files')) {
    rows.push(
      ...(await guarded('image-files', async () =>
        (await import('./image-files.js')).imageFilesRows(quick),
      )),
    );
  }
  if (sections.includes('maintenance')) {
    rows.push(
      ...(await guarded('maintenance', async () => {
        const m = await import('./maintenance.js');
        const dir = await mkdtemp(join(tmpdir(), 'cairn-bench-maint-'));
        try {
          const repo = await m.buildBenchRepo(dir, (quick ? 32 : 512) * MiB);
          const results = [await m.benchCheckReadData(repo), await m.benchPrune(repo)];
          return results.map((r) => ({
            section: 'maintenance',
            case: r.name,
            seconds: r.seconds,
            mibPerSec: r.mbPerSec,
            note: r.note,
          }));
        } finally {
          await rm(dir, { recursive: true, force: true });
        }
      })),
    );
    rows.push(
      ...(await guarded('maintenance', async () =>
        (await import('./maintenance.js')).manySnapshotRows(quick),
      )),
    );
  }
  if (sections.includes('index')) {
    rows.push(
      ...(await guarded('index', async () => (await import('./index-scale.js')).indexRows(quick))),
    );
  }
  if (sections.includes('s3')) {
    rows.push(...(await guarded('s3', async () => (await import('./s3.js')).s3Rows(quick))));
  }
  return rows;
}

export function extraTable(rows: ExtraRow[]): string {
  const cells = rows.map((r) => [
    r.section,
    r.case,
    r.tool ?? '',
    r.seconds === undefined || Number.isNaN(r.seconds) ? '-' : `${r.seconds.toFixed(2)} s`,
    r.mibPerSec === undefined ? '-' : `${r.mibPerSec.toFixed(0)} MiB/s`,
    r.note ?? '',
  ]);
  const w = [0, 1, 2, 3, 4].map((i) => Math.max(...cells.map((c) => c[i]!.length)));
  const lines = cells.map((c) =>
    c
      .map((x, i) => (i === 5 ? x : i >= 3 ? x.padStart(w[i]!) : x.padEnd(w[i]!)))
      .join('  ')
      .trimEnd(),
  );
  return `${lines.join('\n')}\n`;
}

/** The peers' two ext4 images (built once, cached), where we may build them: as root. */
async function benchmarkImages(quick: boolean) {
  if (process.getuid?.() !== 0) return undefined;
  const { ensureImages } = await import('./image.js');
  const { treeSpec } = await import('./tree.js');
  const scale = quick ? 0.005 : 1;
  const dir = new URL(`./.cache/peers-${scale}/images`, new URL('../../bench/', import.meta.url));
  return ensureImages(dir.pathname, treeSpec(scale), scale);
}
