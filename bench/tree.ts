import {
  closeSync,
  ftruncateSync,
  mkdirSync,
  openSync,
  rmSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { mixedBlocks, Rng } from './data.js';

/*
 * A deterministic file tree that looks like a home directory or a source checkout: many
 * small source-like text files, some medium binaries, a few large files (a disk-like file
 * with zero runs, a media-like incompressible file, a log), sparse files, nested directories.
 * `scale` 1 gives ~80 000 files and ~1.9 GB (1.6 GB of data: the sparse files are mostly
 * holes); every count and size scales with it. `changeOf` describes a ~5% change of a tree
 * (files modified, added, removed) that `applyChange` makes and `revertChange` undoes.
 * File contents come from data.ts, keyed by a per-file seed, so no two files share bytes.
 */

export type FileKind = 'text' | 'binary' | 'media' | 'zeros' | 'sparse';

export interface FileSpec {
  path: string;
  size: number;
  kind: FileKind;
  seed: number;
  /**
   * Small files are consecutive slices of one stream of `bytes` bytes per group of 64
   * files of a kind: a stream per file would spend most of the time building data.ts's
   * vocabulary. Slices do not overlap, so no two files share bytes.
   */
  group?: { seed: number; bytes: number; offset: number };
}

const GROUP_FILES = 64;

/** How a modified file differs from its spec: rewritten, a few 4 KiB writes, or appended. */
export type Patch =
  | { how: 'rewrite'; spec: FileSpec }
  | { how: 'overwrite'; offsets: number[]; seed: number }
  | { how: 'append'; bytes: number; seed: number };

export interface TreeChange {
  modified: { spec: FileSpec; patch: Patch }[];
  added: FileSpec[];
  removed: FileSpec[];
}

const KiB = 1024;
const MiB = 1024 * KiB;
const EXT: Record<FileKind, string[]> = {
  text: ['c', 'h', 'ts', 'js', 'py', 'go', 'md', 'json', 'txt', 'html', 'css', 'yaml'],
  binary: ['o', 'so', 'bin', 'dat', 'pyc', 'class', 'a'],
  media: ['jpg', 'png', 'mp3', 'zip', 'gz'],
  zeros: ['db', 'qcow', 'vdi'],
  sparse: ['raw'],
};

/** A 32-bit mix (murmur3's finalizer): neighbouring indexes give unrelated seeds. */
export function mix(x: number): number {
  let h = x >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/** Directory names: a random tree, each directory under an earlier one, at most 7 deep. */
function directories(rng: Rng, count: number): string[] {
  const dirs = [''];
  const depth = [0];
  for (let i = 1; i < count; i++) {
    let p = rng.below(i);
    while (depth[p]! >= 7) p = rng.below(i);
    const word = ['src', 'lib', 'doc', 'test', 'pkg', 'res', 'data', 'cfg'][rng.below(8)];
    dirs.push(join(dirs[p]!, `${word}-${i}`));
    depth.push(depth[p]! + 1);
  }
  return dirs.slice(1);
}

function pick<T>(rng: Rng, xs: readonly T[]): T {
  return xs[rng.below(xs.length)]!;
}

/** A small or medium file in one of `dirs`: its kind drawn from `kinds` (cumulative odds). */
function randomFile(
  rng: Rng,
  dirs: string[],
  name: string,
  lo: number,
  hi: number,
  kinds: [FileKind, number][],
  seed: number,
): FileSpec {
  const u = rng.next() / 0x1_0000_0000;
  const kind = kinds.find(([, p]) => u < p)?.[0] ?? kinds.at(-1)![0];
  const size = rng.logUniform(lo, hi);
  return { path: join(pick(rng, dirs), `${name}.${pick(rng, EXT[kind])}`), size, kind, seed };
}

const SMALL_KINDS: [FileKind, number][] = [
  ['text', 0.85],
  ['binary', 1],
];
const MEDIUM_KINDS: [FileKind, number][] = [
  ['binary', 0.5],
  ['text', 0.75],
  ['media', 0.9],
  ['zeros', 1],
];

/** The files of the tree at `scale`; paths are relative, '/'-separated. */
export function treeSpec(scale: number): FileSpec[] {
  const rng = new Rng(42);
  const total = Math.max(40, Math.round(80_000 * scale));
  const dirs = directories(rng, Math.max(4, Math.round(total / 30)));
  const big = (mib: number) => Math.max(64 * KiB, Math.round(mib * MiB * scale));
  // The large files keep their size (>= 100 MB) down to scale 0.5; smaller is a smoke test.
  const large = (mib: number) => (scale >= 0.5 ? mib * MiB : big(mib));
  const files: FileSpec[] = [
    { path: 'large/vm-disk.img', size: large(160), kind: 'zeros', seed: mix(1) },
    { path: 'large/video.mp4', size: large(120), kind: 'media', seed: mix(2) },
    { path: 'large/app.log', size: large(100), kind: 'text', seed: mix(3) },
  ];
  const sparse = Math.max(1, Math.round(8 * Math.sqrt(scale)));
  for (let i = 0; i < sparse; i++) {
    files.push({ path: `sparse/s${i}.raw`, size: big(32), kind: 'sparse', seed: mix(10 + i) });
  }
  const medium = Math.max(4, Math.round(900 * scale));
  for (let i = 0; i < medium; i++) {
    files.push(randomFile(rng, dirs, `m${i}`, 32 * KiB, 4 * MiB, MEDIUM_KINDS, mix(1e6 + i)));
  }
  const groups = new Map<FileKind, FileSpec[]>();
  for (let i = files.length; i < total; i++) {
    const spec = randomFile(rng, dirs, `f${i}`, 64, 32 * KiB, SMALL_KINDS, mix(2e6 + i));
    files.push(spec);
    const group = groups.get(spec.kind) ?? [];
    groups.set(spec.kind, group);
    group.push(spec);
  }
  for (const [kind, members] of groups) {
    for (let g = 0; g < members.length; g += GROUP_FILES) {
      const slice = members.slice(g, g + GROUP_FILES);
      const bytes = slice.reduce((s, f) => s + f.size, 0);
      const seed = mix(3e6 + g * 8 + Object.keys(EXT).indexOf(kind));
      let offset = 0;
      for (const f of slice) {
        f.group = { seed, bytes, offset };
        offset += f.size;
      }
    }
  }
  return files;
}

const DATA_OPTIONS: Record<Exclude<FileKind, 'sparse'>, { text: number; zeros: number }> = {
  text: { text: 1, zeros: 0 },
  binary: { text: 0.45, zeros: 0.1 },
  media: { text: 0, zeros: 0 },
  zeros: { text: 0.15, zeros: 0.7 },
};

const groupCache = new Map<string, Buffer>();

/** The stream of `spec`'s group (the last few are kept: a tree is written group by group). */
function groupStream(spec: FileSpec & { group: NonNullable<FileSpec['group']> }): Buffer {
  const key = `${spec.kind} ${spec.group.seed} ${spec.group.bytes}`;
  let data = groupCache.get(key);
  if (!data) {
    const opts = DATA_OPTIONS[spec.kind as Exclude<FileKind, 'sparse'>];
    data = Buffer.concat([...mixedBlocks(spec.group.bytes, spec.group.seed, opts)]);
    if (groupCache.size >= 4) groupCache.delete(groupCache.keys().next().value!);
    groupCache.set(key, data);
  }
  return data;
}

/** Writes `spec` under `root` (creating its directory), replacing what was there. */
export function writeSpec(root: string, spec: FileSpec): void {
  const path = join(root, spec.path);
  mkdirSync(dirname(path), { recursive: true });
  if (spec.group) {
    const { offset } = spec.group;
    writeFileSync(
      path,
      groupStream({ ...spec, group: spec.group }).subarray(offset, offset + spec.size),
    );
    return;
  }
  const fd = openSync(path, 'w');
  try {
    if (spec.kind === 'sparse') {
      // One 64 KiB run of data every 1 MiB, the rest holes.
      ftruncateSync(fd, spec.size);
      let i = 0;
      for (let at = 0; at + 64 * KiB <= spec.size; at += MiB) {
        const block = mixedBlocks(64 * KiB, spec.seed + i++, DATA_OPTIONS.binary);
        for (const b of block) writeSync(fd, b, 0, b.length, at);
      }
      return;
    }
    for (const b of mixedBlocks(spec.size, spec.seed, DATA_OPTIONS[spec.kind])) writeSync(fd, b);
  } finally {
    closeSync(fd);
  }
}

function writePatch(root: string, spec: FileSpec, patch: Patch): void {
  if (patch.how === 'rewrite') {
    rmSync(join(root, spec.path), { force: true });
    writeSpec(root, patch.spec);
    return;
  }
  const fd = openSync(join(root, spec.path), patch.how === 'append' ? 'a' : 'r+');
  try {
    if (patch.how === 'append') {
      for (const b of mixedBlocks(patch.bytes, patch.seed, DATA_OPTIONS.text)) writeSync(fd, b);
    } else {
      for (const [i, at] of patch.offsets.entries()) {
        for (const b of mixedBlocks(4 * KiB, patch.seed + i, DATA_OPTIONS.media)) {
          writeSync(fd, b, 0, b.length, at);
        }
      }
    }
  } finally {
    closeSync(fd);
  }
}

/** How one file changes: small files are rewritten, large ones get 4 KiB writes or appends. */
function patchOf(rng: Rng, spec: FileSpec, seed: number): Patch {
  if (spec.size <= 64 * KiB) {
    const size = Math.max(1, Math.round(spec.size * (0.9 + rng.below(200) / 1000)));
    const { path, kind } = spec;
    return { how: 'rewrite', spec: { path, kind, size, seed } };
  }
  if (spec.kind === 'text' && spec.size > 16 * MiB) {
    return { how: 'append', bytes: Math.round(spec.size / 100), seed };
  }
  const n = Math.max(1, Math.round(spec.size / (8 * MiB)));
  const offsets = Array.from({ length: n }, () => rng.below(spec.size / (4 * KiB)) * 4 * KiB);
  return { how: 'overwrite', offsets, seed };
}

/**
 * A ~5% change of the tree `files` (3% modified, 1% added, 1% removed), the same for the
 * same (files, seed). The large files are always among the modified ones.
 */
export function changeOf(files: FileSpec[], seed: number): TreeChange {
  const rng = new Rng(seed);
  const pct = (p: number) => Math.max(1, Math.round(files.length * p));
  const order = files.map((_, i) => i);
  for (let i = order.length - 1; i > 0; i--) {
    const j = rng.below(i + 1);
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  // The disk-like file and the log change; the media file does not, as in life.
  const large = files.filter((f) => f.path.startsWith('large/') && f.kind !== 'media');
  const rest = order.map((i) => files[i]!).filter((f) => !f.path.startsWith('large/'));
  const modified = [...large, ...rest.slice(0, pct(0.03) - large.length)].map((spec, i) => ({
    spec,
    patch: patchOf(rng, spec, mix(seed * 7919 + i)),
  }));
  const removed = rest.slice(pct(0.03), pct(0.03) + pct(0.01));
  const dirs = [...new Set(files.map((f) => dirname(f.path)))].filter((d) => d !== '.');
  const added: FileSpec[] = [];
  for (let i = 0; i < pct(0.01); i++) {
    // A quarter of the new files go into a new directory, the rest into existing ones.
    const inNew = i % 4 === 0;
    const where = inNew ? [join(pick(rng, dirs), `new-${seed}`)] : dirs;
    const fileSeed = mix(3e6 + seed * 1000 + i);
    added.push(randomFile(rng, where, `n${seed}-${i}`, 64, 256 * KiB, SMALL_KINDS, fileSeed));
  }
  return { modified, added, removed };
}

/** Turns the tree written from the change's base into its changed version. */
export function applyChange(root: string, change: TreeChange): void {
  for (const { spec, patch } of change.modified) writePatch(root, spec, patch);
  for (const spec of change.removed) rmSync(join(root, spec.path));
  for (const spec of change.added) writeSpec(root, spec);
}

/** Undoes `applyChange`: the tree is the base again (contents; times and inodes differ). */
export function revertChange(root: string, change: TreeChange): void {
  for (const spec of change.added) rmSync(join(root, spec.path), { force: true });
  for (const spec of change.added) {
    if (spec.path.includes('/new-'))
      rmSync(join(root, dirname(spec.path)), { force: true, recursive: true });
  }
  for (const { spec, patch } of change.modified) {
    if (patch.how === 'rewrite') rmSync(join(root, patch.spec.path), { force: true });
    writeSpec(root, spec);
  }
  for (const spec of change.removed) writeSpec(root, spec);
}

/** Writes every file of `files` under `root`; returns their total size. */
export function writeTree(root: string, files: FileSpec[]): number {
  let bytes = 0;
  for (const spec of files) {
    writeSpec(root, spec);
    bytes += spec.size;
  }
  return bytes;
}
