import type { Command } from 'commander';
import { DEFAULT_KDF_PARAMS, type KdfParams } from '../../crypto/index.js';
import { CairnError } from '../../errors.js';
import { findKey, listKeys } from '../../repo/keys.js';
import type { Repository } from '../../repo/repository.js';
import { type GlobalOptions, withRepository } from '../context.js';
import { printJson, printLine } from '../output.js';
import { readNewPassword } from '../password.js';

interface NewKeyFlags {
  newPasswordFile?: string;
  kdfMemory?: string;
  kdfTime?: string;
}

/** `cairn key add|list|remove|passwd`: several passwords, each wrapping the same master key. */
export function registerKey(program: Command): void {
  const key = program.command('key').description('manage the passwords of a repository');
  withNewKeyOptions(key.command('add').description('add a password')).action(
    async (flags: NewKeyFlags, cmd: Command) => {
      const g = cmd.optsWithGlobals<GlobalOptions>();
      await withRepository(g, async (repo) => {
        const name = await repo.addKey(await readNewPassword(flags.newPasswordFile), kdf(flags));
        report(g, 'added', name);
      });
    },
  );
  key
    .command('list')
    .description('list the keys (passwords) of the repository')
    .action(async (_flags: unknown, cmd: Command) => {
      const g = cmd.optsWithGlobals<GlobalOptions>();
      await withRepository(g, async (repo) => printKeys(g, repo));
    });
  key
    .command('remove')
    .description('remove a key (not the one in use)')
    .argument('<id>', 'key ID or unique prefix')
    .action(async (id: string, _flags: unknown, cmd: Command) => {
      const g = cmd.optsWithGlobals<GlobalOptions>();
      await withRepository(g, async (repo) => {
        const name = await findKey(repo.backend, id);
        if (name === repo.keyName) {
          throw new CairnError('refusing to remove the key in use; use "key passwd" instead');
        }
        await repo.backend.delete(name);
        report(g, 'removed', name);
      });
    });
  withNewKeyOptions(
    key.command('passwd').description('change the password in use (adds a key, removes the old)'),
  ).action(async (flags: NewKeyFlags, cmd: Command) => {
    const g = cmd.optsWithGlobals<GlobalOptions>();
    await withRepository(g, async (repo) => {
      const name = await repo.addKey(await readNewPassword(flags.newPasswordFile), kdf(flags));
      // The new key is durable before the old one goes: a crash leaves both, never neither.
      await repo.backend.delete(repo.keyName!);
      report(g, 'changed', name);
    });
  });
  for (const sub of key.commands) sub.showHelpAfterError().exitOverride();
}

function withNewKeyOptions(cmd: Command): Command {
  return cmd
    .option('--new-password-file <file>', 'read the new password from the first line of a file')
    .option('--kdf-memory <MiB>', 'argon2id memory for the new key, in MiB')
    .option('--kdf-time <n>', 'argon2id passes for the new key');
}

function kdf(flags: NewKeyFlags): KdfParams {
  return {
    ...DEFAULT_KDF_PARAMS,
    ...(flags.kdfMemory ? { m: Number(flags.kdfMemory) * 1024 } : {}),
    ...(flags.kdfTime ? { t: Number(flags.kdfTime) } : {}),
  };
}

function report(g: GlobalOptions, action: string, name: string): void {
  const id = name.slice('keys/'.length);
  if (g.json) printJson({ message_type: 'key', action, id });
  else if (!g.quiet) printLine(`${action} key ${id.slice(0, 8)}`);
}

async function printKeys(g: GlobalOptions, repo: Repository): Promise<void> {
  const keys = await listKeys(repo.backend);
  const current = repo.keyName?.slice('keys/'.length);
  if (g.json) {
    printJson(keys.map((k) => ({ ...k, current: k.id === current })));
    return;
  }
  printLine(' ID        User       Host        Created               argon2id (t, MiB, p)');
  for (const k of keys) {
    const mark = k.id === current ? '*' : ' ';
    const params = `${k.params.t}, ${k.params.m / 1024}, ${k.params.p}`;
    printLine(
      `${mark}${k.id.slice(0, 8)}  ${k.username.padEnd(10)} ${k.hostname.padEnd(11)} ` +
        `${k.created.slice(0, 19).replace('T', ' ')}   ${params}`,
    );
  }
}
