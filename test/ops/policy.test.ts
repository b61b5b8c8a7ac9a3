import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  applyPolicy,
  DEFAULT_GROUP_BY,
  groupSnapshots,
  hasTags,
  isoWeek,
  type RetentionPolicy,
} from '../../src/ops/policy.js';
import { byTime, type StoredSnapshot } from '../../src/repo/snapshot.js';

let seq = 0;

function snap(time: Date, extra: Partial<StoredSnapshot> = {}): StoredSnapshot {
  const id = (seq++).toString(16).padStart(64, '0');
  return {
    id,
    time: time.toISOString(),
    hostname: 'h',
    username: 'u',
    kind: 'files',
    paths: ['/p'],
    tags: [],
    root: id,
    size: 0,
    ...extra,
  };
}

/** Local time, as the buckets use it. */
const at = (y: number, m: number, d: number, h = 12, min = 0) => new Date(y, m - 1, d, h, min);
const ids = (list: readonly { id: string }[]) => list.map((s) => s.id);

type Rule = 'last' | 'hourly' | 'daily' | 'weekly' | 'monthly' | 'yearly';
const BUCKET: Record<Rule, (d: Date, i: number) => number> = {
  last: (_d, i) => i,
  hourly: (d) => ((d.getFullYear() * 100 + d.getMonth()) * 100 + d.getDate()) * 100 + d.getHours(),
  daily: (d) => (d.getFullYear() * 100 + d.getMonth()) * 100 + d.getDate(),
  weekly: isoWeek,
  monthly: (d) => d.getFullYear() * 100 + d.getMonth(),
  yearly: (d) => d.getFullYear(),
};

/** For one rule: the newest snapshot of each bucket, newest bucket first. */
function heads(list: readonly StoredSnapshot[], rule: Rule): StoredSnapshot[] {
  const seen = new Set<number>();
  return list.filter((s, i) => {
    const b = BUCKET[rule](new Date(s.time), i);
    if (seen.has(b)) return false;
    seen.add(b);
    return true;
  });
}

/**
 * restic's documented behaviour, stated set-wise: each rule keeps the newest snapshot of each
 * of its N newest buckets, and the oldest snapshot too while the rule has counts left.
 */
function expectedKeep(all: readonly StoredSnapshot[], p: RetentionPolicy): Set<string> {
  const list = [...all].sort((a, b) => byTime(b, a));
  const keep = new Set<string>();
  for (const tags of p.tags ?? []) for (const s of list) if (hasTags(s, tags)) keep.add(s.id);
  for (const rule of Object.keys(BUCKET) as Rule[]) {
    const n = p[rule] ?? 0;
    if (n === 0) continue;
    const h = heads(list, rule);
    for (const s of n === -1 ? h : h.slice(0, n)) keep.add(s.id);
    const before = heads(list.slice(0, -1), rule).length;
    if (list.length > 0 && (n === -1 || n > before)) keep.add(list.at(-1)!.id);
  }
  return keep;
}

const count = fc.constantFrom(0, 0, 1, 2, 3, 5, -1);
const policyArb = fc.record({
  last: count,
  hourly: count,
  daily: count,
  weekly: count,
  monthly: count,
  yearly: count,
  tags: fc.subarray([['a'], ['a', 'b'], []], { maxLength: 2 }),
});
/** Times clustered so that buckets are shared: a day, some hours, some minutes apart. */
const snapshotsArb = fc.array(
  fc.record({
    day: fc.integer({ min: 0, max: 800 }),
    minute: fc.integer({ min: 0, max: 3 * 24 * 60 }),
    tags: fc.subarray(['a', 'b']),
  }),
  { maxLength: 40 },
);

