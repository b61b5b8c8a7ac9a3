import { readFile } from 'node:fs/promises';
import { CairnError } from '../errors.js';

export interface PasswordSources {
  passwordFile?: string;
}

const HOW =
  'give one with --password-file, CAIRN_PASSWORD_FILE or CAIRN_PASSWORD, or run on a terminal';

/**
 * The password, from (in order) --password-file, CAIRN_PASSWORD_FILE, CAIRN_PASSWORD, or a
 * prompt without echo on a TTY. Never from argv, so it cannot show up in `ps`.
 */
export async function readPassword(src: PasswordSources, confirm = false): Promise<string> {
  const file = src.passwordFile ?? process.env.CAIRN_PASSWORD_FILE;
  if (file) {
    const text = await readFile(file, 'utf8').catch((err: NodeJS.ErrnoException) => {
      throw new CairnError(`cannot read password file ${file}: ${err.code ?? err.message}`);
    });
    const line = text.split(/\r?\n/, 1)[0] ?? '';
    if (line === '') throw new CairnError(`password file ${file} is empty`, 'NoPassword');
    return line;
  }
  const env = process.env.CAIRN_PASSWORD;
  if (env !== undefined && env !== '') return env;
  if (!process.stdin.isTTY || !process.stderr.isTTY) {
    throw new CairnError(`no password given: ${HOW}`, 'NoPassword');
  }
  const first = await prompt('enter password for repository: ');
  if (confirm && (await prompt('enter password again: ')) !== first) {
    throw new CairnError('passwords do not match', 'NoPassword');
  }
  if (first === '') throw new CairnError('empty password', 'NoPassword');
  return first;
}

/**
 * A new password (key add/passwd): from `--new-password-file`, else asked twice on a TTY.
 * Reuses the rules above, with the new file standing in for --password-file.
 */
export async function readNewPassword(file: string | undefined): Promise<string> {
  if (file) return readPassword({ passwordFile: file });
  if (!process.stdin.isTTY || !process.stderr.isTTY) {
    throw new CairnError(
      'no new password given: use --new-password-file or a terminal',
      'NoPassword',
    );
  }
  const first = await prompt('enter new password: ');
  if ((await prompt('enter new password again: ')) !== first) {
    throw new CairnError('passwords do not match', 'NoPassword');
  }
  if (first === '') throw new CairnError('empty password', 'NoPassword');
  return first;
}

/** Reads one line from the terminal in raw mode, echoing nothing. */
function prompt(question: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const stdin = process.stdin;
    process.stderr.write(question);
    stdin.setRawMode(true);
    stdin.resume();
    let value = '';
    const onData = (buf: Buffer) => {
      for (const ch of buf.toString('utf8')) {
        if (ch === '\r' || ch === '\n') return finish(() => resolve(value));
        if (ch === '\u0003')
          return finish(() => reject(new CairnError('interrupted', 'Interrupted')));
        if (ch === '\u007f' || ch === '\b') value = value.slice(0, -1);
        else value += ch;
      }
    };
    const finish = (done: () => void) => {
      stdin.off('data', onData);
      stdin.setRawMode(false);
      stdin.pause();
      process.stderr.write('\n');
      done();
    };
    stdin.on('data', onData);
  });
}
