import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  AesGcmSealer,
  ChecksumSealer,
  createKeyFile,
  generateMasterKey,
  openKeyFile,
  readKeyFileInfo,
} from '../../src/crypto/index.js';
import { CairnError } from '../../src/errors.js';
import { decodeTree, encodeTree, type TreeEntry } from '../../src/files/tree.js';
import {
  decodeManifest,
  decodeSegment as decodeManifestSegment,
  encodeManifest,
  encodeSegment as encodeManifestSegment,
} from '../../src/image/manifest.js';
import { decodeConfig, encodeConfig, type RepoConfig } from '../../src/repo/config.js';
import { decodeSegment, encodeSegment } from '../../src/repo/index-segment.js';
import { decodeToc, encodeToc } from '../../src/repo/pack.js';

/**
 * Every decoder of repository data, fed valid objects with random byte mutations (flips,
 * truncations, insertions) and random bytes: each must decode or throw CairnError — never
 * another exception, a hang or a huge allocation (bounded by the time each run takes).
 */
const mutation = fc.oneof(
  fc.record({
    kind: fc.constant('flip' as const),
    at: fc.nat(),
    bit: fc.integer({ min: 0, max: 7 }),
  }),
  fc.record({ kind: fc.constant('cut' as const), at: fc.nat() }),
  fc.record({
    kind: fc.constant('insert' as const),
    at: fc.nat(),
    bytes: fc.uint8Array({ maxLength: 16 }),
  }),
  fc.record({
    kind: fc.constant('set' as const),
    at: fc.nat(),
    value: fc.integer({ min: 0, max: 255 }),
  }),
);
type Mutation = typeof mutation extends fc.Arbitrary<infer M> ? M : never;

function mutate(valid: Buffer, ms: Mutation[]): Buffer {
  let b = Buffer.from(valid);
  for (const m of ms) {
    if (b.length === 0) break;
    const at = m.at % b.length;
    if (m.kind === 'flip') b[at]! ^= 1 << m.bit;
    else if (m.kind === 'set') b[at] = m.value;
    else if (m.kind === 'cut') b = b.subarray(0, at);
    else b = Buffer.concat([b.subarray(0, at), Buffer.from(m.bytes), b.subarray(at)]);
  }
  return b;
}

function onlyCairnErrors(decode: () => unknown): void {
  try {
    decode();
  } catch (err) {
    if (!(err instanceof CairnError)) throw err;
  }
}

function fuzz(valid: Buffer, decode: (b: Buffer) => unknown): void {
  fc.assert(
    fc.property(fc.array(mutation, { minLength: 1, maxLength: 4 }), (ms) => {
      onlyCairnErrors(() => decode(mutate(valid, ms)));
    }),
    { numRuns: 400 },
  );
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 512 }), (bytes) => {
      onlyCairnErrors(() => decode(Buffer.from(bytes)));
    }),
    { numRuns: 200 },
  );
}

const plain = new ChecksumSealer();
const sealed = new AesGcmSealer(Buffer.alloc(32, 3));
const id = (n: number) => Buffer.alloc(32, n);

function sampleEntry(name: string, type: TreeEntry['type']): TreeEntry {
  const base: TreeEntry = {
    name: Buffer.from(name),
    type,
    mode: 0o644,
    uid: 1000,
    gid: 1000,
    user: 'u',
    group: 'g',
    mtimeNs: 1_700_000_000_123_456_789n,
    ctimeNs: 1_700_000_000_123_456_789n,
    device: 2049,
    inode: 12,
    nlink: 1,
    size: 0,
    xattrs: [{ name: Buffer.from('user.k'), value: Buffer.from('v') }],
  };
  if (type === 'file')
    return {
      ...base,
      size: 300,
      content: [
        { id: id(1), length: 200 },
        { id: null, length: 100 },
      ],
    };
  if (type === 'dir') return { ...base, subtree: id(2) };
  if (type === 'symlink') return { ...base, target: Buffer.from('../x') };
  return { ...base, rdev: 259 };
}

