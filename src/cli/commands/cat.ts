import type { Command } from 'commander';
import { CairnError, shortHex } from '../../errors.js';
import { findEntry, readFileContent, rootTreeId } from '../../files/browse.js';
import { openImageFiles } from '../../fs/index.js';
import { catImage } from '../../image/index.js';
import type { Repository } from '../../repo/repository.js';
import type { StoredSnapshot } from '../../repo/snapshot.js';
import { type GlobalOptions, whileNotInterrupted } from '../context.js';
import { addFilterOptions, type FilterFlags, withSnapshot } from '../snapshot-args.js';

export function registerCat(program: Command): void {
  addFilterOptions(
    program
      .command('cat')
      .description("write a file's bytes (or a whole image snapshot) to stdout")
      .argument('<ref>', 'snapshot ID, ID prefix or "latest"')
      .argument('[path]', 'absolute path of a file inside the snapshot'),
  ).action(async (ref: string, path: string | undefined, flags: FilterFlags, cmd: Command) => {
    const g = cmd.optsWithGlobals<GlobalOptions>();
    await withSnapshot(g, ref, flags, 'cat', async (repo, snap) => {
      if (snap.kind === 'image') {
        if (path !== undefined) return streamTo(process.stdout, await imageFile(repo, snap, path));
        await whileNotInterrupted((signal) => catImageQuietly(repo, snap, signal));
        return;
      }
      if (path === undefined) throw new CairnError('cat of a file snapshot needs a PATH', 'Usage');
      await streamTo(process.stdout, await fileContent(repo, snap, path));
    });
  });
}

async function fileContent(
  repo: Repository,
  snap: StoredSnapshot,
  path: string,
): Promise<AsyncIterable<Buffer>> {
  const store = await repo.blobs();
  const found = await findEntry(store, rootTreeId(snap), path);
  const where = `in snapshot ${shortHex(snap.id)}`;
  if (!found) throw new CairnError(`${path} not found ${where}`, 'NotFound');
  const { entry } = found;
  if (!entry || entry.type === 'dir') throw new CairnError(`${path} is a directory ${where}`);
  if (entry.type !== 'file')
    throw new CairnError(`${path} is a ${entry.type}, not a file ${where}`);
  return readFileContent(store, entry);
}

/** A file inside an image snapshot's filesystems (`part<N>/…` for whole disks). */
async function imageFile(
  repo: Repository,
  snap: StoredSnapshot,
  path: string,
): Promise<AsyncIterable<Buffer>> {
  const { files, volumes } = await openImageFiles(repo, snap);
  if (!files) {
    const why = volumes.map((v) => v.note).filter(Boolean);
    throw new CairnError(
      `no readable filesystem in image snapshot ${shortHex(snap.id)}: ${why.join('; ')}`,
    );
  }
  return files.readFile(path);
}

/** The whole image to stdout; a reader that goes away (EPIPE) ends it quietly, like cat(1). */
async function catImageQuietly(repo: Repository, snap: StoredSnapshot, signal: AbortSignal) {
  await catImage(repo, snap, process.stdout, { signal }).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE') throw err;
  });
}

/**
 * Writes chunk after chunk, waiting for 'drain' when the stream's buffer is full, so memory
 * stays at a few chunks however large the file. A reader that goes away (EPIPE, as in
 * `cairn cat … | head`) ends the output quietly, like cat(1).
 */
async function streamTo(out: NodeJS.WriteStream, chunks: AsyncIterable<Buffer>): Promise<void> {
  let failure: NodeJS.ErrnoException | undefined;
  // Kept for the process's life: an EPIPE can arrive after the last write.
  out.on('error', (err: NodeJS.ErrnoException) => {
    failure ??= err;
  });
  for await (const chunk of chunks) {
    if (failure) break;
    if (out.write(chunk)) continue;
    await new Promise<void>((resolve) => {
      const done = () => {
        out.off('drain', done);
        out.off('error', done);
        resolve();
      };
      out.on('drain', done);
      out.on('error', done);
    });
  }
  if (failure && failure.code !== 'EPIPE') throw failure;
}
