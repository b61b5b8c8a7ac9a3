import { open } from 'node:fs/promises';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ByteRanges, planReads } from '../../src/image/ranges.js';
import { probeExt } from '../../src/image/used-blocks/ext.js';
import { type TempDir, tempDir } from '../helpers.js';
import { hasCommand, sh } from './util.js';

/** Sorted, disjoint free ranges inside [0, size). */
const layoutArb = fc
  .tuple(
    fc.integer({ min: 1, max: 5000 }),
    fc.array(fc.integer({ min: 1, max: 400 }), { maxLength: 40 }),
  )
  .map(([size, cuts]) => {
    const free = new ByteRanges();
    let pos = 0;
    for (const [i, c] of cuts.entries()) {
      const end = Math.min(pos + c, size);
      if (i % 2 === 1) free.add(pos, end);
      pos = end;
    }
    return { size, free };
  });

describe('planReads', () => {
  it('covers the image in order, skips long free runs, zeroes short ones', () => {
    fc.assert(
      fc.property(
        layoutArb,
        fc.integer({ min: 1, max: 300 }),
        fc.integer({ min: 1, max: 200 }),
        (l, maxRead, minSkip) => {
          const freeMap = new Uint8Array(l.size);
          for (let i = 0; i < l.free.count; i++)
            freeMap.fill(1, l.free.starts[i]!, l.free.ends[i]!);
          // What the plan makes of each byte: 1 = zero (skipped or zeroed), 0 = read as is.
          const planned = new Uint8Array(l.size);
          let pos = 0;
          // Plain checks per step: an expect() per step made this test take seconds.
          const bad: string[] = [];
          for (const step of planReads(l.size, l.free, maxRead, minSkip)) {
            if (step.offset !== pos || step.length <= 0) bad.push(`bad step at ${step.offset}`);
            if (step.kind === 'zeros') {
              if (step.length < Math.min(minSkip, l.size - pos)) bad.push(`short skip at ${pos}`);
              planned.fill(1, pos, pos + step.length);
            } else {
              if (step.length > maxRead) bad.push(`long read at ${pos}`);
              for (const [s, e] of step.zero) planned.fill(1, pos + s, pos + e);
            }
            pos += step.length;
          }
          expect(bad).toEqual([]);
          expect(Buffer.from(planned).equals(Buffer.from(freeMap))).toBe(true);
          expect(pos).toBe(l.size);
        },
      ),
      { numRuns: 300 },
    );
  });
});

let d: TempDir;
beforeAll(async () => {
  d = await tempDir();
});
afterAll(() => d.cleanup());

/** Free block ranges as dumpe2fs (libext2fs) reports them, in bytes. */
function dumpe2fsFree(path: string, blockSize: number): [number, number][] {
  const out: [number, number][] = [];
  for (const m of sh('dumpe2fs', [path]).matchAll(/^ {2}Free blocks: (.*)$/gm)) {
    for (const r of m[1]!.split(', ').filter(Boolean)) {
      const [a, b = a] = r.split('-').map(Number);
      const last = out.at(-1);
      if (last && last[1] === a! * blockSize) last[1] = (b! + 1) * blockSize;
      else out.push([a! * blockSize, (b! + 1) * blockSize]);
    }
  }
  return out;
}

describe.skipIf(!hasCommand('mkfs.ext4') || !hasCommand('dumpe2fs'))('ext block usage', () => {
  it.each([
    ['ext4, 4 KiB blocks, flex_bg and uninit groups', 'mkfs.ext4', [], 1200],
    ['ext4, 1 KiB blocks, many groups', 'mkfs.ext4', ['-b', '1024'], 300],
    ['ext4 without flex_bg', 'mkfs.ext4', ['-O', '^flex_bg'], 600],
    ['ext4 with meta_bg', 'mkfs.ext4', ['-O', 'meta_bg,^resize_inode'], 600],
    ['ext4 with sparse_super2', 'mkfs.ext4', ['-O', 'sparse_super2'], 600],
    ['ext3', 'mkfs.ext3', [], 300],
    ['ext2 without sparse_super', 'mkfs.ext2', ['-O', '^sparse_super,^resize_inode'], 200],
  ] as const)('%s: free ranges equal what dumpe2fs reports', async (label, mkfs, args, mib) => {
    const path = join(d.path, `${label.replace(/\W+/g, '-')}.img`);
    const fh = await open(path, 'w+');
    await fh.truncate(mib << 20);
    sh(mkfs, ['-q', '-F', ...args, path]);
    const blockSize = Number(/^Block size:\s+(\d+)$/m.exec(sh('dumpe2fs', ['-h', path]))![1]);
    const readAt = async (o: number, l: number) => {
      const buf = Buffer.alloc(l);
      const { bytesRead } = await fh.read(buf, 0, l, o);
      return buf.subarray(0, bytesRead);
    };
    try {
      const found = await probeExt(readAt, 0, mib << 20);
      expect(found && 'free' in found).toBe(true);
      const free = (found as { free: ByteRanges }).free;
      const ours = free.starts.map((s, i) => [s, free.ends[i]!]);
      expect(ours).toEqual(dumpe2fsFree(path, blockSize));
    } finally {
      await fh.close();
    }
  });
});
