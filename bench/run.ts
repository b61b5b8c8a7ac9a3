import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { benchPeers, type PeerResult } from './compare.js';
import { loadDataset } from './dataset.js';
import { benchExtras, type ExtraRow, extraTable } from './extras.js';
import type { ToolName } from './peers.js';
import { checkTargets, peerTable, targetLines } from './report.js';
import { benchStages, type StageResult, stageTable } from './stages.js';

/**
 * `npm run bench`: two parts, each printed as a table and saved together as JSON in
 * bench/.cache/results.json.
 *   stages — throughput of each stage and of the whole write path on 1 GiB of mixed and of
 *            incompressible data, beside the machine's limit (read + SHA-256 on every core);
 *   peers  — cairn against restic, borg and casync on a generated file tree (80 000 files,
 *            1.9 GB; --scale 0.625: 50 000 files, 1.3 GB) and a 2 GiB ext4 image, each case
 *            for every tool.
 * Flags: --quick (tiny data), --scale X (size of the peers' data, default 1),
 * --runs N (runs of the short cases, default 3),
 * --only stages,peers,diff,mount,image-files,maintenance,index,s3
 * (default stages,peers; --all for every one; index's 10^7-entry case only with
 * CAIRN_BENCH_INDEX_MAX=1e7),
 * --tools cairn,restic,borg,casync, --no-images, --warm (keep the page cache: by default it
 * is dropped before every timed command so every tool reads from disk; --quick keeps it).
 */
const MiB = 2 ** 20;
const cacheDir = new URL('./.cache/', new URL('../../bench/', import.meta.url)).pathname;

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    scale: { type: 'string' },
    runs: { type: 'string' },
    only: { type: 'string' },
    tools: { type: 'string', default: 'cairn,restic,borg,casync' },
    all: { type: 'boolean', default: false },
    'no-images': { type: 'boolean', default: false },
    warm: { type: 'boolean', default: false },
  },
});
const quick = args.quick;
// Scale 1: 80 000 files, 1.9 GB and 16 minutes in all here at load average 2-6 (51 minutes
// at 11-14, with other engineers' runs); --scale 0.625 gives 50 000 files, 1.3 GB.
const scale = Number(args.scale ?? (quick ? 0.005 : 1));
const runs = Number(args.runs ?? (quick ? 1 : 3));
const only =
  args.only?.split(',') ??
  (args.all
    ? ['stages', 'peers', 'diff', 'mount', 'image-files', 'maintenance', 'index', 's3']
    : ['stages', 'peers']);
const STAGE_BYTES = (quick ? 64 : 1024) * MiB;

async function main(): Promise<void> {
  const started = new Date();
  let stages: StageResult | undefined;
  if (only.includes('stages')) {
    stages = await benchStages(cacheDir, STAGE_BYTES, runs);
    process.stdout.write(stageTable(stages.rows));
    process.stdout.write(`(${STAGE_BYTES / MiB} MiB per case, median of ${runs})\n\n`);
  }
  let peers: PeerResult | undefined;
  let dataset: ReturnType<typeof describe> | undefined;
  if (only.includes('peers')) {
    const images = !args['no-images'] && process.getuid?.() === 0;
    const data = loadDataset(cacheDir, scale, images);
    dataset = describe(data);
    peers = await benchPeers(data, {
      work: join(cacheDir, 'peers-work'),
      tools: args.tools.split(',') as ToolName[],
      runs,
      cold: !(quick || args.warm),
      limitMibPerSec: (!(quick || args.warm) && stages?.coldLimit) || stages?.limit,
    });
    process.stdout.write(peerTable(peers.rows));
    process.stdout.write(`\n${targetLines(checkTargets(peers.rows))}`);
    process.stdout.write(`\n${notes(peers, dataset, images)}`);
  }
  let extras: ExtraRow[] | undefined;
  const extraSections = ['diff', 'mount', 'image-files', 'maintenance', 'index', 's3'];
  if (only.some((s) => extraSections.includes(s))) {
    extras = await benchExtras(only, quick);
    process.stdout.write(`\n${extraTable(extras)}`);
  }
  mkdirSync(cacheDir, { recursive: true });
  const out = join(cacheDir, 'results.json');
  const result = {
    date: started.toISOString(),
    seconds: (Date.now() - started.getTime()) / 1000,
    argv: process.argv.slice(2),
    machine: { cpus: cpus().length, cpu: cpus()[0]?.model, memory: totalmem() },
    node: process.version,
    stages: stages && { bytes: STAGE_BYTES, runs, ...stages },
    peers: peers && { scale, dataset, ...peers, targets: checkTargets(peers.rows) },
    extras,
  };
  // results.json is the latest run; each run is also kept under its date.
  const dated = join(cacheDir, `results-${result.date.replace(/[:.]/g, '-')}.json`);
  for (const file of [out, dated]) writeFileSync(file, `${JSON.stringify(result, null, 2)}\n`);
  process.stdout.write(`\nJSON in ${out} and ${dated}; ${result.seconds.toFixed(0)} s in all\n`);
}

function describe(data: ReturnType<typeof loadDataset>) {
  return {
    files: data.files.length,
    bytes: data.bytes,
    changedFiles: data.changedFiles,
    changedBytes: data.changedBytes,
    modified: data.change.modified.length,
    added: data.change.added.length,
    removed: data.change.removed.length,
    image: data.images && {
      size: data.images.size,
      files: data.images.files,
      bytes: data.images.bytes,
    },
  };
}

function notes(p: PeerResult, d: ReturnType<typeof describe>, images: boolean): string {
  const lines = [
    `tree: ${d.files} files, ${(d.bytes / 1e9).toFixed(2)} GB; changed: ${d.modified} ` +
      `modified, ${d.added} added, ${d.removed} removed`,
    d.image
      ? `image: ${d.image.size / MiB} MiB ext4 holding ${d.image.files} files ` +
        `(${(d.image.bytes / 1e6).toFixed(0)} MB)`
      : `image cases skipped${images ? '' : ' (need root for loop mounts)'}`,
    `versions: ${Object.entries(p.versions)
      .map(([k, v]) => `${k} ${v}`)
      .join(', ')}, node ${process.version}` +
      (p.missing.length ? `; not installed: ${p.missing.join(', ')}` : ''),
    p.cachesDropped
      ? 'page cache dropped before every timed command (of limit: against the cold limit)'
      : 'page cache kept warm for every tool (--quick, --warm or not root)',
    `wall time: median of up to ${runs} runs for no-change re-backups (one run when over ` +
      `60 s), one run otherwise; RSS: GNU time %M; stored: du -sb of the repository`,
    `load average ${p.loadStart} at the start, ${p.loadEnd} at the end; ` +
      `${(p.seconds / 60).toFixed(1)} min`,
  ];
  return `${lines.join('\n')}\n`;
}

await main();
