import { lstatSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ExtraRow } from './extras.js';
import { dropCaches, loadAverage, run, timed } from './measure.js';
import { type Command, installPeers, PASSWORD } from './peers.js';
import {
  type Radosgw,
  RGW_ACCESS_KEY,
  RGW_SECRET_KEY,
  radosgwUnavailable,
  startRadosgw,
} from './radosgw.js';
import { treeSpec, writeTree } from './tree.js';

/*
 * cairn's and restic's S3 backends against a real S3 server on loopback: radosgw (Ceph's S3
 * gateway, memstore OSD) started by the project's own launcher, scripts/rgw-s3.sh, as the
 * S3 tests start it. The same generated tree (bench/tree.ts) is backed up by each tool into
 * its own bucket, then restored; each command is one timed process (wall time, peak RSS).
 * Requests are counted from radosgw's own access log (the `beast:` line it writes for every
 * request it answers), per bucket and method, so nothing sits between client and server.
 */

export interface S3Row {
  tool: 'cairn' | 'restic';
  step: 'backup' | 'restore';
  seconds: number;
  mibPerSec: number;
  peakRssMiB: number;
  requests: number;
  requestsPerGB: number;
  byMethod: Record<string, number>;
  /** Restores: whether every file came back with its size. */
  complete?: boolean;
}

export interface S3Result {
  rows: S3Row[];
  files: number;
  bytes: number;
  load: string;
}

const LAUNCHER = fileURLToPath(new URL('../../scripts/rgw-s3.sh', import.meta.url));
const CAIRN = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const MiB = 2 ** 20;

/** A radosgw private to this run; `requests` reads its access log. */
class Rgw {
  private sentinels = 0;

  private constructor(private readonly gateway: Radosgw) {}

  static async start(): Promise<Rgw> {
    return new Rgw(await startRadosgw(LAUNCHER, 'cairn-bench-rgw'));
  }

  get endpoint(): string {
    return this.gateway.endpoint;
  }

  stop(): Promise<void> {
    return this.gateway.stop();
  }

