import { readFile } from 'node:fs/promises';
import { CairnError } from '../errors.js';
import { PathSelector, relativeText } from './paths.js';

/** Paths tested before the matcher is rebuilt: `ignore` caches one result per path tested. */
const CACHE_LIMIT = 50_000;

/**
 * `--exclude` and `--exclude-file` patterns: gitignore globs over absolute paths, matched
 * exactly as `restore --exclude` matches snapshot paths (`PathSelector`), as if the
 * filesystem root held the `.gitignore`:
 *   - `*.log`, `cache/` (no inner slash) match a name at any depth;
 *   - `/home/u/tmp`, `home/*\/.cache` (a leading or inner slash) are anchored at `/`;
 *   - a trailing slash matches directories only; `!pattern` re-includes; `**` spans levels.
 * `ignore` works on relative paths, so the leading `/` is dropped; a name that is not UTF-8
 * is matched in its `\xNN`-escaped form, as `ls` prints it. Matching is case-sensitive.
 */
export class Excludes {
  private selector: PathSelector;
  private tested = 0;

  private constructor(readonly patterns: readonly string[]) {
    this.selector = new PathSelector({ exclude: patterns });
  }

  /** Reads exclude files (one pattern a line, `#` comments); undefined when nothing is excluded. */
  static async load(patterns: string[], files: string[] = []): Promise<Excludes | undefined> {
    const all = [...patterns];
    for (const f of files) {
      const text = await readFile(f, 'utf8').catch((err: NodeJS.ErrnoException) => {
        throw new CairnError(`cannot read exclude file ${f}: ${err.code ?? err.message}`);
      });
      all.push(...text.split(/\r?\n/));
    }
    const kept = all.filter((p) => p.trim() !== '' && !p.startsWith('#'));
    return kept.length > 0 ? new Excludes(kept) : undefined;
  }

  /** Whether the absolute `path` (bytes, as on disk) is excluded. */
  excludes(path: Buffer, isDir: boolean): boolean {
    if (path.length <= 1) return false;
    // A fresh matcher starts with an empty cache, so memory stays flat over millions of paths.
    if (++this.tested > CACHE_LIMIT) {
      this.selector = new PathSelector({ exclude: this.patterns });
      this.tested = 0;
    }
    return this.selector.excluded(relativeText(path), isDir);
  }
}
