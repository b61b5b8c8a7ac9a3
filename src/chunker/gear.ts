import { createHmac } from 'node:crypto';
import { CairnError } from '../errors.js';

/** Length of the per-repository secret the gear table is derived from. */
export const GEAR_SEED_BYTES = 32;

const TABLE_LABEL = 'cairn gear table v1';

/**
 * The 256 gear words, derived from the repository's secret seed with HMAC-SHA-256 in counter
 * mode. Keying the table keeps chunk boundaries (and so chunk sizes) unpredictable to anyone
 * without the seed; the label pins the derivation so a future table format cannot collide.
 * Words are read little-endian so every platform derives the same table.
 */
export function gearTable(seed: Uint8Array): Uint32Array {
  if (seed.length !== GEAR_SEED_BYTES) {
    throw new CairnError(`gear seed must be ${GEAR_SEED_BYTES} bytes, got ${seed.length}`, 'Usage');
  }
  const bytes = new Uint8Array(256 * 4);
  const counter = Buffer.alloc(4);
  for (let block = 0; block < bytes.length / 32; block++) {
    counter.writeUInt32LE(block, 0);
    const mac = createHmac('sha256', seed).update(TABLE_LABEL).update(counter).digest();
    bytes.set(mac, block * 32);
  }
  const view = new DataView(bytes.buffer);
  const table = new Uint32Array(256);
  for (let i = 0; i < 256; i++) table[i] = view.getUint32(i * 4, true);
  return table;
}

/*
 * The gear hash runs in a small hand-assembled WebAssembly function because it is clearly
 * faster than the best JavaScript we found. Measured on this machine (2-vCPU AMD EPYC VM,
 * Node 20), every byte of 64 MiB of PRNG data hashed, MB/s = 10^6 B/s of wall time, median
 * of 9 runs after 3 warm-up runs, ranges over separate processes, other vCPU idle:
 *   JS, 1 byte/iteration, Int32Array table, locals    285–710 (JIT-dependent run to run)
 *   JS, FastCDC 2020 two bytes/iteration               345–825 (plain and unrolled)
 *   JS, unrolled x4                                     470–990
 *   JS, unrolled x4 over Int32 word loads               730–1160
 *   WASM, x4 over word loads, 64 KiB windows (this)    1730–1920 (including the copy in)
 * WASM unrolled x8 or x16 measured the same; computing a word's 4 hashes from one shared h
 * (shorter dependency chain, more instructions) was slower (930–1620); 1 MiB windows were
 * ~5% slower than 64 KiB ones, which stay in L2. When the other vCPU (an SMT sibling) is
 * busy, everything drops ~40%: WASM 1000–1170, JS word loads 670–1090.
 */

const TABLE_OFFSET = 0;
const WINDOW_OFFSET = 1024;
const WINDOW_BYTES = 64 * 1024;

// Opcodes used below (WebAssembly core spec, section 5.4).
const op = {
  block: 0x02,
  loop: 0x03,
  if: 0x04,
  end: 0x0b,
  br: 0x0c,
  brIf: 0x0d,
  ret: 0x0f,
  localGet: 0x20,
  localSet: 0x21,
  localTee: 0x22,
  globalSet: 0x24,
  i32Load: 0x28,
  i32Load8u: 0x2d,
  i32Const: 0x41,
  i32Eqz: 0x45,
  i32GtU: 0x4b,
  i32GeU: 0x4f,
  i32Add: 0x6a,
  i32And: 0x71,
  i32Shl: 0x74,
  i32ShrU: 0x76,
  void: 0x40,
  i32: 0x7f,
} as const;

function uleb(n: number): number[] {
  const out: number[] = [];
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n !== 0) b |= 0x80;
    out.push(b);
  } while (n !== 0);
  return out;
}

function sleb(n: number): number[] {
  const out: number[] = [];
  for (;;) {
    const b = n & 0x7f;
    n >>= 7;
    if ((n === 0 && (b & 0x40) === 0) || (n === -1 && (b & 0x40) !== 0)) {
      out.push(b);
      return out;
    }
    out.push(b | 0x80);
  }
}

const vec = (items: number[][]): number[] => [...uleb(items.length), ...items.flat()];
const section = (id: number, body: number[]): number[] => [id, ...uleb(body.length), ...body];
const name = (s: string): number[] => vec([...Buffer.from(s)].map((b) => [b]));

/**
 * `scan(i, end, h, mask) -> i32`: hashes bytes [i, end) of memory, returning the offset just
 * past the first byte after which `(h & mask) == 0`, or -1 with the running hash left in the
 * exported global `h`. The table lives at offset 0, so a byte's entry is at `byte << 2`.
 */
