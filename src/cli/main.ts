#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { CommanderError } from 'commander';
import { CairnError, exitCodeOf } from '../errors.js';
import { buildProgram } from './program.js';

const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as {
  version: string;
};

async function main(argv: string[]): Promise<number> {
  const program = buildProgram(pkg.version);
  try {
    await program.parseAsync(argv);
    return process.exitCode === undefined ? 0 : Number(process.exitCode);
  } catch (err) {
    if (err instanceof CommanderError) {
      // Help and --version exit 0; any usage error exits 1 (the usage text is already printed).
      return err.exitCode === 0 ? 0 : 1;
    }
    process.stderr.write(`cairn: ${describe(err)}\n`);
    return exitCodeOf(err);
  }
}

function describe(err: unknown): string {
  if (err instanceof CairnError) return err.message;
  const e = err as NodeJS.ErrnoException;
  if (e?.code && e.path) return `${e.code}: ${e.path}`;
  return e?.message ?? String(err);
}

// `cairn ls … | head`: a closed stdout ends the command quietly, as with other Unix tools.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  throw err;
});

process.exitCode = await main(process.argv);