describe('decoders under random mutation', () => {
  it('trees', () => {
    const tree = encodeTree({
      entries: [
        sampleEntry('a', 'file'),
        sampleEntry('b', 'dir'),
        sampleEntry('c', 'symlink'),
        sampleEntry('d', 'chardev'),
      ],
    });
    fuzz(tree, (b) => decodeTree(b));
  });

  it('pack tables of contents', () => {
    const toc = encodeToc([
      { id: id(1), type: 'data', flags: 1, offset: 0, length: 100, rawLength: 300 },
      { id: id(2), type: 'tree', flags: 0, offset: 100, length: 50, rawLength: 22 },
    ]);
    fuzz(toc, (b) => decodeToc(b, 'pack', 1 << 20));
  });

  it('index segments, sealed and unsealed', () => {
    const seg = {
      supersedes: [id(9)],
      entries: [
        {
          id: id(1),
          type: 'data' as const,
          flags: 1,
          pack: id(5),
          offset: 0,
          length: 10,
          rawLength: 20,
        },
      ],
    };
    fuzz(encodeSegment(seg, plain).bytes, (b) => decodeSegment(b, plain, 'index'));
    fuzz(encodeSegment(seg, sealed).bytes, (b) => decodeSegment(b, sealed, 'index'));
  });

  it('image manifests and manifest segments', () => {
    const entries = [
      { id: id(1), length: 4096 },
      { id: null, length: 1 << 20 },
      { id: id(2), length: 10 },
    ];
    const segBytes = encodeManifestSegment(entries);
    const ref = { id: id(7), start: 0, length: 4096 + (1 << 20) + 10, entries: 3 };
    fuzz(segBytes, (b) => decodeManifestSegment(b, ref, 'segment'));
    fuzz(encodeManifest(ref.length, [ref]), (b) => decodeManifest(b, 'manifest'));
  });

  it('config', () => {
    const config: RepoConfig = {
      version: 1,
      id: 'ab'.repeat(32),
      created: new Date(0).toISOString(),
      encryption: 'none',
      chunker: { min: 1024, avg: 4096, max: 16384 },
      chunkerSeed: 'cd'.repeat(32),
      compression: { algorithm: 'zstd', level: 2 },
      packSize: 1 << 24,
    };
    fuzz(encodeConfig(config, plain), (b) => decodeConfig(b, plain));
  });

  it('snapshot documents', async () => {
    const { mkdtemp, rm } = await import('node:fs/promises');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const { LocalBackend } = await import('../../src/repo/backend/local.js');
    const { loadSnapshot } = await import('../../src/repo/snapshot.js');
    const { plainIdHasher } = await import('../../src/crypto/index.js');
    const dir = await mkdtemp(join(tmpdir(), 'cairn-fuzz-'));
    const backend = new LocalBackend(dir);
    const hashId = plainIdHasher();
    const doc = {
      time: '2026-01-01T00:00:00Z',
      hostname: 'h',
      username: 'u',
      kind: 'files',
      paths: ['/a'],
      tags: ['t'],
      root: 'ab'.repeat(32),
      size: 1,
    };
    const valid = Buffer.from(JSON.stringify(doc));
    try {
      await fc.assert(
        fc.asyncProperty(fc.array(mutation, { minLength: 1, maxLength: 4 }), async (ms) => {
          // Sealed with a valid checksum and named by its hash: only the content is hostile.
          const json = mutate(valid, ms);
          const id = hashId(json).toString('hex');
          await backend.write(`snapshots/${id}`, plain.seal(json), { overwrite: true });
          await loadSnapshot(backend, plain, hashId, id).catch((err) => {
            if (!(err instanceof CairnError)) throw err;
          });
        }),
        { numRuns: 200 },
      );
      // Valid JSON that is not an object at all.
      for (const text of ['null', '42', '"x"', '[]']) {
        const json = Buffer.from(text);
        const id = hashId(json).toString('hex');
        await backend.write(`snapshots/${id}`, plain.seal(json), { overwrite: true });
        await expect(loadSnapshot(backend, plain, hashId, id)).rejects.toThrow(/damaged/);
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('key files (metadata parse; the KDF only runs on well-formed files)', async () => {
    const key = await createKeyFile('pw', generateMasterKey(), { t: 1, m: 64, p: 1 });
    fuzz(key, (b) => readKeyFileInfo(b));
    // A handful of full opens: a mutated file is refused or fails as a wrong password.
    for (let i = 0; i < 20; i++) {
      const bad = mutate(key, [{ kind: 'flip', at: (i * 37) % key.length, bit: i % 8 }]);
      await openKeyFile(bad, 'pw').catch((err) => expect(err).toBeInstanceOf(CairnError));
    }
  });
});
