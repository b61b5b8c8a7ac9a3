import type { TreeEntry } from '../files/tree.js';
import type { FsStat } from './types.js';

/**
 * An entry inside an image in the form of a file snapshot's tree entry, so that listing
 * and restoring share the file snapshot's formatters and metadata code. Filesystems inside
 * images record IDs, not user names.
 */
export function treeEntry(name: Buffer, stat: FsStat, target?: Buffer): TreeEntry {
  return {
    name,
    type: stat.type,
    mode: stat.mode,
    uid: stat.uid,
    gid: stat.gid,
    user: '',
    group: '',
    mtimeNs: stat.mtimeNs,
    ctimeNs: stat.ctimeNs,
    device: stat.device,
    inode: stat.inode,
    nlink: stat.nlink,
    size: stat.size,
    xattrs: [],
    ...(target ? { target } : {}),
    ...(stat.rdev !== undefined ? { rdev: stat.rdev } : {}),
  };
}
