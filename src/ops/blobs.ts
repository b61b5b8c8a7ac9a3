import { CairnError, shortHex } from '../errors.js';
import type { BlobLocation } from '../repo/blob.js';
import { decodeBlob } from '../repo/blob-codec.js';
import { packName } from '../repo/pack.js';
import type { Repository } from '../repo/repository.js';

/** One blob read from a given pack and verified (authentication, length and ID). */
export async function readBlobAt(repo: Repository, loc: BlobLocation): Promise<Buffer> {
  const range = { offset: loc.offset, length: loc.length };
  const sealed = await repo.backend.read(packName(loc.pack), range);
  return decodeBlob(sealed, loc, repo.sealer, repo.hashId);
}

/**
 * A blob from the first of its copies that reads and verifies. Copies that fail with damage
 * (not I/O trouble, which is thrown) are passed to `onBad`; with none usable, the last damage
 * is thrown, or a Damaged error when there is no copy at all.
 */
export async function readAnyCopy(
  repo: Repository,
  id: Buffer,
  copies: readonly BlobLocation[],
  onBad?: (loc: BlobLocation, err: CairnError) => void,
): Promise<Buffer> {
  let last: CairnError | undefined;
  for (const loc of copies) {
    try {
      return await readBlobAt(repo, loc);
    } catch (err) {
      if (!(err instanceof CairnError) || err.code === 'Fatal') throw err;
      onBad?.(loc, err);
      last = err;
    }
  }
  throw last ?? new CairnError(`blob ${shortHex(id)} is not in the index`, 'Damaged');
}
