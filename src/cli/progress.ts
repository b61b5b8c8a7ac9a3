import cliProgress from 'cli-progress';
import { formatBytes } from './output.js';

export interface ProgressState {
  bytesDone: number;
  /** Total bytes expected, when known (enables percent and ETA). */
  bytesTotal?: number;
  filesDone?: number;
  current?: string;
}

export interface Progress {
  update(state: ProgressState): void;
  stop(): void;
}

/** Progress on stderr via cli-progress: bytes, files, rate, ETA, current item. */
export function createProgress(enabled: boolean): Progress {
  if (!enabled) return { update() {}, stop() {} };
  const started = Date.now();
  const bar = new cliProgress.SingleBar(
    {
      stream: process.stderr,
      hideCursor: true,
      clearOnComplete: true,
      etaBuffer: 50,
      fps: 4,
      format: (_opts, params, payload: Record<string, string>) => {
        const pct = params.total > 1 ? `${Math.floor(params.progress * 100)}% ` : '';
        const eta = params.total > 1 && Number.isFinite(params.eta) ? ` ETA ${params.eta}s` : '';
        return `${pct}${payload.text}${eta}`;
      },
    },
    cliProgress.Presets.shades_classic,
  );
  bar.start(1, 0, { text: '' });
  return {
    update(s) {
      const secs = Math.max(0.001, (Date.now() - started) / 1000);
      const rate = `${formatBytes(s.bytesDone / secs)}/s`;
      const files = s.filesDone === undefined ? '' : `${s.filesDone} files, `;
      const current = s.current ? ` ${truncate(s.current, 40)}` : '';
      const text = `${files}${formatBytes(s.bytesDone)}, ${rate}${current}`;
      if (s.bytesTotal) bar.setTotal(s.bytesTotal);
      bar.update(s.bytesTotal ? s.bytesDone : 0, { text });
    },
    stop() {
      bar.stop();
    },
  };
}

function truncate(s: string, n: number): string {
  return s.length <= n ? s : `…${s.slice(-(n - 1))}`;
}