function scanModuleBytes(): Uint8Array {
  const [I, END, H, MASK, W] = [0, 1, 2, 3, 4];
  const get = (x: number) => [op.localGet, x];
  const set = (x: number) => [op.localSet, x];
  const k = (v: number) => [op.i32Const, ...sleb(v)];
  // h = (h << 1) + table[idx]; if ((h & mask) == 0) return i + advance;
  // biome-ignore format: one WebAssembly instruction group per line reads like assembly
  const step = (tableIndex: number[], advance: number) => [
    ...get(H), ...k(1), op.i32Shl, ...tableIndex, op.i32Load, 2, TABLE_OFFSET, op.i32Add,
    op.localTee, H, ...get(MASK), op.i32And, op.i32Eqz,
    op.if, op.void, ...get(I), ...k(advance), op.i32Add, op.ret, op.end,
  ];
  // Byte b of the little-endian word w, pre-multiplied by 4: (w >>> (8b - 2)) & 1020.
  const wordByte = (b: number) =>
    b === 0
      ? [...get(W), ...k(2), op.i32Shl, ...k(1020), op.i32And]
      : [...get(W), ...k(8 * b - 2), op.i32ShrU, ...k(1020), op.i32And];
  // biome-ignore format: one WebAssembly instruction group per line reads like assembly
  const body = [
    op.block, op.void, op.loop, op.void,
    ...get(I), ...k(4), op.i32Add, ...get(END), op.i32GtU, op.brIf, 1,
    ...get(I), op.i32Load, 0, 0, ...set(W),
    ...step(wordByte(0), 1), ...step(wordByte(1), 2),
    ...step(wordByte(2), 3), ...step(wordByte(3), 4),
    ...get(I), ...k(4), op.i32Add, ...set(I), op.br, 0,
    op.end, op.end,
    op.block, op.void, op.loop, op.void,
    ...get(I), ...get(END), op.i32GeU, op.brIf, 1,
    ...step([...get(I), op.i32Load8u, 0, 0, ...k(2), op.i32Shl], 1),
    ...get(I), ...k(1), op.i32Add, ...set(I), op.br, 0,
    op.end, op.end,
    ...get(H), op.globalSet, 0, ...k(-1), op.end,
  ];
  const code = [...vec([[1, op.i32]]), ...body];
  const i32x4 = vec([[op.i32], [op.i32], [op.i32], [op.i32]]);
  // biome-ignore format: one module section per line
  return new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, vec([[0x60, ...i32x4, ...vec([[op.i32]])]])),
    ...section(3, vec([[0]])),
    ...section(5, vec([[0x00, 2]])), // 2 pages: table + one 64 KiB window
    ...section(6, vec([[op.i32, 0x01, ...k(0), op.end]])),
    ...section(7, vec([[...name('scan'), 0, 0], [...name('mem'), 2, 0], [...name('h'), 3, 0]])),
    ...section(10, vec([[...uleb(code.length), ...code]])),
  ]);
}

/** The part of the WebAssembly JS API used here; the project's `lib` has no typings for it. */
declare const WebAssembly: {
  Module: new (bytes: Uint8Array) => WasmModule;
  Instance: new (module: WasmModule) => { exports: unknown };
};
type WasmModule = { readonly __wasmModule: unique symbol };

interface ScanExports {
  scan(i: number, end: number, h: number, mask: number): number;
  mem: { buffer: ArrayBuffer };
  h: { value: number };
}

let scanModule: WasmModule | undefined;

/**
 * Runs the gear hash over byte ranges with a given table. Calls are synchronous and leave no
 * state behind except `hash`, so one scanner can serve every chunker using the same table.
 */
export class GearScanner {
  /** The running hash after a `scan` that found no cut point. */
  hash = 0;
  readonly #wasm: ScanExports;
  readonly #window: Uint8Array;

  constructor(table: Uint32Array) {
    if (table.length !== 256) {
      throw new CairnError(`gear table must have 256 entries, got ${table.length}`, 'Usage');
    }
    scanModule ??= new WebAssembly.Module(scanModuleBytes());
    this.#wasm = new WebAssembly.Instance(scanModule).exports as unknown as ScanExports;
    const view = new DataView(this.#wasm.mem.buffer);
    for (let i = 0; i < 256; i++) view.setUint32(TABLE_OFFSET + i * 4, table[i]!, true);
    this.#window = new Uint8Array(this.#wasm.mem.buffer, WINDOW_OFFSET, WINDOW_BYTES);
  }

  /**
   * Continues hash `h` over buf[from, to) and returns the index just past the first byte
   * whose hash has no bits in common with `mask`, or -1 (with the hash in `this.hash`).
   */
  scan(buf: Uint8Array, from: number, to: number, h: number, mask: number): number {
    const wasm = this.#wasm;
    const window = this.#window;
    while (from < to) {
      const n = Math.min(to - from, WINDOW_BYTES);
      window.set(buf.subarray(from, from + n));
      const r = wasm.scan(WINDOW_OFFSET, WINDOW_OFFSET + n, h, mask);
      if (r >= 0) return from + (r - WINDOW_OFFSET);
      h = wasm.h.value;
      from += n;
    }
    this.hash = h;
    return -1;
  }
}

const scanners = new WeakMap<Uint32Array, GearScanner>();

/**
 * A scanner per table object, so per-file chunkers don't each instantiate WebAssembly
 * (~65 µs, and gearTable itself ~200 µs): derive the table once per repository and reuse
 * it. The table must not be modified once used.
 */
export function gearScannerFor(table: Uint32Array): GearScanner {
  let s = scanners.get(table);
  if (s === undefined) {
    s = new GearScanner(table);
    scanners.set(table, s);
  }
  return s;
}