describe('retention policy (property)', () => {
  it('keep and remove partition the snapshots, and keep is exactly what the rules demand', () => {
    fc.assert(
      fc.property(snapshotsArb, policyArb, (specs, policy) => {
        const base = at(2021, 1, 1, 0).getTime();
        const list = specs.map((s) =>
          snap(new Date(base + s.day * 86_400_000 + s.minute * 60_000), { tags: s.tags }),
        );
        const { keep, remove } = applyPolicy(list, policy);
        const kept = ids(keep.map((k) => k.snapshot));
        expect([...kept, ...ids(remove)].sort()).toEqual(ids(list).sort());
        expect(new Set(kept).size).toBe(kept.length);
        for (const k of keep) expect(k.reasons.length).toBeGreaterThan(0);
        const empty = Object.values(policy).every(
          (v) => v === 0 || (Array.isArray(v) && !v.length),
        );
        if (empty) {
          // Not `return expect(…)`: fast-check counts any returned value but true as a failure.
          expect(remove).toEqual([]);
          return;
        }
        expect(new Set(kept)).toEqual(expectedKeep(list, policy));
        // Each rule on its own is satisfied: the newest of each of its N newest buckets is kept.
        const sorted = [...list].sort((a, b) => byTime(b, a));
        for (const rule of Object.keys(BUCKET) as Rule[]) {
          const n = policy[rule];
          const must = n === -1 ? heads(sorted, rule) : heads(sorted, rule).slice(0, n);
          for (const s of must) expect(kept).toContain(s.id);
        }
      }),
      {
        numRuns: 300,
        // The empty policy, which the generator seldom draws, keeps everything.
        examples: [
          [[], { last: 0, hourly: 0, daily: 0, weekly: 0, monthly: 0, yearly: 0, tags: [] }],
          [
            [{ day: 3, minute: 5, tags: [] }],
            { last: 0, hourly: 0, daily: 0, weekly: 0, monthly: 0, yearly: 0, tags: [] },
          ],
        ],
      },
    );
  });
});

describe('retention policy (restic documentation cases)', () => {
  it('--keep-daily 4 of twelve weekly Sunday backups keeps the last four', () => {
    const list = Array.from({ length: 12 }, (_, i) => snap(at(2019, 9, 1 + 7 * i, 11)));
    const { keep, remove } = applyPolicy(list, { daily: 4 });
    expect(ids(keep.map((k) => k.snapshot))).toEqual(ids(list.slice(8).reverse()));
    expect(keep.every((k) => k.reasons.join() === 'daily snapshot')).toBe(true);
    expect(ids(remove)).toEqual(ids(list.slice(0, 8).reverse()));
  });

  it('100 years of daily backups: 7 daily, 4 more weekly, 11 more monthly, 74 more yearly', () => {
    const list: StoredSnapshot[] = [];
    for (
      let d = at(1925, 1, 1);
      d <= at(2024, 12, 29);
      d = at(d.getFullYear(), d.getMonth() + 1, d.getDate() + 1)
    ) {
      list.push(snap(d));
    }
    const { keep } = applyPolicy(list, { daily: 7, weekly: 5, monthly: 12, yearly: 75 });
    const by = (reason: string) => keep.filter((k) => k.reasons[0] === reason).length;
    expect(keep.length).toBe(96);
    expect([by('daily snapshot'), by('weekly snapshot')]).toEqual([7, 4]);
    expect([by('monthly snapshot'), by('yearly snapshot')]).toEqual([11, 74]);
    expect(keep[0]!.reasons).toEqual([
      'daily snapshot',
      'weekly snapshot',
      'monthly snapshot',
      'yearly snapshot',
    ]);
    expect(keep.at(-1)!.snapshot.time).toBe(at(1950, 12, 31).toISOString());
  });

  it('keeps the oldest snapshot while a rule has counts left, marked "oldest"', () => {
    const [a, b, c] = [snap(at(2024, 3, 1, 9)), snap(at(2024, 3, 1, 12)), snap(at(2024, 3, 1, 18))];
    const { keep, remove } = applyPolicy([a!, b!, c!], { daily: 5 });
    expect(keep.map((k) => [k.snapshot.id, k.reasons])).toEqual([
      [c!.id, ['daily snapshot']],
      [a!.id, ['oldest daily snapshot']],
    ]);
    expect(ids(remove)).toEqual([b!.id]);
  });

  it('--keep-hourly counts hours that have snapshots, newest first', () => {
    const list = [
      [10, 5],
      [10, 30],
      [11, 10],
      [12, 0],
    ].map(([h, m]) => snap(at(2024, 5, 5, h, m)));
    const { keep, remove } = applyPolicy(list, { hourly: 2 });
    expect(ids(keep.map((k) => k.snapshot))).toEqual([list[3]!.id, list[2]!.id]);
    expect(ids(remove)).toEqual([list[1]!.id, list[0]!.id]);
  });

  it('--keep-tag keeps tagged snapshots beside other rules; an empty list: untagged', () => {
    const list = [1, 2, 3, 4, 5].map((d) =>
      snap(at(2024, 1, d), { tags: d === 2 ? ['keep'] : [] }),
    );
    const { keep } = applyPolicy(list, { last: 2, tags: [['keep']] });
    expect(keep.map((k) => [k.snapshot.id, k.reasons])).toEqual([
      [list[4]!.id, ['last snapshot']],
      [list[3]!.id, ['last snapshot']],
      [list[1]!.id, ['has tags [keep]']],
    ]);
    const untagged = applyPolicy(list, { tags: [[]] });
    expect(ids(untagged.remove)).toEqual([list[1]!.id]);
  });

  it('-1 keeps every bucket (and the oldest), an empty policy keeps everything', () => {
    const list = [1, 1, 2, 2, 3, 3].map((d, i) => snap(at(2024, 2, d, 8 + i)));
    const all = applyPolicy(list, { daily: -1 });
    expect(ids(all.remove)).toEqual([list[4]!.id, list[2]!.id]);
    expect(all.keep.at(-1)!.reasons).toEqual(['oldest daily snapshot']);
    const none = applyPolicy(list, {});
    expect(none.remove).toEqual([]);
    expect(none.keep[0]!.reasons).toEqual(['policy is empty']);
  });
});

