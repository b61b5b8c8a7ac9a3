import { type ContentPart, mergeHoles, type TreeEntry, type Xattr } from '../files/tree.js';

/**
 * How one path differs between two sides (restic's markers): `+` added, `-` removed,
 * `M` content changed (a file's parts, a symlink's target, a device's number), `U` metadata
 * only, `T` type changed.
 */
export type Modifier = '+' | '-' | 'M' | 'U' | 'T';

/**
 * The metadata `U` reports: what a person set or can see and a restore brings back. ctime,
 * inode, device and link count are left out on purpose: they change when nothing a user
 * cares about did (a restore, a copy to another disk, a new hard link elsewhere), and
 * reporting them would bury the real changes.
 */
export function sameMetadata(a: TreeEntry, b: TreeEntry): boolean {
  return (
    a.mode === b.mode &&
    a.uid === b.uid &&
    a.gid === b.gid &&
    a.user === b.user &&
    a.group === b.group &&
    a.mtimeNs === b.mtimeNs &&
    sameXattrs(a.xattrs, b.xattrs)
  );
}

function sameXattrs(a: readonly Xattr[], b: readonly Xattr[]): boolean {
  return (
    a.length === b.length &&
    a.every((x, i) => x.name.equals(b[i]!.name) && x.value.equals(b[i]!.value))
  );
}

/** Same chunk IDs and hole lengths in the same order: equal bytes, without reading them. */
export function sameParts(a: readonly ContentPart[], b: readonly ContentPart[]): boolean {
  const x = mergeHoles(a);
  const y = mergeHoles(b);
  return (
    x.length === y.length &&
    x.every((p, i) => {
      const q = y[i]!;
      return p.length === q.length && (p.id && q.id ? p.id.equals(q.id) : p.id === q.id);
    })
  );
}

/** Whether what the entry holds (not its metadata) is the same on both sides. */
export function sameContent(a: TreeEntry, b: TreeEntry): boolean {
  switch (a.type) {
    case 'file':
      return a.size === b.size && sameParts(a.content ?? [], b.content ?? []);
    case 'symlink':
      return a.target!.equals(b.target!);
    case 'chardev':
    case 'blockdev':
      return a.rdev === b.rdev;
    default:
      return true;
  }
}

/**
 * The marker for an entry present on both sides, or undefined when nothing a diff reports
 * changed. A directory's subtree is not looked at here: its contents are diffed entry by
 * entry.
 */
export function entryModifier(a: TreeEntry, b: TreeEntry): Modifier | undefined {
  if (a.type !== b.type) return 'T';
  if (!sameContent(a, b)) return 'M';
  return sameMetadata(a, b) ? undefined : 'U';
}

/** Bytes of `of`'s stored parts whose chunk is not among `other`'s. */
export function uniqueBytes(of: readonly ContentPart[], other: readonly ContentPart[]): number {
  const known = new Set<string>();
  for (const p of other) if (p.id) known.add(p.id.toString('latin1'));
  let n = 0;
  for (const p of of) if (p.id && !known.has(p.id.toString('latin1'))) n += p.length;
  return n;
}

/** Two name-sorted lists side by side: each name once, with its item from each (or none). */
export function* mergeByName<A extends { name: Buffer }, B extends { name: Buffer }>(
  as: readonly A[],
  bs: readonly B[],
): Generator<[A, B] | [A, undefined] | [undefined, B]> {
  let i = 0;
  let j = 0;
  while (i < as.length || j < bs.length) {
    const a = as[i];
    const b = bs[j];
    const order = !a ? 1 : !b ? -1 : Buffer.compare(a.name, b.name);
    if (order < 0) yield [as[i++]!, undefined];
    else if (order > 0) yield [undefined, bs[j++]!];
    else yield [as[i++]!, bs[j++]!];
  }
}
