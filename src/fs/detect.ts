import { CairnError } from '../errors.js';
import { openExt } from './ext/volume.js';
import { openFat } from './fat/volume.js';
import { Filesystem } from './filesystem.js';
import { openNtfs } from './ntfs/volume.js';
import { UnreadableFilesystem } from './source.js';
import type { ByteSource, Volume, VolumeOptions } from './types.js';

/** NTFS before FAT: an NTFS boot sector has a BPB too (with zero FATs, which FAT refuses). */
const OPENERS = [openExt, openNtfs, openFat];

/**
 * The filesystem in `source` (ext2/3/4, NTFS or FAT12/16/32), or undefined when none is
 * recognised. A recognised filesystem whose structures cannot be read fails with an
 * UnreadableFilesystem error (a Damaged CairnError) saying which and why.
 */
export async function openFilesystem(
  source: ByteSource,
  opts: VolumeOptions = {},
): Promise<Filesystem | undefined> {
  for (const open of OPENERS) {
    const volume: Volume | undefined = await open(source, opts);
    if (!volume) continue;
    try {
      return new Filesystem(await volume.root());
    } catch (err) {
      if (!(err instanceof CairnError) || err.code !== 'Damaged') throw err;
      throw new UnreadableFilesystem(volume.type, err.message);
    }
  }
  return undefined;
}
