import {
  appendFile,
  chmod,
  link,
  mkdir,
  open,
  rm,
  symlink,
  utimes,
  writeFile,
} from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { gearTable } from '../../src/chunker/index.js';
import {
  type Change,
  type DiffError,
  diffLive,
  type LiveDiffOptions,
  storeTreeLoader,
} from '../../src/diff/index.js';
import { backup } from '../../src/files/archiver.js';
import { Excludes } from '../../src/files/excludes.js';
import { OwnerNames } from '../../src/files/fsmeta.js';
import { makeRepo, type TempDir, type TestRepo, tempDir } from '../helpers.js';

let t: TestRepo;
let d: TempDir;
let src: string;
beforeEach(async () => {
  t = await makeRepo({ encryption: false });
  d = await tempDir();
  src = join(d.path, 'src');
  await mkdir(src);
});
afterEach(async () => {
  await t.cleanup();
  await d.cleanup();
});

/** Backs up `src` and returns the snapshot's root tree. */
async function snapshot(): Promise<Buffer> {
  const gen = backup(t.repo, [src]);
  for (;;) {
    const next = await gen.next();
    if (next.done) return Buffer.from(next.value.root, 'hex');
  }
}

async function live(root: Buffer, paths: string[], extra: Partial<LiveDiffOptions> = {}) {
  const opts: LiveDiffOptions = { owners: await OwnerNames.load(), ...extra };
  const load = storeTreeLoader(await t.repo.blobs());
  const out: (Change | DiffError)[] = [];
  for await (const e of diffLive(load, root, paths, opts)) out.push(e);
  return out;
}

/** Changes as `marker relative-path` (latin1), in the order reported. */
function shown(events: (Change | DiffError)[]): string[] {
  return events.map((e) =>
    e.type === 'error'
      ? `error ${e.path.toString('latin1')}`
      : `${e.modifier} ${e.path.toString('latin1').slice(src.length) || '.'}`,
  );
}

const contentCheck = () => ({
  params: t.repo.config.chunker,
  table: gearTable(t.repo.chunkerSeed),
  hashId: t.repo.hashId,
});

const at = (...p: string[]) => join(src, ...p);

async function fixture(): Promise<void> {
  for (const name of ['keep', 'mod', 'grow', 'touched', 'same', 'mode', 'gone', 't1', 'linked']) {
    await writeFile(at(name), `${name} content\n`);
  }
  await symlink('keep', at('link'));
  await mkdir(at('sub/deep'), { recursive: true });
  await writeFile(at('sub/deep/b'), 'b');
  await mkdir(at('old'));
  await writeFile(at('old/c'), 'c');
  await mkdir(at('t2'));
  await writeFile(at('t2/inner'), 'i');
  // A sparse file: its zeros are a hole in the snapshot, and must be one when re-read too.
  const fh = await open(at('sparse'), 'w');
  await fh.write(Buffer.from('end'), 0, 3, 3 << 20);
  await fh.close();
}

async function modify(): Promise<void> {
  await writeFile(at('mod'), 'MOD content\n');
  await appendFile(at('grow'), 'more');
  const later = new Date(Date.now() + 60_000);
  await utimes(at('touched'), later, later);
  await utimes(at('sparse'), later, later);
  await writeFile(at('same'), 'same content\n');
  await chmod(at('mode'), 0o600);
  await rm(at('gone'));
  await rm(at('link'));
  await symlink('mod', at('link'));
  await rm(at('t1'));
  await symlink('keep', at('t1'));
  await rm(at('old'), { recursive: true });
  await rm(at('t2'), { recursive: true });
  await writeFile(at('t2'), 'now a file');
  await writeFile(at('new'), 'new');
  await mkdir(at('newdir'));
  await writeFile(at('newdir/x'), 'x');
  await writeFile(Buffer.from(`${src}/caf\xe9`, 'latin1'), 'latin1 name');
  // Only the inode's link count and ctime change: nothing a diff reports as metadata.
  await link(at('linked'), at('hardlink'));
}

describe('diffLive', () => {
  it('reports what changed on disk since the snapshot, by backup’s change rule', async () => {
    await fixture();
    const root = await snapshot();
    await modify();
    const before = ['U .', '+ /caf\xe9', '- /gone', 'M /grow', '+ /hardlink', 'M /link'];
    const after = ['+ /new', '+ /newdir', '+ /newdir/x', '- /old', '- /old/c'];
    const types = ['T /t1', 'T /t2', '- /t2/inner'];
    // `U .`: entries were added and removed, so the directory's mtime moved. Without reading,
    // a file whose mtime (or only its ctime: /linked got a second link) moved may differ.
    expect(shown(await live(root, [src]))).toEqual([
      ...before,
      'M /linked',
      'M /mod',
      'U /mode',
      ...after,
      'M /same',
      'M /sparse',
      ...types,
      'M /touched',
    ]);
    // Reading tells touched files (the same chunks and holes) from changed ones.
    expect(shown(await live(root, [src], { content: contentCheck() }))).toEqual([
      ...before,
      'M /mod',
      'U /mode',
      ...after,
      'U /same',
      'U /sparse',
      ...types,
      'U /touched',
    ]);
  });

  it('compares only the given paths, each once, and ones that exist on one side only', async () => {
    await fixture();
    const root = await snapshot();
    await modify();
    expect(shown(await live(root, [at('sub'), at('newdir'), at('old'), at('sub/deep')]))).toEqual([
      '+ /newdir',
      '+ /newdir/x',
      '- /old',
      '- /old/c',
    ]);
    await expect(live(root, [at('nowhere')])).rejects.toThrow(
      /neither in the snapshot nor on disk/,
    );
  });

  it('leaves excluded paths out on both sides', async () => {
    await fixture();
    const root = await snapshot();
    await modify();
    const excludes = await Excludes.load(['old', 'new*', '/**/t?'], []);
    const got = shown(await live(root, [src], { excludes, content: contentCheck() }));
    expect(got.filter((l) => /old|new|t1|t2/.test(l))).toEqual([]);
    expect(got).toContain('M /mod');
  });
});
