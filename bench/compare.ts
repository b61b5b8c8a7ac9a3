import { linkSync, lstatSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Dataset } from './dataset.js';
import { diskUsage, dropCaches, loadAverage, median, run, timed } from './measure.js';
import { type Command, installPeers, makeTools, type Tool, type ToolName } from './peers.js';

/*
 * cairn against restic, borg and casync on the same data in the same run. Every case runs
 * for every tool before the next case starts, the tools in a rotating order, so a change in
 * the machine's load (it is shared) falls on all of them alike. Each tool has one fresh
 * repository for the file cases and one for the image cases.
 */

export interface PeerRow {
  case: string;
  tool: ToolName;
  /** Median wall time of `runs` runs. */
  seconds: number;
  runs: number;
  samples: number[];
  /** Bytes the case covers (the tree's or the image's apparent size) per second. */
  mibPerSec: number;
  filesPerSec?: number;
  peakRssMiB: number;
  /** Repository size after the case (`du -sb`), and what the case added to it. */
  storedBytes: number;
  addedBytes: number;
  /** Restores: what the target held, against what the case covers. */
  restored?: { files: number; bytes: number; complete: boolean };
  vsRestic?: number;
  vsBorg?: number;
  ofLimit?: number;
}

export interface PeerOptions {
  work: string;
  tools: ToolName[];
  /** Runs of the short cases (median); long cases run once. */
  runs: number;
  /** MiB/s of reading and hashing on every core, for the "of limit" ratio. */
  limitMibPerSec?: number;
  /** Drop the page cache before every timed command (root only); else all run warm. */
  cold: boolean;
}

export interface PeerResult {
  rows: PeerRow[];
  versions: Partial<Record<ToolName, string>>;
  missing: string[];
  cachesDropped: boolean;
  loadStart: string;
  loadEnd: string;
  seconds: number;
}

interface Case {
  name: string;
  repo: 'files' | 'images';
  bytes: number;
  files?: number;
  /** Snapshot label the case makes (per run: `${label}-${run}` when it runs more than once). */
  label?: string;
  runs: number;
  before?: () => void;
  after?: () => void;
  command(tool: Tool, repo: string, label: string, target: string): Command;
  restore?: boolean;
}

/** A run longer than this is not repeated: the median is over the runs that fit. */
const LONG_RUN_SECONDS = 60;

function cases(data: Dataset, image: string, runs: number): Case[] {
  const { root } = data;
  const n = data.files.length;
  const fileCases: Omit<Case, 'runs' | 'command'>[] = [
    { name: 'files: first backup', repo: 'files', bytes: data.bytes, files: n, label: 'files1' },
    {
      name: 'files: changed re-backup',
      repo: 'files',
      bytes: data.changedBytes,
      files: data.changedFiles,
      label: 'files2',
      before: () => data.toChanged(),
    },
    {
      name: 'files: no-change re-backup',
      repo: 'files',
      bytes: data.changedBytes,
      files: data.changedFiles,
      label: 'files3',
    },
    { name: 'files: restore first', repo: 'files', bytes: data.bytes, files: n, restore: true },
  ];
  const list: Case[] = fileCases.map((c) => ({
    ...c,
    runs: c.name.includes('no-change') ? runs : 1,
    command: (t: Tool, repo: string, label: string, target: string) =>
      c.restore ? t.restore(repo, 'files1', target) : t.backup(repo, root, label),
  }));
  const images = data.images;
  if (!images) return list;
  const use = (version: string) => () => {
    rmSync(image, { force: true });
    linkSync(version, image);
  };
  const imageCase = (name: string, label: string, version: string): Case => ({
    name,
    repo: 'images',
    bytes: images.size,
    label,
    runs: 1,
    before: use(version),
    command: (t, repo, l) => t.image(repo, image, l),
  });
  list.push(
    imageCase('image: first image', 'image1', images.v1),
    imageCase('image: second image', 'image2', images.v2),
    {
      name: 'image: restore first',
      repo: 'images',
      bytes: images.size,
      runs: 1,
      restore: true,
      after: () => rmSync(image, { force: true }),
      command: (t, repo, _l, target) => t.restoreImage(repo, 'image1', target),
    },
  );
  return list;
}

function rotate<T>(xs: T[], by: number): T[] {
  const k = by % xs.length;
  return [...xs.slice(k), ...xs.slice(0, k)];
}

function log(msg: string): void {
  process.stderr.write(`bench: ${msg}\n`);
}

interface Sample {
  seconds: number;
  peakRssKiB: number;
  stored: number;
  added: number;
  restored?: { files: number; bytes: number };
}

