import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  describeImage,
  imageBackup,
  type Partition,
  readPartitionTable,
} from '../../src/image/index.js';
import { hasCommand, imageFixture, isRoot, sh, snapshotById } from './util.js';

const hasSfdisk = hasCommand('sfdisk');
const hasMkfsFat = hasCommand('mkfs.vfat');

const fixture = imageFixture();

/** A sparse disk image of `mib` MiB partitioned by sfdisk from `script`. */
async function disk(name: string, mib: number, script: string): Promise<string> {
  const path = join(fixture.dir, name);
  const fh = await open(path, 'w');
  await fh.truncate(mib << 20);
  await fh.close();
  sh('sfdisk', ['-q', path], script);
  return path;
}

/** What sfdisk itself reads back, in our form. */
function sfdiskPartitions(path: string): Partition[] {
  const json = JSON.parse(sh('sfdisk', ['--json', path])) as {
    partitiontable: {
      label: string;
      partitions: { node: string; start: number; size: number; type: string; name?: string }[];
    };
  };
  const gpt = json.partitiontable.label === 'gpt';
  return json.partitiontable.partitions.map((p) => ({
    number: Number(/(\d+)$/.exec(p.node)![1]),
    type: gpt ? p.type.toLowerCase() : `0x${p.type.padStart(2, '0')}`,
    start: p.start * 512,
    size: p.size * 512,
    ...(p.name ? { label: p.name } : {}),
  }));
}

const readAtOf = (buf: Buffer) => async (o: number, l: number) => buf.subarray(o, o + l);

describe.skipIf(!hasSfdisk)('partition tables (sfdisk from util-linux/fdisk)', () => {
  it('recognises MBR primaries, an extended partition and its logicals', async () => {
    const path = await disk(
      'mbr.img',
      64,
      'label: dos\nstart=2048, size=20480, type=83\nstart=22528, size=10240, type=c\n' +
        'start=40960, type=5\nstart=43008, size=8192, type=83\nstart=53248, size=4096, type=82\n',
    );
    const s = await imageBackup(fixture.repo, path);
    const snap = await snapshotById(fixture.repo, s.snapshotId);
    expect(snap.extra?.partition_table).toBe('mbr');
    expect(snap.extra?.partitions).toEqual(sfdiskPartitions(path));
    expect((snap.extra!.partitions as Partition[]).map((p) => p.number)).toEqual([1, 2, 3, 5, 6]);
    const desc = await describeImage(fixture.repo, snap);
    expect(desc).toMatchObject({ name: 'mbr.img', size: 64 << 20, partitionTable: 'mbr' });
    expect(desc.partitions).toHaveLength(5);
  });

  it('recognises GPT behind a protective MBR, with types and labels', async () => {
    const path = await disk(
      'gpt.img',
      64,
      'label: gpt\n' +
        'start=2048, size=20480, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="root fs"\n' +
        'start=30720, size=10240, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="EFI"\n',
    );
    const s = await imageBackup(fixture.repo, path);
    const snap = await snapshotById(fixture.repo, s.snapshotId);
    expect(snap.extra?.partition_table).toBe('gpt');
    expect(snap.extra?.partitions).toEqual(sfdiskPartitions(path));
    expect((snap.extra!.partitions as Partition[])[0]).toMatchObject({
      type: '0fc63daf-8483-4772-8e79-3d69d8477de4',
      label: 'root fs',
    });
  });

  it.skipIf(!isRoot)('reads a GPT written with 4 KiB sectors (root: losetup -b 4096)', async () => {
    const path = join(fixture.dir, 'gpt4k.img');
    const fh = await open(path, 'w');
    await fh.truncate(64 << 20);
    await fh.close();
    const loop = sh('losetup', ['-f', '--show', '-b', '4096', path]).trim();
    try {
      // sfdisk re-reads the table of a loop device and complains; the table is written.
      spawnSync('sfdisk', ['-q', loop], { input: 'label: gpt\nstart=256, size=2560, name="4k"\n' });
    } finally {
      sh('losetup', ['-d', loop]);
    }
    const s = await imageBackup(fixture.repo, path);
    const snap = await snapshotById(fixture.repo, s.snapshotId);
    expect(snap.extra?.partitions).toEqual([
      expect.objectContaining({ number: 1, start: 256 * 4096, size: 2560 * 4096, label: '4k' }),
    ]);
  });

  it('ignores a GPT whose checksum is wrong', async () => {
    const path = await disk('bad-gpt.img', 8, 'label: gpt\nstart=2048, size=4096\n');
    const fh = await open(path, 'r+');
    await fh.write(Buffer.from([0x42]), 0, 1, 512 + 40);
    await fh.close();
    const head = Buffer.alloc(64 << 10);
    const r = await open(path, 'r');
    await r.read(head, 0, head.length, 0);
    await r.close();
    expect(await readPartitionTable(readAtOf(head), 8 << 20)).toBeUndefined();
  });
});

describe('not partition tables', () => {
  it('random bytes ending in 55 AA, or partitions outside the disk', async () => {
    const sector = randomBytes(512);
    sector[510] = 0x55;
    sector[511] = 0xaa;
    sector.fill(0, 446, 510);
    sector.writeUInt8(0x83, 446 + 4);
    sector.writeUInt32LE(2048, 446 + 8);
    sector.writeUInt32LE(1 << 20, 446 + 12);
    expect(await readPartitionTable(readAtOf(sector), 1 << 20)).toBeUndefined();
    sector[446] = 0x13; // invalid status byte
    expect(await readPartitionTable(readAtOf(sector), undefined)).toBeUndefined();
  });

  it.skipIf(!hasMkfsFat)('a FAT volume boot sector is not an MBR', async () => {
    const path = join(fixture.dir, 'fat.img');
    sh('mkfs.vfat', ['-C', path, '8192']);
    const s = await imageBackup(fixture.repo, path);
    const snap = await snapshotById(fixture.repo, s.snapshotId);
    expect(snap.extra?.partitions).toBeUndefined();
  });
});
