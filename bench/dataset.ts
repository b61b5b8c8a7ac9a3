import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ensureImages, type ImagePair } from './image.js';
import {
  applyChange,
  changeOf,
  type FileSpec,
  revertChange,
  type TreeChange,
  treeSpec,
  writeTree,
} from './tree.js';

/*
 * The data the peer comparison runs on, cached in bench/.cache/peers-<scale>/ between runs:
 * the tree (tree/, kept in its first version between runs; a state file says which version
 * is on disk, so an interrupted run is repaired on the next) and the two ext4 images.
 */

export const TREE_CHANGE_SEED = 5;

export interface Dataset {
  /** Absolute path of the tree; backed up in place, so every tool sees the same path. */
  root: string;
  files: FileSpec[];
  change: TreeChange;
  /** Apparent bytes (sum of file sizes) of each version. */
  bytes: number;
  changedBytes: number;
  changedFiles: number;
  /** Switch the tree on disk to its changed version, or back. */
  toChanged(): void;
  toFirst(): void;
  images?: ImagePair;
}

type State = 'first' | 'changed' | 'dirty';

function log(msg: string): void {
  process.stderr.write(`bench: ${msg}\n`);
}

function timedStep<T>(what: string, fn: () => T): T {
  const t0 = performance.now();
  const out = fn();
  log(`${what} (${((performance.now() - t0) / 1000).toFixed(1)} s)`);
  return out;
}

export function loadDataset(cacheDir: string, scale: number, images: boolean): Dataset {
  const dir = join(cacheDir, `peers-${scale}`);
  const root = join(dir, 'tree');
  const files = treeSpec(scale);
  const change = changeOf(files, TREE_CHANGE_SEED);
  const bytes = files.reduce((s, f) => s + f.size, 0);
  const key = JSON.stringify({ n: files.length, bytes, seed: TREE_CHANGE_SEED, layout: 2 });
  const stateFile = join(dir, 'tree.json');
  const setState = (state: State) => writeFileSync(stateFile, JSON.stringify({ key, state }));
  const saved = existsSync(stateFile) ? JSON.parse(readFileSync(stateFile, 'utf8')) : {};
  const state: State | undefined = saved.key === key ? saved.state : undefined;
  mkdirSync(dir, { recursive: true });
  if (state === undefined || state === 'dirty') {
    rmSync(root, { recursive: true, force: true });
    setState('dirty');
    const what = `writing the tree: ${files.length} files, ${(bytes / 1e9).toFixed(2)} GB`;
    timedStep(what, () => writeTree(root, files));
    setState('first');
  } else if (state === 'changed') {
    setState('dirty');
    timedStep('reverting the tree to its first version', () => revertChange(root, change));
    setState('first');
  }
  const removed = change.removed.reduce((s, f) => s + f.size, 0);
  const added = change.added.reduce((s, f) => s + f.size, 0);
  const grown = change.modified.reduce((s, { spec, patch }) => {
    if (patch.how === 'rewrite') return s + patch.spec.size - spec.size;
    return s + (patch.how === 'append' ? patch.bytes : 0);
  }, 0);
  const dataset: Dataset = {
    root,
    files,
    change,
    bytes,
    changedBytes: bytes - removed + added + grown,
    changedFiles: files.length - change.removed.length + change.added.length,
    toChanged() {
      setState('dirty');
      applyChange(root, change);
      setState('changed');
    },
    toFirst() {
      setState('dirty');
      revertChange(root, change);
      setState('first');
    },
  };
  if (images) {
    dataset.images = timedStep('ext4 images ready', () =>
      ensureImages(join(dir, 'images'), files, scale),
    );
  }
  return dataset;
}
