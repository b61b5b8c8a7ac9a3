import { isUtf8 } from 'node:buffer';
import { closeSync, constants, openSync } from 'node:fs';
import { getAttributeSync, listAttributesSync } from 'fs-xattr';
import type { EntryType, Xattr } from './tree.js';

/** Linux's O_PATH: an fd that names the inode without opening it (no read permission, no FIFO block). */
const O_PATH = 0o10000000;

/**
 * The namespaces a backup records: user data and POSIX ACLs. `trusted.*` and `security.*`
 * are left out: they belong to the machine (SELinux labels, overlay state) and restoring
 * them elsewhere does harm more often than good. ACLs are readable by anyone who can reach
 * the file; whether they can be written back is the restorer's concern.
 */
const RECORDED = /^(user\.|system\.posix_acl_(access|default)$)/;

/** Errors that mean "this file has no xattrs we can record", not "the file is unreadable". */
const NONE = new Set(['ENOTSUP', 'EOPNOTSUPP', 'ENODATA']);

/**
 * The recorded xattrs of the entry at `path`, sorted by name. fs-xattr takes string paths
 * and follows symlinks, so a symlink has none (Linux allows no user xattrs on one), and a
 * path that is not UTF-8 is reached through `/proc/self/fd` of an O_PATH descriptor.
 * Synchronous, like the walk's lstat calls (see fsmeta.ts): one listxattr per entry, and an
 * async call costs several times the syscall.
 */
export function readXattrs(path: Buffer, type: EntryType): Xattr[] {
  if (type === 'symlink') return [];
  if (isUtf8(path)) return readAt(path.toString('utf8'));
  const fd = openSync(path, O_PATH | constants.O_NOFOLLOW);
  try {
    return readAt(`/proc/self/fd/${fd}`);
  } finally {
    closeSync(fd);
  }
}

function readAt(path: string): Xattr[] {
  let names: string[];
  try {
    names = listAttributesSync(path);
  } catch (err) {
    if (NONE.has((err as NodeJS.ErrnoException).code ?? '')) return [];
    throw err;
  }
  const wanted = names.filter((n) => RECORDED.test(n));
  if (wanted.length === 0) return [];
  const found: Xattr[] = [];
  for (const n of wanted) {
    try {
      found.push({ name: Buffer.from(n), value: getAttributeSync(path, n) });
    } catch (err) {
      // Removed between list and get: it is simply not there any more.
      if (!NONE.has((err as NodeJS.ErrnoException).code ?? '')) throw err;
    }
  }
  return found.sort((a, b) => Buffer.compare(a.name, b.name));
}
