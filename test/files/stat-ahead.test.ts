import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { pathForest } from '../../src/files/archiver.js';
import { StatAhead } from '../../src/files/stat-ahead.js';
import { type TempDir, tempDir } from '../helpers.js';

let d: TempDir;
beforeEach(async () => {
  d = await tempDir();
});
afterEach(() => d.cleanup());

describe('StatAhead', () => {
  it("lists the walk's directories and entries, leaving out what is excluded", async () => {
    const src = join(d.path, 'src');
    await mkdir(join(src, 'a', 'b'), { recursive: true });
    await mkdir(join(src, 'cache', 'deep'), { recursive: true });
    await writeFile(join(src, 'a', 'b', 'f'), 'x');
    await writeFile(join(src, 'top'), 'x');
    await writeFile(join(src, 'skip.log'), 'x');
    const other = join(d.path, 'other');
    await mkdir(other);
    await writeFile(join(other, 'g'), 'x');
    const ahead = new StatAhead(pathForest([src, join(other, 'g'), other]), {
      excludes: ['cache/', '*.log'],
      oneFileSystem: false,
    });
    try {
      // src: a, top; a: b; b: f; other: g (the file given inside it adds nothing).
      expect(await ahead.done).toEqual({ dirs: 4, entries: 5 });
    } finally {
      await ahead.stop();
    }
  });
});
