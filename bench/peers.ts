import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/*
 * cairn and the tools it is compared with, each driven as its users drive it: a new process
 * per command, an encrypted repository (casync has no encryption), a password from the
 * environment, default chunking and compression, its own cache directory. The KDF runs in
 * every command of every tool (cairn's default argon2id, restic's calibrated scrypt, borg's
 * PBKDF2), as it does for a user.
 */

export type ToolName = 'cairn' | 'restic' | 'borg' | 'casync';

export interface Command {
  file: string;
  args: string[];
  env: NodeJS.ProcessEnv;
  cwd?: string;
  /** Exit codes that mean success (borg exits 1 for warnings). */
  ok?: number[];
}

export interface Tool {
  name: ToolName;
  version: string;
  encrypted: boolean;
  /** Untimed commands that create an empty repository in `repo` (a fresh directory). */
  init(repo: string): Command[];
  backup(repo: string, path: string, label: string): Command;
  image(repo: string, file: string, label: string): Command;
  /** Restores the snapshot `label` into the new directory `target`. */
  restore(repo: string, label: string, target: string): Command;
  /** Restores the image snapshot `label` into `target` (a new directory holding the file). */
  restoreImage(repo: string, label: string, target: string): Command;
  /** Untimed, after each backup: learn the new snapshot's ID. */
  remember?(repo: string, label: string): void;
}

export const PASSWORD = 'cairn-bench-password';
const CAIRN = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

/** Read when the bench starts, not when the peers run: the commit the build came from. */
const CAIRN_VERSION = (() => {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8'));
  const head = spawnSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8' });
  return `${pkg.version}${head.status === 0 ? ` (${head.stdout.trim()})` : ''}`;
})();

function output(file: string, args: string[], env?: NodeJS.ProcessEnv): string {
  return execFileSync(file, args, { env, maxBuffer: 1 << 26, encoding: 'utf8' }).trim();
}

/** cairn and restic name snapshots by ID: remember the newest after each backup. */
function snapshotIds(list: (repo: string) => string) {
  const ids = new Map<string, string>();
  return {
    remember(repo: string, label: string) {
      const snaps = JSON.parse(list(repo)) as { id: string; time: string }[];
      snaps.sort((a, b) => Date.parse(a.time) - Date.parse(b.time));
      ids.set(`${repo}\0${label}`, snaps.at(-1)!.id);
    },
    id(repo: string, label: string): string {
      const id = ids.get(`${repo}\0${label}`);
      if (!id) throw new Error(`no snapshot ${label} in ${repo}`);
      return id;
    },
  };
}

function cairn(work: string): Tool {
  const env = { ...process.env, CAIRN_PASSWORD: PASSWORD };
  const cmd = (repo: string, args: string[]): Command => ({
    file: process.execPath,
    args: [CAIRN, '-r', repo, '--cache-dir', join(work, 'cache'), '-q', ...args],
    env,
  });
  const ids = snapshotIds((repo) => {
    const c = cmd(repo, ['--json', 'snapshots']);
    return output(c.file, c.args, env);
  });
  return {
    name: 'cairn',
    version: CAIRN_VERSION,
    encrypted: true,
    init: (repo) => [cmd(repo, ['init'])],
    backup: (repo, path) => cmd(repo, ['backup', path]),
    image: (repo, file) => cmd(repo, ['image', file, '--name', 'disk']),
    restore: (repo, label, target) => cmd(repo, ['restore', ids.id(repo, label), '-t', target]),
    restoreImage: (repo, label, target) =>
      cmd(repo, ['restore', ids.id(repo, label), '-t', join(target, 'disk.img')]),
    remember: ids.remember,
  };
}

function restic(work: string): Tool {
  const env = { ...process.env, RESTIC_PASSWORD: PASSWORD };
  const cmd = (repo: string, args: string[]): Command => ({
    file: 'restic',
    args: ['-r', repo, '--cache-dir', join(work, 'cache'), '-q', ...args],
    env,
  });
  const ids = snapshotIds((repo) => {
    const c = cmd(repo, ['snapshots', '--json']);
    return output(c.file, c.args, env);
  });
  const restore = (repo: string, label: string, target: string) =>
    cmd(repo, ['restore', ids.id(repo, label), '--target', target]);
  return {
    name: 'restic',
    version: output('restic', ['version']).split(' ')[1] ?? '?',
    encrypted: true,
    init: (repo) => [cmd(repo, ['init'])],
    backup: (repo, path) => cmd(repo, ['backup', path]),
    image: (repo, file) => cmd(repo, ['backup', file]),
    restore,
    restoreImage: restore,
    remember: ids.remember,
  };
}

