import { open, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { type ImageBackupEvent, imageBackup, restoreImage } from '../../src/image/index.js';
import {
  expectTree,
  fillAndDelete,
  hasCommand,
  imageFixture,
  isRoot,
  sh,
  snapshotById,
  type Tree,
  withMount,
} from './util.js';

const fixture = imageFixture();

async function sparseFile(name: string, mib: number): Promise<string> {
  const path = join(fixture.dir, name);
  const fh = await open(path, 'w');
  await fh.truncate(mib << 20);
  await fh.close();
  return path;
}

/** Images `path` with --used-only and restores it (verified). */
async function imageUsedOnly(path: string) {
  const events: ImageBackupEvent[] = [];
  const used = await imageBackup(fixture.repo, path, {
    name: `used-${path}`,
    usedOnly: true,
    onEvent: (e) => events.push(e),
  });
  const restored = `${path}.restored`;
  await restoreImage(fixture.repo, await snapshotById(fixture.repo, used.snapshotId), restored, {
    verify: true,
  });
  const volumes = events.filter((e) => e.type === 'volume');
  return { used, restored, volumes };
}

/** 10 MiB of deleted random data must not be read or stored; 6 MiB of live files are. */
function expectUsedOnlySavings(
  used: { size: number; bytesRead: number; dataAdded: number; zeroBytes: number },
  size: number,
) {
  expect(used.size).toBe(size);
  expect(used.bytesRead).toBeLessThan(size / 2);
  expect(used.zeroBytes).toBeGreaterThan(size / 2);
  expect(used.dataAdded).toBeLessThan(9 << 20);
}

describe.skipIf(!isRoot)('--used-only (needs root for loop mounts)', () => {
  it.each([
    ['ext4', 'mkfs.ext4', []],
    ['ext2 with 1 KiB blocks', 'mkfs.ext2', ['-b', '1024']],
    ['ext4 with meta_bg', 'mkfs.ext4', ['-O', 'meta_bg,^resize_inode']],
  ])(
    '%s: skips free blocks; the restored image checks clean and has the files',
    async (_label, mkfs, args) => {
      const size = 32 << 20;
      const path = await sparseFile(`ext-${mkfs}-${args.length}.img`, 32);
      sh(mkfs, ['-q', '-F', ...args, path]);
      const tree = await withMount(path, {}, (dir) => fillAndDelete(dir));
      const { used, restored, volumes } = await imageUsedOnly(path);
      expect(volumes).toEqual([expect.objectContaining({ fs: 'ext', partition: undefined })]);
      expectUsedOnlySavings(used, size);
      sh('e2fsck', ['-fn', restored]);
      await withMount(restored, { readOnly: true }, (dir) => expectTree(dir, tree));
    },
  );

  it('ext4 inside a GPT partition of a whole-disk image', async () => {
    if (!hasCommand('sfdisk')) return expect.fail('sfdisk (package fdisk) is needed');
    const path = await sparseFile('disk.img', 64);
    sh('sfdisk', ['-q', path], 'label: gpt\nstart=2048, size=98304, name="data"\n');
    const offset = 2048 * 512;
    const loop = sh('losetup', [
      '-f',
      '--show',
      '-o',
      `${offset}`,
      '--sizelimit',
      `${48 << 20}`,
      path,
    ]).trim();
    let tree: Tree;
    try {
      sh('mkfs.ext4', ['-q', loop]);
      tree = await withMount(loop, {}, (dir) => fillAndDelete(dir));
    } finally {
      sh('losetup', ['-d', loop]);
    }
    const { used, restored, volumes } = await imageUsedOnly(path);
    expect(volumes).toEqual([expect.objectContaining({ fs: 'ext', partition: 1 })]);
    expectUsedOnlySavings(used, 64 << 20);
    const restoredHead = (await readFile(restored)).subarray(0, offset);
    expect(restoredHead.equals((await readFile(path)).subarray(0, offset))).toBe(true);
    await withMount(restored, { readOnly: true, offset }, (dir) => expectTree(dir, tree));
  });

  it('stores an ext filesystem whose journal needs recovery in full', async () => {
    const path = await sparseFile('dirty.img', 16);
    sh('mkfs.ext4', ['-q', '-F', path]);
    sh('debugfs', ['-w', '-R', 'feature needs_recovery', path]);
    const events: ImageBackupEvent[] = [];
    const s = await imageBackup(fixture.repo, path, {
      usedOnly: true,
      onEvent: (e) => events.push(e),
    });
    expect(s.bytesRead).toBe(16 << 20);
    expect(events.find((e) => e.type === 'volume')).toMatchObject({ note: /needs recovery/ });
  });

  it('stores a mounted ext2 filesystem in full: its bitmaps may be stale', async () => {
    const path = await sparseFile('mounted.img', 8);
    sh('mkfs.ext2', ['-q', '-F', path]);
    const events: ImageBackupEvent[] = [];
    const s = await withMount(path, {}, () =>
      imageBackup(fixture.repo, path, { usedOnly: true, onEvent: (e) => events.push(e) }),
    );
    expect(s.bytesRead).toBe(8 << 20);
    expect(events.find((e) => e.type === 'volume')).toMatchObject({ note: /not clean/ });
  });

  it.skipIf(!hasCommand('mcopy') || !hasCommand('mkfs.vfat'))(
    'FAT12, FAT16 and FAT32 (mtools): skips free clusters',
    async () => {
      for (const [bits, mib] of [
        [12, 16],
        [16, 24],
        [32, 36],
      ] as const) {
        const path = await sparseFile(`fat${bits}.img`, mib);
        sh('mkfs.vfat', ['-F', `${bits}`, ...(bits === 12 ? ['-s', '16'] : []), path]);
        const src = join(fixture.dir, `fat${bits}-files`);
        const tree = await fillAndDeleteWithMtools(path, src);
        const { used, restored, volumes } = await imageUsedOnly(path);
        expect(volumes).toEqual([expect.objectContaining({ fs: `fat${bits}` })]);
        expectUsedOnlySavings(used, mib << 20);
        sh('fsck.vfat', ['-n', restored]);
        for (const [rel, data] of tree) {
          const out = join(fixture.dir, 'out.bin');
          sh('mcopy', ['-o', '-n', '-i', restored, `::/${rel}`, out]);
          expect((await readFile(out)).equals(data), rel).toBe(true);
        }
      }
    },
  );

  it.skipIf(!hasCommand('mkntfs') || !hasCommand('ntfs-3g'))(
    'NTFS (ntfs-3g): skips clusters free in $Bitmap',
    async () => {
      const path = await sparseFile('ntfs.img', 32);
      sh('mkntfs', ['-q', '-F', '-Q', path]);
      const tree = await withMount(path, { type: 'ntfs-3g' }, (dir) => fillAndDelete(dir));
      const { used, restored, volumes } = await imageUsedOnly(path);
      expect(volumes).toEqual([expect.objectContaining({ fs: 'ntfs' })]);
      expectUsedOnlySavings(used, 32 << 20);
      sh('ntfsfix', ['-n', restored]);
      await withMount(restored, { readOnly: true, type: 'ntfs-3g' }, (dir) =>
        expectTree(dir, tree),
      );
    },
  );
});

/** fillAndDelete on a FAT image through mtools (no kernel vfat needed). */
async function fillAndDeleteWithMtools(image: string, staging: string): Promise<Tree> {
  const tree = await fillAndDelete(staging);
  const { randomBytes } = await import('node:crypto');
  const { writeFile } = await import('node:fs/promises');
  await writeFile(join(staging, 'deleted.bin'), randomBytes(10 << 20));
  sh('mmd', ['-i', image, '::/sub', '::/sub/deeper']);
  for (const rel of [...tree.keys(), 'deleted.bin']) {
    sh('mcopy', ['-i', image, join(staging, rel), `::/${rel}`]);
  }
  sh('mdel', ['-i', image, '::/deleted.bin']);
  return tree;
}
