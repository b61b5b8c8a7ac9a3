import { CairnError } from '../../errors.js';
import { LruCache } from '../../image/lru.js';
import { type FatLayout, fatEntry, parseFatBootSector } from '../../image/used-blocks/fat.js';
import { damaged, fitExtents, readAtOf, readExact, UnreadableFilesystem } from '../source.js';
import type {
  ByteSource,
  Extent,
  FsDirent,
  FsNode,
  FsStat,
  Volume,
  VolumeOptions,
} from '../types.js';
import { ATTR_DIRECTORY, ATTR_READ_ONLY, DirParser, type FatDirEntry } from './dir.js';

/*
 * FAT12/16/32, read-only. Files and directories are cluster chains in the first FAT; the
 * FAT12/16 root directory is a fixed region, FAT32's a chain from the boot sector's root
 * cluster. FAT has no owners or permissions: entries get 0:0, 0644/0755 (no write bits when
 * read-only).
 */

/** FAT bytes per cached slice: a multiple of 3 and 4, so every slice starts at an entry. */
const SLICE = 48 << 10;
const SLICES_CACHED = 64;
/** The specification's limit: 65 536 records of 32 bytes. */
const MAX_DIR_BYTES = 2 << 20;
/** Chains up to this many clusters (every directory's) are checked for loops. */
const LOOP_CHECKED = 1 << 16;

export async function openFat(
  source: ByteSource,
  opts: VolumeOptions = {},
): Promise<FatVolume | undefined> {
  const bs = await readAtOf(source)(0, 512);
  const layout = bs.length === 512 ? parseFatBootSector(bs) : undefined;
  if (!layout) return undefined;
  if (layout.dataStart + layout.clusters * layout.clusterSize > source.size) {
    throw new UnreadableFilesystem(`fat${layout.bits}`, 'it is larger than its volume');
  }
  const root = layout.rootCluster;
  if (layout.bits === 32 && (root < 2 || root >= layout.clusters + 2)) {
    throw new UnreadableFilesystem('fat32', `root cluster ${root} is out of range`);
  }
  return new FatVolume(source, layout, opts);
}

export class FatVolume implements Volume {
  readonly type: 'fat12' | 'fat16' | 'fat32';
  readonly origin: number;
  readonly device: number;
  readonly notes: string[] = [];
  private readonly slices = new LruCache<number, Promise<Buffer>>(SLICES_CACHED);
  private readonly end: number;

  constructor(
    readonly source: ByteSource,
    readonly layout: FatLayout,
    opts: VolumeOptions,
  ) {
    this.type = `fat${layout.bits}`;
    this.origin = opts.origin ?? 0;
    this.device = opts.device ?? 0;
    // End-of-chain markers are the top 8 values (0xFF8…), bad clusters the one below;
    // FAT32 entries are 28 bits.
    this.end = 2 ** (layout.bits === 32 ? 28 : layout.bits) - 8;
  }

  async root(): Promise<FsNode> {
    const l = this.layout;
    const entry: FatDirEntry = {
      name: Buffer.alloc(0),
      attr: ATTR_DIRECTORY,
      cluster: l.bits === 32 ? l.rootCluster : 0,
      size: 0,
      mtimeNs: 0n,
    };
    return new FatNode(this, entry);
  }

  /** The FAT entry of cluster `c` (28 bits on FAT32). */
  private async next(c: number): Promise<number> {
    const bits = this.layout.bits;
    const perSlice = (SLICE * 8) / bits;
    const index = Math.floor(c / perSlice);
    let slice = this.slices.get(index);
    if (!slice) {
      const fatBytes = Math.ceil(((this.layout.clusters + 2) * bits) / 8);
      const at = index * SLICE;
      const length = Math.min(SLICE, fatBytes - at);
      slice = readExact(this.source, this.layout.fatStart + at, length, 'FAT');
      slice.catch(() => this.slices.delete(index));
      this.slices.set(index, slice);
    }
    const v = fatEntry(await slice, c - index * perSlice, bits);
    return bits === 32 ? v & 0x0fffffff : v;
  }