  /**
   * Requests answered so far, per bucket and method. radosgw writes its log from a queue:
   * a request of our own, sent last, is waited for so every earlier one is in the file.
   */
  async requests(): Promise<Map<string, Record<string, number>>> {
    const sentinel = `sentinel-${++this.sentinels}`;
    await fetch(`${this.endpoint}/${sentinel}`).then((r) => r.arrayBuffer());
    const log = join(this.gateway.base, 'log', 'client.rgw.log');
    const deadline = Date.now() + 30_000;
    let text = readFileSync(log, 'utf8');
    while (!text.includes(`"GET /${sentinel} `)) {
      if (Date.now() > deadline) throw new Error(`radosgw did not log request ${sentinel}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
      text = readFileSync(log, 'utf8');
    }
    const counts = new Map<string, Record<string, number>>();
    for (const m of text.matchAll(/ beast: \S+ \S+ - \S+ \[[^\]]*\] "(\w+) \/([^/?\s]*)/g)) {
      const byMethod = counts.get(m[2]!) ?? {};
      byMethod[m[1]!] = (byMethod[m[1]!] ?? 0) + 1;
      counts.set(m[2]!, byMethod);
    }
    return counts;
  }
}

interface S3Tool {
  name: 'cairn' | 'restic';
  bucket: string;
  cmd(args: string[]): Command;
  backup(path: string): Command;
  restore(target: string): Command;
}

function tools(rgw: Rgw, work: string): S3Tool[] {
  const env = {
    ...process.env,
    AWS_ACCESS_KEY_ID: RGW_ACCESS_KEY,
    AWS_SECRET_ACCESS_KEY: RGW_SECRET_KEY,
    CAIRN_PASSWORD: PASSWORD,
    RESTIC_PASSWORD: PASSWORD,
  };
  const common = (name: string) => ['--cache-dir', join(work, `${name}-cache`), '-q'];
  const cairn = (args: string[]): Command => ({
    file: process.execPath,
    args: [
      CAIRN,
      '-r',
      's3://cairn-bench',
      '--s3-endpoint',
      rgw.endpoint,
      ...common('cairn'),
      ...args,
    ],
    env,
  });
  const restic = (args: string[]): Command => ({
    file: 'restic',
    args: ['-r', `s3:${rgw.endpoint}/restic-bench`, ...common('restic'), ...args],
    env,
  });
  return [
    {
      name: 'cairn',
      bucket: 'cairn-bench',
      cmd: cairn,
      backup: (path) => cairn(['backup', path]),
      restore: (target) => cairn(['restore', 'latest', '-t', target]),
    },
    {
      name: 'restic',
      bucket: 'restic-bench',
      cmd: restic,
      backup: (path) => restic(['backup', path]),
      restore: (target) => restic(['restore', 'latest', '--target', target]),
    },
  ];
}

/**
 * Backup and restore of a generated tree (`scale` of bench/tree.ts: 0.15 is 12 000 files,
 * 242 MB) by cairn and restic, each into its own bucket of one radosgw. `cold` drops the page
 * cache before every timed command.
 */
export async function benchS3(scale: number, cold: boolean): Promise<S3Result> {
  installPeers(['restic']);
  const work = mkdtempSync(join(tmpdir(), 'cairn-bench-s3-'));
  let rgw: Rgw | undefined;
  try {
    const data = join(work, 'data');
    const files = treeSpec(scale);
    const bytes = writeTree(data, files);
    rgw = await Rgw.start();
    const log = join(work, 'log');
    const list = tools(rgw, work);
    for (const t of list) run(t.cmd(['init']));
    const rows: S3Row[] = [];
    for (const step of ['backup', 'restore'] as const) {
      for (const t of list) {
        const target = join(work, `restore-${t.name}`);
        const before = (await rgw.requests()).get(t.bucket) ?? {};
        if (cold) dropCaches();
        const r = await timed(step === 'backup' ? t.backup(data) : t.restore(target), log);
        const after = (await rgw.requests()).get(t.bucket) ?? {};
        const byMethod = Object.fromEntries(
          Object.entries(after)
            .map(([m, n]) => [m, n - (before[m] ?? 0)] as const)
            .filter(([, n]) => n > 0),
        );
        const requests = Object.values(byMethod).reduce((a, b) => a + b, 0);
        rows.push({
          tool: t.name,
          step,
          seconds: r.seconds,
          mibPerSec: bytes / MiB / r.seconds,
          peakRssMiB: r.peakRssKiB / 1024,
          requests,
          requestsPerGB: requests / (bytes / 1e9),
          byMethod,
          complete: step === 'restore' ? sameSizes(target, files.length, bytes) : undefined,
        });
        if (step === 'restore') rmSync(target, { recursive: true, force: true });
      }
    }
    return { rows, files: files.length, bytes, load: loadAverage() };
  } finally {
    try {
      await rgw?.stop();
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  }
}

/** Whether `target` holds, somewhere below it, `files` regular files of `bytes` in all. */
function sameSizes(target: string, files: number, bytes: number): boolean {
  let n = 0;
  let total = 0;
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) {
        n++;
        total += lstatSync(p).size;
      }
    }
  };
  walk(target);
  return n === files && total === bytes;
}

/** The bench's rows: 242 MB in 12 000 files (--quick: 7 MB in 400), cold page cache. */
export async function s3Rows(quick: boolean): Promise<ExtraRow[]> {
  const why = radosgwUnavailable();
  if (why) return [{ section: 's3', case: 'skipped', note: why }];
  const r = await benchS3(quick ? 0.005 : 0.15, !quick);
  const data = `${(r.bytes / 1e6).toFixed(0)} MB, ${r.files} files`;
  return r.rows.map((row) => ({
    section: 's3',
    case: `${row.step}, ${data}`,
    tool: row.tool,
    seconds: row.seconds,
    mibPerSec: row.mibPerSec,
    note:
      `${row.requests} requests, ${Math.round(row.requestsPerGB)}/GB (` +
      `${Object.entries(row.byMethod)
        .map(([m, n]) => `${n} ${m}`)
        .join(', ')}); peak RSS ${row.peakRssMiB.toFixed(0)} MiB` +
      (row.complete === false ? '; RESTORE INCOMPLETE' : '') +
      `; load ${r.load}`,
    values: {
      requests: row.requests,
      requestsPerGB: row.requestsPerGB,
      peakRssMiB: row.peakRssMiB,
      ...row.byMethod,
    },
  }));
}
