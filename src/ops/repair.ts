import { type RebuildResult, rebuildIndex } from '../repo/rebuild.js';
import type { Repository } from '../repo/repository.js';
import { withLock } from './locked.js';

/**
 * `repair index`: rebuilds the index from the packs' own tables of contents, under an
 * exclusive lock, and brings the local view up to date. Packs whose table of contents cannot
 * be read are left out and reported; `check` then names the snapshots that needed them.
 */
export function repairIndex(repo: Repository): Promise<RebuildResult> {
  return withLock(repo, true, 'repair index', async () => {
    const result = await rebuildIndex(repo);
    await (await repo.indexView()).sync(repo.backend, repo.sealer);
    return result;
  });
}
