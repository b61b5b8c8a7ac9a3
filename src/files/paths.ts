import { isUtf8 } from 'node:buffer';
import { posix } from 'node:path';
import ignore, { type Ignore } from 'ignore';

/**
 * Paths inside a file snapshot are raw bytes: names need not be UTF-8. These helpers join
 * and split such paths and render them for people (terminal-safe) and for JSON (lossless
 * together with `path_bytes`).
 */
const SLASH = 0x2f;
const ROOT = Buffer.from('/');

export function rootPath(): Buffer {
  return ROOT;
}

/** `/a/b` + `c` → `/a/b/c`; the root `/` + `a` → `/a`. */
export function childPath(parent: Buffer, name: Buffer): Buffer {
  if (parent.length > 0 && parent[parent.length - 1] === SLASH)
    return Buffer.concat([parent, name]);
  return Buffer.concat([parent, ROOT, name]);
}

/**
 * A path given by a user (absolute or not, possibly with `.`/`..`) as components from the
 * snapshot root: `/home//u/./docs/` → ['home', 'u', 'docs'].
 */
export function splitUserPath(path: string): string[] {
  return posix
    .normalize(`/${path}`)
    .split('/')
    .filter((c) => c !== '' && c !== '.' && c !== '..');
}

/** The path relative to the snapshot root, as matched by include/exclude patterns. */
export function relativeText(path: Buffer): string {
  return jsonText(path[0] === SLASH ? path.subarray(1) : path);
}

/**
 * For JSON: valid UTF-8 as is, each byte of an invalid sequence as the four characters
 * `\xNN` (JSON escapes control characters by itself).
 */
export function jsonText(bytes: Buffer): string {
  return isUtf8(bytes) ? bytes.toString('utf8') : escapeBytes(bytes, false);
}

/** `{path}` and, when the path is not UTF-8, `path_bytes` (base64) to recover it exactly. */
export function jsonPath(bytes: Buffer, field = 'path'): Record<string, string> {
  if (isUtf8(bytes)) return { [field]: bytes.toString('utf8') };
  return { [field]: escapeBytes(bytes, false), [`${field}_bytes`]: bytes.toString('base64') };
}

/**
 * Terminal-safe text: invalid UTF-8 bytes, C0/C1 control characters and DEL are escaped
 * (`\n`, `\t`, `\r`, otherwise `\xNN` per byte) so a hostile name cannot move the cursor
 * or rewrite the screen; a backslash becomes `\\` so the escapes stay unambiguous.
 */
export function displayText(bytes: Buffer | string): string {
  const buf = typeof bytes === 'string' ? Buffer.from(bytes) : bytes;
  if (isUtf8(buf) && !needsDisplayEscape(buf)) return buf.toString('utf8');
  return escapeBytes(buf, true);
}

function needsDisplayEscape(buf: Buffer): boolean {
  for (let i = 0; i < buf.length; i++) {
    const b = buf[i]!;
    if (b < 0x20 || b === 0x7f || b === 0x5c) return true;
    // C1 controls U+0080–U+009F are encoded as C2 80 … C2 9F.
    if (b === 0xc2 && i + 1 < buf.length && buf[i + 1]! < 0xa0) return true;
  }
  return false;
}

const NAMED: Record<number, string> = { 10: '\\n', 9: '\\t', 13: '\\r', 92: '\\\\' };

function hexByte(b: number): string {
  return `\\x${b.toString(16).padStart(2, '0')}`;
}

function escapeBytes(buf: Buffer, display: boolean): string {
  let out = '';
  let i = 0;
  while (i < buf.length) {
    const b = buf[i]!;
    const n = utf8SequenceLength(buf, i);
    if (n === 0) {
      out += hexByte(b);
      i++;
    } else if (display && n === 1 && (b < 0x20 || b === 0x7f || b === 0x5c)) {
      out += NAMED[b] ?? hexByte(b);
      i++;
    } else if (display && n === 2 && b === 0xc2 && buf[i + 1]! < 0xa0) {
      out += hexByte(b) + hexByte(buf[i + 1]!);
      i += 2;
    } else {
      out += buf.toString('utf8', i, i + n);
      i += n;
    }
  }
  return out;
}