/** Regular files under `dir` and their apparent bytes: a restore's sanity check. */
function regularFiles(dir: string): { files: number; bytes: number } {
  let files = 0;
  let bytes = 0;
  for (const e of readdirSync(dir, { recursive: true, withFileTypes: true })) {
    if (!e.isFile()) continue;
    files++;
    bytes += lstatSync(join(e.parentPath, e.name)).size;
  }
  return { files, bytes };
}

/** One timed run of case `c` for `tool`, with its untimed preparation and checks. */
async function runOnce(c: Case, tool: Tool, r: number, repo: string, opts: PeerOptions) {
  const label = c.runs > 1 ? `${c.label}-${r}` : (c.label ?? '');
  const target = join(opts.work, 'restore', tool.name);
  rmSync(target, { recursive: true, force: true });
  mkdirSync(target, { recursive: true });
  const storedBefore = diskUsage([repo]);
  const dropped = opts.cold && dropCaches();
  const t = await timed(c.command(tool, repo, label, target), join(opts.work, `${tool.name}.log`));
  if (c.label) tool.remember?.(repo, label);
  const restored = c.restore ? regularFiles(target) : undefined;
  rmSync(target, { recursive: true, force: true });
  const stored = diskUsage([repo]);
  log(`${c.name}, ${tool.name}: ${t.seconds.toFixed(1)} s`);
  return { dropped, sample: { ...t, stored, added: stored - storedBefore, restored } };
}

export async function benchPeers(data: Dataset, opts: PeerOptions): Promise<PeerResult> {
  const started = performance.now();
  const loadStart = loadAverage();
  installPeers(opts.tools);
  rmSync(opts.work, { recursive: true, force: true });
  mkdirSync(opts.work, { recursive: true });
  const { tools, missing } = makeTools(opts.tools, opts.work);
  const repoOf = (t: Tool, kind: string) => join(opts.work, t.name, `${kind}-repo`);
  for (const t of tools) {
    mkdirSync(join(opts.work, t.name), { recursive: true });
    for (const kind of ['files', 'images']) for (const c of t.init(repoOf(t, kind))) run(c);
  }
  const image = join(opts.work, 'source', 'disk.img');
  mkdirSync(join(opts.work, 'source'), { recursive: true });
  const rows: PeerRow[] = [];
  let cachesDropped = opts.cold;
  try {
    for (const [i, c] of cases(data, image, opts.runs).entries()) {
      c.before?.();
      const samples = new Map<ToolName, Sample[]>(tools.map((t) => [t.name, []]));
      for (let r = 0; r < c.runs; r++) {
        for (const tool of rotate(tools, i + r)) {
          const mine = samples.get(tool.name)!;
          if (r > 0 && mine[0]!.seconds > LONG_RUN_SECONDS) continue;
          const { dropped, sample } = await runOnce(c, tool, r, repoOf(tool, c.repo), opts);
          cachesDropped &&= dropped;
          mine.push(sample);
        }
      }
      c.after?.();
      rows.push(...summarise(c, samples, opts.limitMibPerSec));
    }
  } finally {
    data.toFirst();
    rmSync(image, { force: true });
  }
  rmSync(opts.work, { recursive: true, force: true });
  return {
    rows,
    versions: Object.fromEntries(tools.map((t) => [t.name, t.version])),
    missing,
    cachesDropped,
    loadStart,
    loadEnd: loadAverage(),
    seconds: (performance.now() - started) / 1000,
  };
}

function summarise(c: Case, samples: Map<ToolName, Sample[]>, limit?: number): PeerRow[] {
  const rows: PeerRow[] = [];
  for (const [tool, s] of samples) {
    const seconds = median(s.map((x) => x.seconds));
    rows.push({
      case: c.name,
      tool,
      seconds,
      runs: s.length,
      samples: s.map((x) => Number(x.seconds.toFixed(3))),
      mibPerSec: c.bytes / 2 ** 20 / seconds,
      filesPerSec: c.files === undefined ? undefined : c.files / seconds,
      peakRssMiB: median(s.map((x) => x.peakRssKiB)) / 1024,
      storedBytes: s.at(-1)!.stored,
      addedBytes: median(s.map((x) => x.added)),
    });
    const got = s.at(-1)!.restored;
    if (got) {
      const complete = got.bytes === c.bytes && got.files === (c.files ?? 1);
      rows.at(-1)!.restored = { ...got, complete };
    }
  }
  const restic = rows.find((r) => r.tool === 'restic');
  const borg = rows.find((r) => r.tool === 'borg');
  for (const r of rows) {
    if (restic) r.vsRestic = restic.seconds / r.seconds;
    if (borg) r.vsBorg = borg.seconds / r.seconds;
    if (limit) r.ofLimit = r.mibPerSec / limit;
  }
  return rows;
}
