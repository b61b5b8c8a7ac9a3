import { readFile } from 'node:fs/promises';

/** A line of /proc/self/mountinfo: where and what. */
export interface MountEntry {
  mountpoint: string;
  fstype: string;
  source: string;
  /** The filesystem's device as `major:minor` (a FUSE mount's names its /sys/class/bdi). */
  device: string;
}

/**
 * The mount table as the kernel sees it (/proc/self/mountinfo). Read rather than stat'ing
 * the mount point: a stat of our own mount from this process would go through our own
 * FUSE handlers, and of a dead one would fail with ENOTCONN.
 */
export async function mountTable(): Promise<MountEntry[]> {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  const out: MountEntry[] = [];
  for (const line of text.split('\n')) {
    if (!line) continue;
    // id parent major:minor root mountpoint options [optional…] - fstype source superopts
    const fields = line.split(' ');
    const dash = fields.indexOf('-', 6);
    if (dash < 0) continue;
    out.push({
      mountpoint: unescapeOctal(fields[4]!),
      fstype: fields[dash + 1]!,
      source: unescapeOctal(fields[dash + 2] ?? ''),
      device: fields[2]!,
    });
  }
  return out;
}

/** The entry mounted at `dir` (an absolute path without symlinks), the topmost if stacked. */
export async function mountAt(dir: string): Promise<MountEntry | undefined> {
  return (await mountTable()).findLast((m) => m.mountpoint === dir);
}

export async function isMounted(dir: string): Promise<boolean> {
  return (await mountAt(dir)) !== undefined;
}

/** mountinfo writes space, tab, newline and backslash in paths as octal escapes. */
function unescapeOctal(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, oct: string) =>
    String.fromCharCode(Number.parseInt(oct, 8)),
  );
}