  /**
   * Up to `max` clusters of the chain from `first`, as extents of runs of consecutive
   * clusters. Every link is checked: a free, bad or out-of-range cluster is damage, and
   * `max` (never above the cluster count) bounds a chain that loops; short chains (all
   * directories) are also checked for loops outright.
   */
  async *chain(first: number, max: number, what: string): AsyncGenerator<Extent> {
    const seen = max <= LOOP_CHECKED ? new Set<number>() : undefined;
    let run: { start: number; count: number } | undefined;
    let problem: string | undefined;
    let c = first;
    for (let n = 0; n < max; n++) {
      problem = this.badLink(c, seen);
      if (problem) break;
      seen?.add(c);
      if (run && c === run.start + run.count) run.count++;
      else {
        if (run) yield this.clusterExtent(run.start, run.count);
        run = { start: c, count: 1 };
      }
      if (n + 1 === max) break;
      c = await this.next(c);
      if (c >= this.end) break;
    }
    // What was found before the damage comes first: a directory lists what it can.
    if (run) yield this.clusterExtent(run.start, run.count);
    if (problem) throw damaged(`${what}: ${problem}`);
  }

  /** Why cluster `c` cannot be the next link of a chain, if it cannot. */
  private badLink(c: number, seen: Set<number> | undefined): string | undefined {
    if (c === this.end - 1) return 'the chain reaches a bad cluster';
    if (c < 2 || c >= this.layout.clusters + 2) return `cluster ${c} is out of range`;
    if (seen?.has(c)) return 'the cluster chain loops';
    return undefined;
  }

  private clusterExtent(start: number, count: number): Extent {
    const cs = this.layout.clusterSize;
    return { kind: 'data', offset: this.layout.dataStart + (start - 2) * cs, length: count * cs };
  }
}

class FatNode implements FsNode {
  readonly stat: FsStat;

  constructor(
    readonly volume: FatVolume,
    private readonly entry: FatDirEntry,
  ) {
    const dir = (entry.attr & ATTR_DIRECTORY) !== 0;
    const write = entry.attr & ATTR_READ_ONLY ? 0 : 0o200;
    this.stat = {
      type: dir ? 'dir' : 'file',
      mode: (dir ? 0o555 : 0o444) | write,
      uid: 0,
      gid: 0,
      size: dir ? 0 : entry.size,
      mtimeNs: entry.mtimeNs,
      ctimeNs: entry.mtimeNs,
      inode: entry.cluster,
      nlink: 1,
      device: volume.device,
    };
  }

  extents(): AsyncGenerator<Extent> {
    const { entry, volume: v } = this;
    const what = `file at cluster ${entry.cluster}`;
    if (entry.size === 0) return fitExtents([], 0, false, what);
    const clusters = Math.ceil(entry.size / v.layout.clusterSize);
    const chain = v.chain(entry.cluster, Math.min(clusters, v.layout.clusters), what);
    return fitExtents(chain, entry.size, false, what);
  }

  async *entries(): AsyncGenerator<FsDirent> {
    const v = this.volume;
    if (this.stat.type !== 'dir') throw new CairnError('not a directory');
    const parser = new DirParser(v.layout.bits === 32);
    for await (const region of this.regions()) {
      const buf = await readExact(v.source, region.offset, region.length, 'FAT directory');
      for (const e of parser.push(buf)) {
        yield { name: e.name, load: async () => new FatNode(v, e) };
      }
      if (parser.ended) return;
    }
  }

  /** Where the directory's records are: the fixed FAT12/16 root region, or its chain. */
  private async *regions(): AsyncGenerator<{ offset: number; length: number }> {
    const { entry, volume: v } = this;
    const l = v.layout;
    if (entry.cluster === 0 && l.bits !== 32 && entry.name.length === 0) {
      yield { offset: l.rootStart, length: l.rootSize };
      return;
    }
    const max = Math.min(Math.ceil(MAX_DIR_BYTES / l.clusterSize), l.clusters);
    for await (const e of v.chain(entry.cluster, max, `directory at cluster ${entry.cluster}`)) {
      if (e.kind === 'data') yield { offset: e.offset, length: e.length };
    }
  }

  async readlink(): Promise<Buffer> {
    throw new CairnError('FAT has no symlinks');
  }
}