describe('ISO weeks', () => {
  it('run Monday to Sunday, the week-year following its Thursday', () => {
    const weeks = [
      [at(2024, 12, 29), 202452],
      [at(2024, 12, 30), 202501],
      [at(2020, 12, 31), 202053],
      [at(2021, 1, 3), 202053],
      [at(2021, 1, 4), 202101],
      [at(2026, 1, 1), 202601],
    ] as const;
    for (const [date, week] of weeks) expect(isoWeek(date)).toBe(week);
  });
});

describe('grouping', () => {
  it('groups by host and paths (files) or name (images), never mixing kinds', () => {
    const t = at(2024, 1, 1);
    const s = [
      snap(t, { hostname: 'a' }),
      snap(t, { hostname: 'b' }),
      snap(t, { hostname: 'a', paths: ['/q'] }),
      snap(t, { hostname: 'a', kind: 'image', paths: undefined, name: 'disk' }),
      snap(t, { hostname: 'a', kind: 'image', paths: undefined, name: 'disk' }),
      snap(t, { hostname: 'a', kind: 'image', paths: undefined, name: 'usb' }),
    ];
    const groups = groupSnapshots(s, DEFAULT_GROUP_BY);
    expect(groups.map((g) => [g.key, ids(g.snapshots)])).toEqual([
      [{ kind: 'files', host: 'a', paths: ['/p'] }, [s[0]!.id]],
      [{ kind: 'files', host: 'b', paths: ['/p'] }, [s[1]!.id]],
      [{ kind: 'files', host: 'a', paths: ['/q'] }, [s[2]!.id]],
      [{ kind: 'image', host: 'a', name: 'disk' }, [s[3]!.id, s[4]!.id]],
      [{ kind: 'image', host: 'a', name: 'usb' }, [s[5]!.id]],
    ]);
    expect(groupSnapshots(s, []).map((g) => g.snapshots.length)).toEqual([3, 3]);
  });
});