/** Length of the well-formed UTF-8 sequence at `i` (RFC 3629), or 0 when it is invalid. */
function utf8SequenceLength(buf: Buffer, i: number): number {
  const b = buf[i]!;
  if (b < 0x80) return 1;
  let n: number;
  let lo = 0x80;
  let hi = 0xbf;
  if (b >= 0xc2 && b <= 0xdf) n = 2;
  else if (b >= 0xe0 && b <= 0xef) {
    n = 3;
    if (b === 0xe0) lo = 0xa0; // overlong
    if (b === 0xed) hi = 0x9f; // surrogates
  } else if (b >= 0xf0 && b <= 0xf4) {
    n = 4;
    if (b === 0xf0) lo = 0x90; // overlong
    if (b === 0xf4) hi = 0x8f; // above U+10FFFF
  } else return 0;
  if (i + n > buf.length) return 0;
  const second = buf[i + 1]!;
  if (second < lo || second > hi) return 0;
  for (let k = 2; k < n; k++) {
    const c = buf[i + k]!;
    if (c < 0x80 || c > 0xbf) return 0;
  }
  return n;
}

export interface SelectOptions {
  /** Restore only what these patterns match (and the directories leading to it). */
  include?: readonly string[];
  /** Never restore what these patterns match, nor anything below it. */
  exclude?: readonly string[];
}

/**
 * Restic-like selection of snapshot paths. Patterns are gitignore globs over the snapshot's
 * absolute paths: a leading `/` (or any inner `/`) anchors at the snapshot root
 * (`/home/u/docs`), a pattern without one matches a name at any depth (`*.tmp`), `**` spans
 * directories, a trailing `/` matches only directories; matching is case-sensitive. A match
 * covers the whole subtree below it. Excludes win over includes.
 */
export class PathSelector {
  private readonly includes: Ignore | undefined;
  private readonly excludes: Ignore | undefined;
  private readonly prefixes: (RegExp[] | 'any')[];

  constructor(opts: SelectOptions) {
    const make = (p: readonly string[]) =>
      ignore({ ignorecase: false, allowRelativePaths: true }).add([...p]);
    this.includes = opts.include?.length ? make(opts.include) : undefined;
    this.excludes = opts.exclude?.length ? make(opts.exclude) : undefined;
    this.prefixes = (opts.include ?? []).map(anchoredSegments);
  }

  /** `rel`: the path without its leading `/`, as `relativeText` gives it. */
  excluded(rel: string, isDir: boolean): boolean {
    return this.excludes?.ignores(isDir ? `${rel}/` : rel) ?? false;
  }

  included(rel: string, isDir: boolean): boolean {
    return this.includes?.ignores(isDir ? `${rel}/` : rel) ?? true;
  }

  /** Whether something below directory `rel` may be included: when not, it is not walked. */
  mayContainIncluded(rel: string): boolean {
    if (!this.includes) return true;
    const names = rel.split('/');
    return this.prefixes.some((segs) => {
      if (segs === 'any') return true;
      for (let i = 0; i < names.length && i < segs.length; i++) {
        if (!segs[i]!.test(names[i]!)) return false;
      }
      return true;
    });
  }
}

/**
 * An include pattern's per-directory matchers when it is anchored at the root; 'any' when it
 * can match at any depth (or uses `**` or a negation, which we do not try to prune by).
 */
function anchoredSegments(pattern: string): RegExp[] | 'any' {
  const p = pattern.trim().replace(/\/+$/, '');
  if (p.startsWith('!') || !p.includes('/')) return 'any';
  const segs = p.replace(/^\/+/, '').split('/');
  const out: RegExp[] = [];
  for (const seg of segs) {
    if (seg.includes('**')) break;
    out.push(globSegment(seg));
  }
  return out;
}

/** One path component's glob (`*`, `?`, `[…]`, `\x`) as an anchored RegExp. */
function globSegment(glob: string): RegExp {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!;
    if (c === '*') re += '.*';
    else if (c === '?') re += '.';
    else if (c === '\\' && i + 1 < glob.length) re += escapeRe(glob[++i]!);
    else if (c === '[') {
      const end = glob.indexOf(']', i + 2);
      if (end < 0) re += '\\[';
      else {
        const body = glob
          .slice(i + 1, end)
          .replace(/^!/, '^')
          .replace(/\\/g, '\\\\');
        re += `[${body}]`;
        i = end;
      }
    } else re += escapeRe(c);
  }
  return new RegExp(`^${re}$`, 's');
}

function escapeRe(c: string): string {
  return c.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
}
