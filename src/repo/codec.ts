import { CairnError } from '../errors.js';

/**
 * Little-endian fixed-width writer/reader shared by every binary codec (pack TOCs, index
 * segments, manifests). Readers check bounds on every field: a hostile or truncated object
 * must fail with a clear error, never read past its end.
 */
export class ByteWriter {
  private buf: Buffer;
  private pos = 0;

  constructor(initialSize = 256) {
    this.buf = Buffer.allocUnsafe(initialSize);
  }

  private ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + n));
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }

  u8(v: number): this {
    this.ensure(1);
    this.buf[this.pos++] = v;
    return this;
  }

  u32(v: number): this {
    this.ensure(4);
    this.buf.writeUInt32LE(v, this.pos);
    this.pos += 4;
    return this;
  }

  u64(v: number): this {
    this.ensure(8);
    this.buf.writeBigUInt64LE(BigInt(v), this.pos);
    this.pos += 8;
    return this;
  }

  /** Unsigned LEB128; safe up to 2^53. */
  varint(v: number): this {
    if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`varint out of range: ${v}`);
    this.ensure(8);
    while (v >= 0x80) {
      this.buf[this.pos++] = (v % 0x80) | 0x80;
      v = Math.floor(v / 0x80);
    }
    this.buf[this.pos++] = v;
    return this;
  }

  /** Signed 64-bit little-endian (times in nanoseconds may precede 1970). */
  i64(v: bigint): this {
    this.ensure(8);
    this.buf.writeBigInt64LE(v, this.pos);
    this.pos += 8;
    return this;
  }

  /** Length-prefixed bytes. */
  lbytes(b: Uint8Array): this {
    return this.varint(b.length).bytes(b);
  }

  bytes(b: Uint8Array): this {
    this.ensure(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
    return this;
  }

  finish(): Buffer {
    return this.buf.subarray(0, this.pos);
  }
}

export class ByteReader {
  private pos = 0;

  constructor(
    private readonly buf: Buffer,
    private readonly what: string,
  ) {}

  get remaining(): number {
    return this.buf.length - this.pos;
  }

  private need(n: number): void {
    if (this.pos + n > this.buf.length) {
      throw new CairnError(`${this.what} is damaged: truncated at byte ${this.pos}`, 'Damaged');
    }
  }

  u8(): number {
    this.need(1);
    return this.buf[this.pos++]!;
  }

  u32(): number {
    this.need(4);
    const v = this.buf.readUInt32LE(this.pos);
    this.pos += 4;
    return v;
  }

  u64(): number {
    this.need(8);
    const v = this.buf.readBigUInt64LE(this.pos);
    this.pos += 8;
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new CairnError(`${this.what} is damaged: value out of range`, 'Damaged');
    }
    return Number(v);
  }

  varint(): number {
    let v = 0;
    let scale = 1;
    for (let i = 0; i < 8; i++) {
      const b = this.u8();
      v += (b & 0x7f) * scale;
      if (b < 0x80) return v;
      scale *= 0x80;
    }
    throw new CairnError(`${this.what} is damaged: varint too long`, 'Damaged');
  }

  i64(): bigint {
    this.need(8);
    const v = this.buf.readBigInt64LE(this.pos);
    this.pos += 8;
    return v;
  }

  /** Length-prefixed bytes, refusing lengths beyond what is left. */
  lbytes(): Buffer {
    return this.bytes(this.varint());
  }

  bytes(n: number): Buffer {
    this.need(n);
    const b = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }

  magic(expected: string): void {
    const got = this.bytes(expected.length).toString('latin1');
    if (got !== expected) {
      throw new CairnError(`${this.what} is damaged: bad magic`, 'Damaged');
    }
  }

  /** Asserts the object has been consumed exactly. */
  end(): void {
    if (this.remaining !== 0) {
      throw new CairnError(`${this.what} is damaged: ${this.remaining} trailing bytes`, 'Damaged');
    }
  }
}
