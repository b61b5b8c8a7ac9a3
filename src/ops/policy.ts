import { byTime, type StoredSnapshot } from '../repo/snapshot.js';

/**
 * restic's retention policy. Each count is a number of buckets (the last N snapshots, hours,
 * days, ISO weeks, months, years that have snapshots) or -1 for all of them.
 */
export interface RetentionPolicy {
  last?: number;
  hourly?: number;
  daily?: number;
  weekly?: number;
  monthly?: number;
  yearly?: number;
  /**
   * Keep every snapshot carrying all tags of any one list; an empty list matches snapshots
   * without tags (restic's `--keep-tag ''`).
   */
  tags?: string[][];
}

type CountRule = Exclude<keyof RetentionPolicy, 'tags'>;

export interface KeepDecision {
  snapshot: StoredSnapshot;
  /** Why it is kept, in restic's words: `last snapshot`, `daily snapshot`, `has tags [a]`… */
  reasons: string[];
}

export interface PolicyResult {
  /** Newest first. */
  keep: KeepDecision[];
  /** Newest first. */
  remove: StoredSnapshot[];
}

const DAY_MS = 86_400_000;

/**
 * Bucket keys in the local time zone of the machine running forget: snapshot times are stored
 * in UTC, and "daily" should follow the user's days, as restic's do (it buckets in the zone
 * recorded with each snapshot, normally the same one).
 */
const RULES: { rule: CountRule; reason: string; bucket: (d: Date, nr: number) => number }[] = [
  { rule: 'last', reason: 'last snapshot', bucket: (_d, nr) => nr },
  { rule: 'hourly', reason: 'hourly snapshot', bucket: (d) => ymd(d) * 100 + d.getHours() },
  { rule: 'daily', reason: 'daily snapshot', bucket: ymd },
  { rule: 'weekly', reason: 'weekly snapshot', bucket: isoWeek },
  { rule: 'monthly', reason: 'monthly snapshot', bucket: (d) => ym(d) },
  { rule: 'yearly', reason: 'yearly snapshot', bucket: (d) => d.getFullYear() },
];

export function isEmptyPolicy(p: RetentionPolicy): boolean {
  return RULES.every((r) => !p[r.rule]) && (p.tags ?? []).length === 0;
}

/**
 * restic's ApplyPolicy: newest first, each count rule keeps the newest snapshot of each of
 * its next buckets until its count is used up; while a rule still has counts left, the
 * oldest snapshot is kept too (`oldest … snapshot`), so a short history is not cut short.
 * A snapshot kept by any rule is kept. An empty policy keeps everything.
 */
export function applyPolicy(
  snapshots: readonly StoredSnapshot[],
  p: RetentionPolicy,
): PolicyResult {
  const list = [...snapshots].sort((a, b) => byTime(b, a));
  if (isEmptyPolicy(p)) {
    return {
      keep: list.map((snapshot) => ({ snapshot, reasons: ['policy is empty'] })),
      remove: [],
    };
  }
  const state = RULES.map((r) => ({ ...r, count: p[r.rule] ?? 0, last: undefined as unknown }));
  const keep: KeepDecision[] = [];
  const remove: StoredSnapshot[] = [];
  list.forEach((snapshot, nr) => {
    const reasons: string[] = [];
    for (const tags of p.tags ?? []) {
      if (hasTags(snapshot, tags)) reasons.push(`has tags [${tags.join(', ')}]`);
    }
    const time = new Date(snapshot.time);
    const oldest = nr === list.length - 1;
    for (const s of state) {
      if (s.count === 0) continue;
      const bucket = s.bucket(time, nr);
      if (bucket === s.last && !oldest) continue;
      reasons.push(bucket === s.last ? `oldest ${s.reason}` : s.reason);
      s.last = bucket;
      if (s.count > 0) s.count--;
    }
    if (reasons.length > 0) keep.push({ snapshot, reasons });
    else remove.push(snapshot);
  });
  return { keep, remove };
}

export function hasTags(s: StoredSnapshot, tags: readonly string[]): boolean {
  if (tags.length === 0) return s.tags.length === 0;
  return tags.every((t) => s.tags.includes(t));
}

/** A human summary of a policy: `keep 7 daily, 4 weekly snapshots and tags [a]`. */
export function describePolicy(p: RetentionPolicy): string {
  const counts = RULES.filter((r) => p[r.rule]).map((r) => {
    const n = p[r.rule]!;
    const what = r.rule === 'last' ? 'latest' : r.rule;
    return n === -1 ? `all ${what}` : `${n} ${what}`;
  });
  const parts = counts.length > 0 ? [`${counts.join(', ')} snapshots`] : [];
  for (const tags of p.tags ?? []) parts.push(`all snapshots with tags [${tags.join(', ')}]`);
  return `keep ${parts.join(' and ')}`;
}

function ymd(d: Date): number {
  return ym(d) * 100 + d.getDate();
}

function ym(d: Date): number {
  return d.getFullYear() * 100 + d.getMonth() + 1;
}

/** ISO 8601 week as year × 100 + week: weeks run Monday to Sunday; Thursday picks the year. */
export function isoWeek(d: Date): number {
  const day = Date.UTC(d.getFullYear(), d.getMonth(), d.getDate());
  const weekday = (new Date(day).getUTCDay() + 6) % 7;
  const thursday = new Date(day + (3 - weekday) * DAY_MS);
  const year = thursday.getUTCFullYear();
  const week = Math.floor((thursday.getTime() - Date.UTC(year, 0, 1)) / DAY_MS / 7) + 1;
  return year * 100 + week;
}

/** What snapshots are grouped by before a policy is applied to each group. */
export type GroupField = 'host' | 'paths' | 'name' | 'tags';

/** restic's default (host and paths), with the image name standing in for the paths. */
export const DEFAULT_GROUP_BY: readonly GroupField[] = ['host', 'paths', 'name'];

export interface GroupKey {
  /** Always part of the key: a retention policy never mixes file and image snapshots. */
  kind: StoredSnapshot['kind'];
  host?: string;
  paths?: string[];
  name?: string;
  tags?: string[];
}

export interface SnapshotGroup {
  key: GroupKey;
  snapshots: StoredSnapshot[];
}

/** Groups snapshots by the given fields, groups in order of their first snapshot. */
export function groupSnapshots(
  snapshots: readonly StoredSnapshot[],
  by: readonly GroupField[],
): SnapshotGroup[] {
  const groups = new Map<string, SnapshotGroup>();
  for (const s of snapshots) {
    const key: GroupKey = { kind: s.kind };
    if (by.includes('host')) key.host = s.hostname;
    if (by.includes('paths') && s.kind === 'files') key.paths = [...(s.paths ?? [])].sort();
    if (by.includes('name') && s.kind === 'image') key.name = s.name;
    if (by.includes('tags')) key.tags = [...s.tags].sort();
    const k = JSON.stringify(key);
    let g = groups.get(k);
    if (!g) {
      g = { key, snapshots: [] };
      groups.set(k, g);
    }
    g.snapshots.push(s);
  }
  return [...groups.values()];
}
