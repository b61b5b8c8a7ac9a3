import { execFileSync, spawnSync } from 'node:child_process';
import {
  chmodSync,
  closeSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  rmSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { diffImages, diffTrees, storeTreeLoader, type TreeLoader } from '../src/diff/index.js';
import { rootTreeId } from '../src/files/browse.js';
import { LocalBackend } from '../src/repo/backend/local.js';
import type { BlobStore } from '../src/repo/blob-store.js';
import { Repository } from '../src/repo/repository.js';
import type { StoredSnapshot } from '../src/repo/snapshot.js';
import { mixedBlocks, Rng, randomBlock } from './data.js';
import type { ImagePair } from './image.js';

/**
 * `cairn diff` against `restic diff` on the same data in the same run:
 *   - two file snapshots of a generated tree of DIRS × FILES small files, the second taken
 *     after a few directories changed (files edited, added, removed, chmod'ed);
 *   - two image snapshots of the peers' two benchmark ext4 images (bench/image.ts: 2 GiB,
 *     the second with ~5% of its files changed) when given, else of a generated disk image
 *     before and after scattered 4 KiB writes; restic backs the image up as one file.
 * Both tools run as a user runs them (a new process, encrypted repository, text output to a
 * pipe); each diff is timed as the median of RUNS. A cairn command spends most of its time
 * starting Node and deriving the key, so the diff is also timed in-process, on an open
 * repository. restic is installed with apt-get when it is missing and we are root; without
 * it, only cairn is timed. Setup steps report their time on stderr.
 *
 * Standalone: `npm run build && node dist/bench/diff.js`.
 */
export interface DiffBenchOptions {
  dirs?: number;
  filesPerDir?: number;
  imageMiB?: number;
  /** The benchmark image pair to diff instead of a generated image. */
  images?: ImagePair;
  runs?: number;
}

export interface DiffBenchRow {
  case: string;
  tool: 'cairn' | 'restic' | 'cairn in-process';
  seconds: number;
  note?: string;
}

const CAIRN = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const PASSWORD = 'bench';
const CHANGED_DIRS = 5;
const IMAGE_EDITS = 64;

interface Tool {
  name: 'cairn' | 'restic';
  /** Runs a command; returns stdout. */
  run(args: string[]): string;
  /** The ID of the snapshot the last backup made. */
  latest(): string;
}

function cairnTool(dir: string): Tool {
  const env = {
    ...process.env,
    CAIRN_REPO: join(dir, 'cairn-repo'),
    CAIRN_CACHE_DIR: join(dir, 'cairn-cache'),
    CAIRN_PASSWORD: PASSWORD,
  };
  const run = (args: string[]) =>
    execFileSync(process.execPath, [CAIRN, ...args], { env, maxBuffer: 1 << 30 }).toString();
  return {
    name: 'cairn',
    run,
    latest: () => (JSON.parse(run(['snapshots', '--json'])) as { id: string }[]).at(-1)!.id,
  };
}

function resticTool(dir: string): Tool {
  const env = {
    ...process.env,
    RESTIC_REPOSITORY: join(dir, 'restic-repo'),
    RESTIC_CACHE_DIR: join(dir, 'restic-cache'),
    RESTIC_PASSWORD: PASSWORD,
  };
  const run = (args: string[]) =>
    execFileSync('restic', args, { env, maxBuffer: 1 << 30 }).toString();
  return {
    name: 'restic',
    run,
    latest: () => (JSON.parse(run(['snapshots', '--json'])) as { id: string }[]).at(-1)!.id,
  };
}

function hasRestic(): boolean {
  return spawnSync('restic', ['version'], { stdio: 'ignore' }).status === 0;
}

/** restic on PATH, installed from Debian's packages if need be (root only). */
function ensureRestic(): boolean {
  if (hasRestic()) return true;
  if (process.getuid?.() !== 0) return false;
  const install = () =>
    spawnSync('apt-get', ['install', '-y', '-q', 'restic'], { stdio: 'ignore' }).status === 0;
  if (!install()) {
    spawnSync('apt-get', ['update', '-q'], { stdio: 'ignore' });
    install();
  }
  return hasRestic();
}

/** DIRS directories of FILES files, 200 B – 4 KiB each, different content in every file. */
function makeTree(root: string, dirs: number, files: number): void {
  const pool = randomBlock(1 << 20, 3, 0);
  const rng = new Rng(5);
  for (let d = 0; d < dirs; d++) {
    const dir = join(root, `dir${String(d).padStart(4, '0')}`);
    mkdirSync(dir, { recursive: true });
    for (let f = 0; f < files; f++) {
      const at = rng.below(pool.length - 4096);
      writeFileSync(join(dir, `file${f}.dat`), pool.subarray(at, at + 200 + rng.below(3900)));
    }
  }
}

/** A few directories change: files edited, added, removed and chmod'ed in each. */
function changeTree(root: string, dirs: number): void {
  for (let i = 0; i < CHANGED_DIRS; i++) {
    const dir = join(root, `dir${String(Math.floor((i * dirs) / CHANGED_DIRS)).padStart(4, '0')}`);
    for (let f = 0; f < 3; f++) writeFileSync(join(dir, `file${f}.dat`), randomBlock(2000, 9, f));
    writeFileSync(join(dir, 'added-1.dat'), randomBlock(1000, 10, i));
    writeFileSync(join(dir, 'added-2.dat'), randomBlock(3000, 11, i));
    rmSync(join(dir, 'file3.dat'));
    chmodSync(join(dir, 'file4.dat'), 0o600);
  }
}

function makeImage(path: string, mib: number): void {
  const fd = openSync(path, 'w');
  for (const block of mixedBlocks(mib << 20, 2)) writeSync(fd, block);
  closeSync(fd);
}

/** Scattered 4 KiB writes, as an update touching a few files and the metadata around them. */
function changeImage(path: string, mib: number): void {
  const fd = openSync(path, 'r+');
  const rng = new Rng(13);
  for (let i = 0; i < IMAGE_EDITS; i++) {
    writeSync(fd, randomBlock(4096, 14, i), 0, 4096, rng.below(mib << 8) * 4096);
  }
  closeSync(fd);
}

/** Runs a setup step, telling on stderr how long it took (the bench's own budget). */
function phase<T>(what: string, fn: () => T): T {
  const started = performance.now();
  const result = fn();
  const secs = ((performance.now() - started) / 1000).toFixed(1);
  process.stderr.write(`diff bench: ${what}: ${secs} s\n`);
  return result;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

function timeDiff(tool: Tool, a: string, b: string, runs: number) {
  const times: number[] = [];
  let out = '';
  for (let i = 0; i < runs; i++) {
    const started = performance.now();
    out = tool.run(['diff', a, b]);
    times.push((performance.now() - started) / 1000);
  }
  return { seconds: median(times), out };
}

/** Snapshot IDs of the data before and after `change`, one pair per tool. */
function snapshotPairs(
  tools: Tool[],
  backup: (tool: Tool) => string[],
  change: () => void,
): [string, string][] {
  const ids: string[][] = tools.map(() => []);
  for (const step of [0, 1]) {
    if (step === 1) change();
    for (const [i, tool] of tools.entries()) {
      tool.run([...backup(tool), '-q']);
      ids[i]!.push(tool.latest());
    }
  }
  return ids.map(([a, b]) => [a!, b!]);
}

export async function benchDiff(opts: DiffBenchOptions = {}): Promise<DiffBenchRow[]> {
  const o = { dirs: 100, filesPerDir: 500, imageMiB: 128, images: undefined, runs: 3, ...opts };
  const dir = mkdtempSync(join(tmpdir(), 'cairn-bench-diff-'));
  try {
    const tools = [cairnTool(dir)];
    if (ensureRestic()) tools.push(resticTool(dir));
    // Both with their default key derivation, which every command pays once.
    tools[0]!.run(['init']);
    tools[1]?.run(['init', '-q']);
    const rows = [...(await treeCase(dir, tools, o)), ...(await imageCase(dir, tools, o))];
    if (!tools[1])
      rows.push({ case: 'restic', tool: 'restic', seconds: NaN, note: 'not installed' });
    return rows;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

type Options = Required<Omit<DiffBenchOptions, 'images'>> & Pick<DiffBenchOptions, 'images'>;

async function treeCase(dir: string, tools: Tool[], o: Options): Promise<DiffBenchRow[]> {
  const tree = join(dir, 'tree');
  phase(`writing ${o.dirs * o.filesPerDir} files`, () => makeTree(tree, o.dirs, o.filesPerDir));
  const pairs = phase('backing up the tree twice', () =>
    snapshotPairs(
      tools,
      () => ['backup', tree],
      () => changeTree(tree, o.dirs),
    ),
  );
  const name = `files: ${o.dirs * o.filesPerDir} files, ${CHANGED_DIRS} directories changed`;
  const rows = tools.map((tool, i): DiffBenchRow => {
    const { seconds, out } = timeDiff(tool, ...pairs[i]!, o.runs);
    const changes = out.split('\n').filter((l) => /^[-+MUT]\S* {2,}\//.test(l)).length;
    return { case: name, tool: tool.name, seconds, note: `${changes} change lines` };
  });
  rows.push({ case: name, ...(await inProcess(dir, pairs[0]!, o.runs)) });
  return rows;
}

async function imageCase(dir: string, tools: Tool[], o: Options): Promise<DiffBenchRow[]> {
  const image = join(dir, 'disk.img');
  const pair = o.images;
  const copy = (from: string) => execFileSync('cp', ['--sparse=always', from, image]);
  if (pair) phase('copying the first benchmark image', () => copy(pair.v1));
  else phase(`writing a ${o.imageMiB} MiB image`, () => makeImage(image, o.imageMiB));
  // restic has no image snapshots: it backs the image up as one file.
  const backup = (t: Tool) => [t.name === 'cairn' ? 'image' : 'backup', image];
  const change = pair ? () => copy(pair.v2) : () => changeImage(image, o.imageMiB);
  const pairs = phase('backing up the image twice', () => snapshotPairs(tools, backup, change));
  const name = pair
    ? `image: the two ${pair.size / 2 ** 20} MiB benchmark ext4 images`
    : `image: ${o.imageMiB} MiB, ${IMAGE_EDITS} scattered 4 KiB writes`;
  const rows = tools.map((tool, i): DiffBenchRow => {
    const { seconds, out } = timeDiff(tool, ...pairs[i]!, o.runs);
    const changed = /Changed: +(.*) in/.exec(out)?.[1] ?? /Added: +(.*)/.exec(out)?.[1];
    return { case: name, tool: tool.name, seconds, note: changed && `changed ${changed}` };
  });
  rows.push({ case: name, ...(await inProcess(dir, pairs[0]!, o.runs)) });
  return rows;
}

/**
 * The diff alone, in this process, with the repository already open: a cairn command's
 * time is mostly starting Node and deriving the key, which this leaves out.
 */
async function inProcess(dir: string, ids: [string, string], runs: number) {
  const repo = await Repository.open(new LocalBackend(join(dir, 'cairn-repo')), {
    cacheDir: join(dir, 'cairn-cache'),
    password: async () => PASSWORD,
  });
  try {
    const all = await repo.listSnapshots();
    const [a, b] = ids.map((id) => all.find((s) => s.id === id)!) as [
      StoredSnapshot,
      StoredSnapshot,
    ];
    const store = await repo.blobs();
    const times: number[] = [];
    let note = '';
    for (let i = 0; i < runs; i++) {
      const started = performance.now();
      note = a.kind === 'image' ? await imageDiff(store, a, b) : await treeDiff(store, a, b);
      times.push((performance.now() - started) / 1000);
    }
    return { tool: 'cairn in-process' as const, seconds: median(times), note };
  } finally {
    await repo.close();
  }
}

async function treeDiff(store: BlobStore, a: StoredSnapshot, b: StoredSnapshot) {
  const base = storeTreeLoader(store);
  let loads = 0;
  const load: TreeLoader = (id) => {
    loads++;
    return base(id);
  };
  let changes = 0;
  for await (const _ of diffTrees(load, rootTreeId(a), rootTreeId(b))) changes++;
  return `${changes} changes, ${loads} trees loaded`;
}

async function imageDiff(store: BlobStore, a: StoredSnapshot, b: StoredSnapshot) {
  let ranges = 0;
  for await (const e of diffImages(store, a, b)) if (e.type === 'range') ranges++;
  return `${ranges} ranges`;
}

function print(rows: DiffBenchRow[]): void {
  const w = Math.max(...rows.map((r) => r.case.length));
  for (const r of rows) {
    const s = Number.isNaN(r.seconds) ? '-' : `${r.seconds.toFixed(2)} s`;
    process.stdout.write(
      `${r.case.padEnd(w)}  ${r.tool.padEnd(16)}  ${s.padStart(8)}  ${r.note ?? ''}\n`,
    );
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) print(await benchDiff());
