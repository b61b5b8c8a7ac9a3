import type { Command } from 'commander';
import type { ChunkerParams } from '../../chunker/index.js';
import { DEFAULT_CHUNKER_PARAMS } from '../../chunker/index.js';
import { DEFAULT_KDF_PARAMS } from '../../crypto/index.js';
import { CairnError } from '../../errors.js';
import { Repository } from '../../repo/repository.js';
import { cacheDir, type GlobalOptions, openBackend, repoLocation } from '../context.js';
import { parseSize, printJson, printLine } from '../output.js';
import { readPassword } from '../password.js';

interface InitFlags {
  encryption: boolean;
  chunkMin?: string;
  chunkAvg?: string;
  chunkMax?: string;
  kdfMemory?: string;
  kdfTime?: string;
}

export function registerInit(program: Command): void {
  program
    .command('init')
    .description('create a repository')
    .option('--no-encryption', 'store data unencrypted (still checksummed)')
    .option('--chunk-min <size>', 'smallest chunk (bytes, or with K/M suffix)')
    .option('--chunk-avg <size>', 'average chunk size, a power of two')
    .option('--chunk-max <size>', 'largest chunk')
    .option('--kdf-memory <MiB>', 'argon2id memory for the key, in MiB')
    .option('--kdf-time <n>', 'argon2id passes for the key')
    .action(async (flags: InitFlags, cmd: Command) => {
      const g = cmd.optsWithGlobals<GlobalOptions>();
      const location = repoLocation(g);
      const chunker: ChunkerParams = {
        min: flags.chunkMin ? parseSize(flags.chunkMin) : DEFAULT_CHUNKER_PARAMS.min,
        avg: flags.chunkAvg ? parseSize(flags.chunkAvg) : DEFAULT_CHUNKER_PARAMS.avg,
        max: flags.chunkMax ? parseSize(flags.chunkMax) : DEFAULT_CHUNKER_PARAMS.max,
      };
      const kdf = {
        ...DEFAULT_KDF_PARAMS,
        ...(flags.kdfMemory ? { m: Number(flags.kdfMemory) * 1024 } : {}),
        ...(flags.kdfTime ? { t: Number(flags.kdfTime) } : {}),
      };
      const backend = openBackend(location, g);
      if (await backend.stat('config')) {
        await backend.close();
        throw new CairnError(`a repository already exists at ${location}`, 'RepoExists');
      }
      const password = flags.encryption ? await readPassword(g, true) : undefined;
      const repo = await Repository.init(backend, {
        encryption: flags.encryption,
        password,
        chunker,
        kdf,
        cacheDir: cacheDir(g),
      });
      await repo.close();
      if (g.json) {
        printJson({ message_type: 'initialized', id: repo.config.id, repository: location });
      } else if (!g.quiet) {
        printLine(`created cairn repository ${repo.config.id.slice(0, 10)} at ${location}`);
        if (flags.encryption) {
          printLine('Losing the password means the data in the repository cannot be read.');
        }
      }
    });
}
