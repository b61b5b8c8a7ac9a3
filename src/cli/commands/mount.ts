import type { Command } from 'commander';
import { CairnError } from '../../errors.js';
import { type GlobalOptions, whileNotInterrupted, withRepository } from '../context.js';
import { printJson, printLine, warn } from '../output.js';

/**
 * `cairn mount MOUNTPOINT`: runs in the foreground until SIGINT/SIGTERM (unmounts, exit
 * 130 as every interrupted command: a clean stop, SPEC §1) or until the filesystem is
 * unmounted from outside with `fusermount -u`/`umount` (exit 0).
 */
const HELP = `
Layout (read-only; <time> is the snapshot time in UTC, e.g. 2026-11-26T08:00:00Z):
  ids/<short-id>/                   snapshots/<time>_<short-id>/   snapshots/latest
  hosts/<host>/<time>_<short-id>/   tags/<tag>/<time>_<short-id>/
A file snapshot shows its files under their absolute paths; an image snapshot shows
<name>.img and, for a partitioned disk, <name>-part<N>.img (mount -o loop,ro works),
and beside them <name>.files/: the files inside (ext2/3/4, FAT, NTFS; part<N>/ per
partition), browsable without root.
Stop with Ctrl-C or SIGTERM (unmounts, exit 130) or fusermount -u (exit 0).`;

export function registerMount(program: Command): void {
  program
    .command('mount')
    .description('mount the repository as a read-only FUSE filesystem (runs in the foreground)')
    .argument('<mountpoint>', 'an existing empty directory')
    .addHelpText('after', HELP)
    .action(async (mountpoint: string, _flags: object, cmd: Command) => {
      const g = cmd.optsWithGlobals<GlobalOptions>();
      await withRepository(g, (repo) =>
        whileNotInterrupted(async (signal) => {
          // Loaded here: the FUSE binding alone is ~0.15 s of every other command's start.
          const { mountRepository } = await import('../../mount/index.js');
          const mount = await mountRepository(repo, mountpoint, { onNotice: warn });
          const dir = mount.mountpoint;
          if (g.json) printJson({ message_type: 'mounted', mountpoint: dir });
          else if (!g.quiet) {
            printLine(`Mounted the repository at ${dir}: snapshots in ${dir}/snapshots.`);
            printLine('Ctrl-C (or SIGTERM) unmounts it.');
          }
          const interrupted = new Promise<boolean>((done) => {
            if (signal.aborted) done(true);
            signal.addEventListener('abort', () => done(true), { once: true });
          });
          const stopped = await Promise.race([interrupted, mount.closed.then(() => false)]);
          await mount.unmount();
          if (stopped) throw new CairnError(`interrupted: unmounted ${dir}`, 'Interrupted');
        }),
      );
    });
}
