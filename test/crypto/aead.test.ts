import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { AesGcmSealer, ChecksumSealer, type Sealer } from '../../src/crypto/index.js';
import { CairnError } from '../../src/errors.js';

const sealers: [string, () => Sealer][] = [
  ['AesGcmSealer', () => new AesGcmSealer(Buffer.alloc(32, 7))],
  ['ChecksumSealer', () => new ChecksumSealer()],
];

function expectDamaged(fn: () => unknown, message: RegExp): void {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(CairnError);
  expect((caught as CairnError).code).toBe('Damaged');
  expect((caught as CairnError).message).toMatch(message);
}

describe.each(sealers)('%s', (_name, make) => {
  const sealer = make();

  it('round-trips arbitrary bytes and adds exactly `overhead` bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 4096 }), (plain) => {
        const sealed = sealer.seal(plain);
        expect(sealed.length).toBe(plain.length + sealer.overhead);
        expect(Buffer.compare(sealer.open(sealed, 'blob'), plain)).toBe(0);
      }),
    );
  });

  it('seals into a larger buffer at an offset, as seal does, touching nothing else', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 4096 }), fc.nat(100), (plain, at) => {
        const out = new Uint8Array(at + plain.length + sealer.overhead + 50).fill(0xa5);
        const n = sealer.sealInto(plain, out, at);
        expect(n).toBe(plain.length + sealer.overhead);
        expect(Buffer.compare(sealer.open(out.subarray(at, at + n), 'blob'), plain)).toBe(0);
        expect(out.subarray(0, at).every((b) => b === 0xa5)).toBe(true);
        expect(out.subarray(at + n).every((b) => b === 0xa5)).toBe(true);
      }),
    );
  });

  it('opens a sealed object that sits inside a larger buffer', () => {
    const sealed = sealer.seal(Buffer.from('inside a pack'));
    const pack = new Uint8Array(sealed.length + 20);
    pack.set(sealed, 10);
    const view = pack.subarray(10, 10 + sealed.length);
    expect(sealer.open(view, 'blob').toString()).toBe('inside a pack');
  });

  it('detects every single-bit flip of a small sealed message', () => {
    const sealed = sealer.seal(Buffer.from('cairn!'));
    for (let bit = 0; bit < sealed.length * 8; bit++) {
      const damaged = Buffer.from(sealed);
      damaged[bit >> 3]! ^= 1 << (bit & 7);
      expectDamaged(
        () => sealer.open(damaged, 'pack 3fa9'),
        /^pack 3fa9 is damaged: (authentication failed|checksum mismatch)$/,
      );
    }
  });

  it('detects truncation and appended bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 1, maxLength: 256 }), fc.nat(), (plain, n) => {
        const sealed = sealer.seal(plain);
        const cut = n % sealed.length;
        expectDamaged(() => sealer.open(sealed.subarray(0, cut), 'x'), /^x is damaged: /);
        const longer = Buffer.concat([sealed, Buffer.of(n & 0xff)]);
        expectDamaged(() => sealer.open(longer, 'x'), /^x is damaged: /);
      }),
    );
  });

  it('reports objects shorter than the overhead as too short', () => {
    expectDamaged(
      () => sealer.open(new Uint8Array(sealer.overhead - 1), 'index 12ab'),
      /too short/,
    );
  });
});

describe('AesGcmSealer', () => {
  it('uses a fresh nonce: the same plaintext never seals to the same bytes', () => {
    const sealer = new AesGcmSealer(Buffer.alloc(32, 1));
    const plain = Buffer.alloc(64);
    expect(sealer.seal(plain).equals(sealer.seal(plain))).toBe(false);
  });

  it('refuses to open with another key', () => {
    const sealed = new AesGcmSealer(Buffer.alloc(32, 1)).seal(Buffer.from('secret'));
    const other = new AesGcmSealer(Buffer.alloc(32, 2));
    expectDamaged(() => other.open(sealed, 'snapshot 01'), /authentication failed/);
  });

  it('rejects keys that are not 32 bytes', () => {
    expect(() => new AesGcmSealer(Buffer.alloc(16))).toThrow(/32 bytes/);
  });

  it('hides the plaintext', () => {
    const plain = Buffer.alloc(1024, 0x61);
    const sealed = new AesGcmSealer(Buffer.alloc(32, 3)).seal(plain);
    expect(sealed.includes(Buffer.alloc(16, 0x61))).toBe(false);
  });
});

describe('AesGcmSealer nonces', () => {
  it('never repeats a nonce, across refills of its pool of random bytes', () => {
    const sealer = new AesGcmSealer(Buffer.alloc(32, 9));
    const seen = new Set<string>();
    for (let i = 0; i < 2000; i++) {
      seen.add(sealer.seal(Buffer.from('same plaintext')).subarray(0, 12).toString('hex'));
    }
    expect(seen.size).toBe(2000);
  });
});
