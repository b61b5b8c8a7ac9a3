import type { PeerRow } from './compare.js';

/*
 * The peer comparison as a text table, and the targets from the issues checked against it:
 * each says met, missed, or n/a (a peer it needs did not run), with the figures it used.
 */

export interface TargetCheck {
  target: string;
  met: boolean | undefined;
  detail: string;
}

const MiB = 2 ** 20;

function fmt(x: number | undefined, digits = 0, suffix = ''): string {
  return x === undefined || !Number.isFinite(x) ? '-' : `${x.toFixed(digits)}${suffix}`;
}

export function peerTable(rows: PeerRow[]): string {
  const head = [
    'case',
    'tool',
    'wall s',
    'MiB/s',
    'files/s',
    'RSS MiB',
    'stored MiB',
    'added MiB',
    'x restic',
    'x borg',
    'of limit',
    'runs',
  ];
  const body = rows.map((r) => [
    r.case,
    r.tool,
    fmt(r.seconds, r.seconds < 10 ? 2 : 1),
    fmt(r.mibPerSec),
    fmt(r.filesPerSec),
    fmt(r.peakRssMiB),
    fmt(r.storedBytes / MiB),
    fmt(r.addedBytes / MiB, r.addedBytes < 10 * MiB ? 2 : 0),
    fmt(r.vsRestic, 2),
    fmt(r.vsBorg, 2),
    fmt(r.ofLimit === undefined ? undefined : r.ofLimit * 100, 0, '%'),
    String(r.runs),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => (i < 2 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  const out = [line(head)];
  let last = '';
  for (const b of body) {
    if (last && b[0] !== last) out.push('');
    last = b[0]!;
    out.push(line(b));
  }
  return `${out.join('\n')}\n`;
}

function row(rows: PeerRow[], c: string, tool: string): PeerRow | undefined {
  return rows.find((r) => r.case === c && r.tool === tool);
}

/** cairn's speed-up over `peer` in case `c` is at least `x`. */
function faster(rows: PeerRow[], c: string, peer: string, x: number) {
  const me = row(rows, c, 'cairn');
  const them = row(rows, c, peer);
  if (!me || !them) return { met: undefined, detail: `${peer} n/a` };
  const ratio = them.seconds / me.seconds;
  return { met: ratio >= x, detail: `${ratio.toFixed(2)}x ${peer}` };
}

function both(...checks: { met: boolean | undefined; detail: string }[]) {
  const met = checks.some((c) => c.met === undefined) ? undefined : checks.every((c) => c.met);
  return { met, detail: checks.map((c) => c.detail).join(', ') };
}

/** The smallest of the peers' values of `pick` in case `c`, and whose it is. */
function bestPeer(rows: PeerRow[], c: string, pick: (r: PeerRow) => number) {
  const peers = rows.filter((r) => r.case === c && r.tool !== 'cairn');
  if (peers.length === 0) return undefined;
  return peers.reduce((a, b) => (pick(b) < pick(a) ? b : a));
}

export function checkTargets(rows: PeerRow[]): TargetCheck[] {
  const out: TargetCheck[] = [];
  const add = (target: string, c: { met: boolean | undefined; detail: string }) =>
    out.push({ target, ...c });
  const restores = rows.filter((r) => r.restored);
  const short = restores.filter((r) => !r.restored!.complete);
  add('every restore gave back every file and byte (count and apparent size)', {
    met: short.length === 0,
    detail:
      short.length === 0
        ? `${restores.length} restores`
        : short
            .map((r) => `${r.tool} ${r.case}: ${r.restored!.files} files, ${r.restored!.bytes} B`)
            .join('; '),
  });
  const fb = 'files: first backup';
  const fr = 'files: restore first';
  add('file backup >= 1.5x restic (issue 3)', faster(rows, fb, 'restic', 1.5));
  add('file restore >= 1.5x restic (issue 3)', faster(rows, fr, 'restic', 1.5));
  add(
    'file backup >= 2x restic and >= 1.5x borg (issue 8)',
    both(faster(rows, fb, 'restic', 2), faster(rows, fb, 'borg', 1.5)),
  );
  add(
    'file restore >= 2x restic and >= 1.5x borg (issue 8)',
    both(faster(rows, fr, 'restic', 2), faster(rows, fr, 'borg', 1.5)),
  );
  add(
    'no-change re-backup <= restic time',
    faster(rows, 'files: no-change re-backup', 'restic', 1),
  );
  const cases = [...new Set(rows.map((r) => r.case))];
  const rss = cases.map((c) => {
    const me = row(rows, c, 'cairn');
    const r = row(rows, c, 'restic');
    return { c, met: me && r ? me.peakRssMiB <= r.peakRssMiB : undefined, me, r };
  });
  const missed = rss.filter((x) => x.met === false);
  add('peak RSS <= restic (every case)', {
    met: rss.some((x) => x.met === undefined) ? undefined : missed.length === 0,
    detail:
      missed.length === 0
        ? `${rss.length} cases`
        : `missed in ${missed.map((x) => `${x.c} (${fmt(x.me!.peakRssMiB)} vs ${fmt(x.r!.peakRssMiB)} MiB)`).join('; ')}`,
  });
  if (!cases.some((c) => c.startsWith('image:'))) return out;
  const fi = 'image: first image';
  add(
    'image backup >= 2x restic and >= borg',
    both(faster(rows, fi, 'restic', 2), faster(rows, fi, 'borg', 1)),
  );
  add('image restore >= 2x restic', faster(rows, 'image: restore first', 'restic', 2));
  const si = 'image: second image';
  const best = bestPeer(rows, si, (r) => r.addedBytes);
  const me = row(rows, si, 'cairn');
  add("second image's bytes added <= best peer", {
    met: best && me ? me.addedBytes <= best.addedBytes : undefined,
    detail:
      best && me
        ? `${fmt(me.addedBytes / MiB, 1)} MiB vs ${best.tool} ${fmt(best.addedBytes / MiB, 1)} MiB`
        : 'n/a',
  });
  for (const [c, what] of [
    ['files: no-change re-backup', 'file'],
    ['image: second image', 'image'],
  ] as const) {
    const small = bestPeer(rows, c, (r) => r.storedBytes);
    const mine = row(rows, c, 'cairn');
    add(`${what} repository size within 2% of the smallest peer`, {
      met: small && mine ? mine.storedBytes <= small.storedBytes * 1.02 : undefined,
      detail:
        small && mine
          ? `${fmt(mine.storedBytes / MiB)} MiB vs ${small.tool} ${fmt(small.storedBytes / MiB)} MiB (${fmt((mine.storedBytes / small.storedBytes - 1) * 100, 1, '%')})`
          : 'n/a',
    });
  }
  return out;
}

export function targetLines(checks: TargetCheck[]): string {
  const mark = (m: boolean | undefined) => (m === undefined ? 'n/a   ' : m ? 'met   ' : 'MISSED');
  return checks.map((c) => `${mark(c.met)}  ${c.target}: ${c.detail}`).join('\n') + '\n';
}
