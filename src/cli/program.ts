import { Command, Option } from 'commander';
import { registerBackup } from './commands/backup.js';
import { registerCat } from './commands/cat.js';
import { registerCheck } from './commands/check.js';
import { registerCopy } from './commands/copy.js';
import { registerDiff } from './commands/diff.js';
import { registerForget } from './commands/forget.js';
import { registerImage } from './commands/image.js';
import { registerInit } from './commands/init.js';
import { registerKey } from './commands/key.js';
import { registerLs } from './commands/ls.js';
import { registerMount } from './commands/mount.js';
import { registerPrune } from './commands/prune.js';
import { registerRepair } from './commands/repair.js';
import { registerRestore } from './commands/restore.js';
import { registerSnapshots } from './commands/snapshots.js';
import { registerStats } from './commands/stats.js';

export function buildProgram(version: string): Command {
  const program = new Command('cairn')
    .description('deduplicating backups of file trees and disk images')
    .version(version)
    .addOption(new Option('-r, --repo <path-or-url>', 'repository location (env CAIRN_REPO)'))
    .option('--password-file <file>', 'read the password from the first line of a file')
    .option('--json', 'machine-readable output on stdout')
    .option('-q, --quiet', 'only errors and results')
    .option('--no-progress', 'no progress display')
    .option('--cache-dir <dir>', 'where local caches live (env CAIRN_CACHE_DIR)')
    .option('--lock-wait <duration>', 'wait this long for a locked repository (e.g. 30s, 5m)')
    .option('--s3-endpoint <url>', 'S3 endpoint (default: AWS_ENDPOINT_URL_S3, profile, AWS)')
    .option('--s3-path-style', 'address S3 buckets by path (implied for IP and bare hosts)')
    .showHelpAfterError()
    .exitOverride();
  registerInit(program);
  registerBackup(program);
  registerImage(program);
  registerStats(program);
  registerKey(program);
  registerSnapshots(program);
  registerLs(program);
  registerCat(program);
  registerRestore(program);
  registerForget(program);
  registerPrune(program);
  registerCheck(program);
  registerRepair(program);
  registerMount(program);
  registerDiff(program);
  registerCopy(program);
  for (const cmd of program.commands) cmd.showHelpAfterError().exitOverride();
  return program;
}
