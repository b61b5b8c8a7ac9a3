import { describe, expect, it } from 'vitest';
import {
  buildLayout,
  imageEntries,
  safeName,
  shortIds,
  timeName,
  type VirtualDir,
  type VNode,
} from '../../src/mount/layout.js';
import type { StoredSnapshot } from '../../src/repo/snapshot.js';

function snap(id: string, time: string, hostname: string, tags: string[] = []): StoredSnapshot {
  return { id, time, hostname, tags, username: 'u', kind: 'files', root: '0'.repeat(64), size: 0 };
}

function at(dir: VirtualDir, path: string): VNode | undefined {
  let node: VNode | undefined = dir;
  for (const name of path.split('/')) {
    node = node?.type === 'vdir' ? node.children.get(name) : undefined;
  }
  return node;
}

describe('names', () => {
  it('gives times in UTC to the second, whatever zone and precision they were in', () => {
    expect(timeName('2026-11-26T08:00:00.123Z')).toBe('2026-11-26T08:00:00Z');
    expect(timeName('2026-11-26T09:00:00+01:00')).toBe('2026-11-26T08:00:00Z');
    expect(timeName('not/a time')).toBe('not\\x2fa time');
  });

  it('makes any host or tag one path component', () => {
    expect(safeName('web/01')).toBe('web\\x2f01');
    expect(safeName('a\0b')).toBe('a\\x00b');
    expect(['', '.', '..'].map(safeName)).toEqual(['_', '._', '.._']);
    expect(safeName('plain-name')).toBe('plain-name');
  });

  it('shortens IDs to 8 hex digits, longer where two share a prefix', () => {
    const a = `abcdef01${'0'.repeat(56)}`;
    const b = `abcdef011${'f'.repeat(55)}`;
    const c = `12345678${'0'.repeat(56)}`;
    const short = shortIds([a, b, c]);
    expect(short.get(a)).toBe('abcdef010');
    expect(short.get(b)).toBe('abcdef011');
    expect(short.get(c)).toBe('12345678');
  });
});

describe('buildLayout', () => {
  const s1 = snap('1'.repeat(64), '2026-01-01T00:00:00Z', 'h1', ['daily']);
  const s2 = snap('2'.repeat(64), '2026-02-01T00:00:00Z', 'h2', ['daily', 'weekly']);
  const s3 = snap('3'.repeat(64), '2026-03-01T00:00:00Z', 'h1');
  // Given in no particular order.
  const root = buildLayout([s2, s3, s1], 42);

  it('lists every snapshot by ID, by time, by host and by tag', () => {
    expect([...root.children.keys()]).toEqual(['ids', 'snapshots', 'hosts', 'tags']);
    expect(at(root, `ids/${'1'.repeat(8)}`)).toMatchObject({ type: 'snapshot', snap: s1 });
    expect([...(at(root, 'snapshots') as VirtualDir).children.keys()]).toEqual([
      `2026-01-01T00:00:00Z_${'1'.repeat(8)}`,
      `2026-02-01T00:00:00Z_${'2'.repeat(8)}`,
      `2026-03-01T00:00:00Z_${'3'.repeat(8)}`,
      'latest',
    ]);
    expect(at(root, `hosts/h1/2026-03-01T00:00:00Z_${'3'.repeat(8)}`)).toMatchObject({ snap: s3 });
    expect([...(at(root, 'tags/daily') as VirtualDir).children.keys()].sort()).toEqual([
      `2026-01-01T00:00:00Z_${'1'.repeat(8)}`,
      `2026-02-01T00:00:00Z_${'2'.repeat(8)}`,
      'latest',
    ]);
  });

  it('points each latest at the newest snapshot beside it', () => {
    const target = (p: string) => (at(root, p) as { target: string }).target;
    expect(target('snapshots/latest')).toBe(`2026-03-01T00:00:00Z_${'3'.repeat(8)}`);
    expect(target('hosts/h2/latest')).toBe(`2026-02-01T00:00:00Z_${'2'.repeat(8)}`);
    expect(target('tags/daily/latest')).toBe(`2026-02-01T00:00:00Z_${'2'.repeat(8)}`);
  });

  it('dates each directory by its newest snapshot', () => {
    const march = Date.parse('2026-03-01T00:00:00Z');
    expect(root.mtimeMs).toBe(march);
    expect((at(root, 'tags/weekly') as VirtualDir).mtimeMs).toBe(Date.parse(s2.time));
    expect(buildLayout([], 42).mtimeMs).toBe(42);
  });
});

describe('imageEntries', () => {
  const image = (extra: Record<string, unknown>): StoredSnapshot => ({
    ...snap('4'.repeat(64), '2026-04-01T00:00:00Z', 'h'),
    kind: 'image',
    name: 'vm/disk',
    size: 1 << 30,
    extra,
  });
  const part = (number: number, start: number, size: number, type = 'linux') => ({
    number,
    start,
    size,
    type,
  });

  it('shows the image, its partitions, and .files when a filesystem inside is readable', () => {
    const s = image({ partition_table: 'mbr', partitions: [part(1, 1 << 20, 1 << 29)] });
    expect([...imageEntries(s, true)]).toEqual([
      ['vm\\x2fdisk.img', { kind: 'img', start: 0, size: 1 << 30 }],
      ['vm\\x2fdisk-part1.img', { kind: 'img', start: 1 << 20, size: 1 << 29 }],
      ['vm\\x2fdisk.files', { kind: 'files' }],
    ]);
    expect([...imageEntries(s, false).keys()]).toEqual([
      'vm\\x2fdisk.img',
      'vm\\x2fdisk-part1.img',
    ]);
  });

  it('leaves out extended containers and partitions outside the image', () => {
    const s = image({
      partition_table: 'mbr',
      partitions: [part(1, 0, 1 << 30, '0x05'), part(2, 1 << 29, 1 << 30), part(5, 512, 1024)],
    });
    expect([...imageEntries(s, false).keys()]).toEqual([
      'vm\\x2fdisk.img',
      'vm\\x2fdisk-part5.img',
    ]);
  });
});