function borg(work: string): Tool {
  const env = {
    ...process.env,
    BORG_PASSPHRASE: PASSWORD,
    BORG_BASE_DIR: work,
    BORG_CACHE_DIR: join(work, 'cache'),
    BORG_CONFIG_DIR: join(work, 'config'),
    BORG_SECURITY_DIR: join(work, 'security'),
  };
  const cmd = (args: string[], cwd?: string): Command => ({
    file: 'borg',
    args,
    env,
    cwd,
    ok: [0, 1],
  });
  // borg extracts into the working directory; --sparse makes holes of zero runs, as cairn.
  const extract = (repo: string, label: string, target: string) =>
    cmd(['extract', '--sparse', `${repo}::${label}`], target);
  return {
    name: 'borg',
    version: output('borg', ['--version']).split(' ')[1] ?? '?',
    encrypted: true,
    // repokey: AES-CTR + HMAC-SHA-256, like cairn's keyed SHA-256 (SHA-NI on this CPU).
    init: (repo) => [cmd(['init', '--encryption=repokey', repo])],
    backup: (repo, path, label) => cmd(['create', `${repo}::${label}`, path]),
    image: (repo, file, label) => cmd(['create', `${repo}::${label}`, file]),
    restore: extract,
    restoreImage: extract,
  };
}

function casync(): Tool {
  const cmd = (args: string[]): Command => ({ file: 'casync', args, env: process.env });
  const store = (repo: string) => `--store=${join(repo, 'store')}`;
  return {
    name: 'casync',
    version: output('casync', ['--version']).split(/\s+/)[1] ?? '?',
    encrypted: false,
    init: (repo) => [{ file: 'mkdir', args: ['-p', repo], env: process.env }],
    backup: (repo, path, label) => cmd(['make', store(repo), join(repo, `${label}.caidx`), path]),
    image: (repo, file, label) => cmd(['make', store(repo), join(repo, `${label}.caibx`), file]),
    restore: (repo, label, target) =>
      cmd(['extract', store(repo), join(repo, `${label}.caidx`), join(target, 'tree')]),
    restoreImage: (repo, label, target) =>
      cmd(['extract', store(repo), join(repo, `${label}.caibx`), join(target, 'disk.img')]),
  };
}

const PACKAGES: Record<ToolName, string> = {
  cairn: '',
  restic: 'restic',
  borg: 'borgbackup',
  casync: 'casync',
};

function installed(bin: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${bin}`], { stdio: 'ignore' }).status === 0;
}

/**
 * Installs missing peers, GNU time and `helpers` (Debian packages named as their command,
 * such as fio) from Debian's packages (root only).
 */
export function installPeers(names: ToolName[], helpers: string[] = []): void {
  const want = names.filter((n) => PACKAGES[n] && !installed(n)).map((n) => PACKAGES[n]);
  if (!installed('/usr/bin/time')) want.push('time');
  want.push(...helpers.filter((h) => !installed(h)));
  if (want.length === 0 || process.getuid?.() !== 0) return;
  process.stderr.write(`bench: apt-get install ${want.join(' ')}\n`);
  const install = () =>
    spawnSync('apt-get', ['install', '-y', '-q', ...want], { stdio: 'ignore' }).status === 0;
  if (!install()) {
    spawnSync('apt-get', ['update', '-q'], { stdio: 'ignore' });
    install();
  }
}

/** The tools that are installed, each with its own work directory under `work`. */
export function makeTools(names: ToolName[], work: string): { tools: Tool[]; missing: string[] } {
  const make = { cairn, restic, borg, casync: () => casync() };
  const tools: Tool[] = [];
  const missing: string[] = [];
  for (const name of names) {
    if (name !== 'cairn' && !installed(name)) missing.push(name);
    else tools.push(make[name](join(work, name)));
  }
  return { tools, missing };
}
