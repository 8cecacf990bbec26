// The weighted-add kernel `sum ← fl32(sum + fl32(w · v))` over fp32 sums, in WebAssembly SIMD
// (4 lanes) with a plain-JavaScript twin that gives bit-identical results.
//
// Why WebAssembly: V8 runs a JavaScript typed-array loop as scalar code, 0.1-0.2 × the speed
// of a memcpy on the development machine; this kernel runs at about 0.5 × memcpy, chunk copy
// included (bench/aggregate.ts, docs/deltas.md). WebAssembly can only touch its own linear
// memory, so the sums live there ("arenas" of < 4 GiB each) and each incoming chunk is copied
// into a 16 KiB scratch area first — small enough to stay in cache, so that copy costs little.
//
// Why this rounding: both the product and the sum are rounded to fp32 (two IEEE fp32
// operations, round to nearest even). That is exactly what `Math.fround` gives in JavaScript
// (a double product of two fp32 values is exact, and a double sum of two fp32 values rounds to
// the same fp32 as a direct fp32 sum), so the JavaScript twin below is the reference the tests
// compare against bit for bit. A float64 product and sum (one rounding instead of two)
// measured about a third slower; either error is far below the encodings' own (docs/deltas.md).

/** Elements per kernel call: 16 KiB of scratch, which the chunk copy and the kernel share. */
export const SCRATCH_ELEMENTS = 4096;
const SCRATCH_BYTES = SCRATCH_ELEMENTS * 4;
const PAGE = 65536;
/** One page short of 4 GiB, so that `pointer + bytes` never wraps in 32-bit arithmetic. */
const MAX_ARENA_PAGES = 65535;
const TENSOR_ALIGN = 64;

// ---------------------------------------------------------------------------------------------
// A minimal WebAssembly emitter: one module, one function.

function uleb(n: number): number[] {
  const out: number[] = [];
  do {
    let byte = n & 0x7f;
    n = Math.floor(n / 128);
    if (n !== 0) byte |= 0x80;
    out.push(byte);
  } while (n !== 0);
  return out;
}

function sleb(n: number): number[] {
  const out: number[] = [];
  for (;;) {
    const byte = n & 0x7f;
    n >>= 7;
    if ((n === 0 && (byte & 0x40) === 0) || (n === -1 && (byte & 0x40) !== 0)) {
      out.push(byte);
      return out;
    }
    out.push(byte | 0x80);
  }
}

const name = (s: string) => [...uleb(s.length), ...new TextEncoder().encode(s)];
const section = (id: number, body: number[]) => [id, ...uleb(body.length), ...body];
const I32 = 0x7f;
const F32 = 0x7d;
const V128 = 0x7b;
const get = (i: number) => [0x20, i];
const set = (i: number) => [0x21, i];
const tee = (i: number) => [0x22, i];
const i32Const = (n: number) => [0x41, ...sleb(n)];
const simd = (op: number, ...immediates: number[]) => [0xfd, ...uleb(op), ...immediates];
// memarg: alignment hint 2^2 (fp32 arrays are 4-byte aligned), then the offset
const v128Load = (offset: number) => simd(0x00, 2, ...uleb(offset));
const v128Store = (offset: number) => simd(0x0b, 2, ...uleb(offset));
const F32X4_SPLAT = simd(0x13);
const F32X4_NE = simd(0x42);
const V128_ANY_TRUE = simd(0x53);
const F32X4_ADD = simd(0xe4);
const F32X4_SUB = simd(0xe5);
const F32X4_MUL = simd(0xe6);
const I32_GE_U = 0x4f;
const I32_ADD = 0x6a;
const I32_AND = 0x71;
const I32_OR = 0x72;
const I32_SHL = 0x74;
const F32_LOAD = [0x2a, 2, 0];
const F32_STORE = [0x38, 2, 0];
const F32_NE = 0x5c;
const F32_ADD = 0x92;
const F32_SUB = 0x93;
const F32_MUL = 0x94;
const BLOCK = [0x02, 0x40];
const LOOP = [0x03, 0x40];
const END = 0x0b;
const BR = 0x0c;
const BR_IF = 0x0d;
const bump = (local: number, by: number) => [...get(local), ...i32Const(by), I32_ADD, ...set(local)];

/**
 * `axpy(sum, values, n, w) → nonFinite`: for i < n, sum[i] = fl32(sum[i] + fl32(w · values[i]));
 * returns 1 when any result is NaN or ±Inf (checked as r − r ≠ 0, accumulated per lane).
 * Pointers are byte addresses in the imported memory. Unrolled 4 × 4 lanes, scalar tail.
 */
function axpyModule(): Uint8Array {
  // params: 0 sum, 1 values, 2 n (i32), 3 w (f32)
  // locals: 4 vectorEnd, 5 end (i32); 6 wv, 7 r, 8 bad (v128); 9 r1, 10 bad1 (f32)
  const UNROLL = 4;
  const vectorBody: number[] = [];
  for (let u = 0; u < UNROLL; u++) {
    const offset = 16 * u;
    vectorBody.push(
      ...get(0),
      ...get(0),
      ...v128Load(offset),
      ...get(6),
      ...get(1),
      ...v128Load(offset),
      ...F32X4_MUL,
      ...F32X4_ADD,
      ...tee(7),
      ...v128Store(offset),
      ...get(8),
      ...get(7),
      ...get(7),
      ...F32X4_SUB,
      ...F32X4_ADD,
      ...set(8),
    );
  }
  const code = [
    3,
    2,
    I32,
    3,
    V128,
    2,
    F32,
    ...get(3),
    ...F32X4_SPLAT,
    ...set(6),
    // vectorEnd = sum + (n & -16) * 4; end = sum + n * 4
    ...get(0),
    ...get(2),
    ...i32Const(-4 * UNROLL),
    I32_AND,
    ...i32Const(2),
    I32_SHL,
    I32_ADD,
    ...set(4),
    ...get(0),
    ...get(2),
    ...i32Const(2),
    I32_SHL,
    I32_ADD,
    ...set(5),
    ...BLOCK,
    ...LOOP,
    ...get(0),
    ...get(4),
    I32_GE_U,
    BR_IF,
    1,
    ...vectorBody,
    ...bump(0, 16 * UNROLL),
    ...bump(1, 16 * UNROLL),
    BR,
    0,
    END,
    END,
    ...BLOCK,
    ...LOOP,
    ...get(0),
    ...get(5),
    I32_GE_U,
    BR_IF,
    1,
    ...get(0),
    ...get(0),
    ...F32_LOAD,
    ...get(3),
    ...get(1),
    ...F32_LOAD,
    F32_MUL,
    F32_ADD,
    ...tee(9),
    ...F32_STORE,
    ...get(10),
    ...get(9),
    ...get(9),
    F32_SUB,
    F32_ADD,
    ...set(10),
    ...bump(0, 4),
    ...bump(1, 4),
    BR,
    0,
    END,
    END,
    // nonFinite = any lane of bad is NaN, or bad1 is NaN
    ...get(8),
    ...get(8),
    ...F32X4_NE,
    ...V128_ANY_TRUE,
    ...get(10),
    ...get(10),
    F32_NE,
    I32_OR,
    END,
  ];
  return new Uint8Array([
    0x00,
    0x61,
    0x73,
    0x6d,
    0x01,
    0x00,
    0x00,
    0x00,
    ...section(1, [1, 0x60, 4, I32, I32, I32, F32, 1, I32]),
    ...section(2, [1, ...name("env"), ...name("memory"), 0x02, 0x00, 0x00]),
    ...section(3, [1, 0]),
    ...section(7, [1, ...name("axpy"), 0x00, 0]),
    ...section(10, [1, ...uleb(code.length), ...code]),
  ]);
}

let compiled: WebAssembly.Module | null | undefined;

/** The compiled kernel, or null where WebAssembly SIMD is unavailable. */
function kernelModule(): WebAssembly.Module | null {
  if (compiled === undefined) {
    try {
      compiled = new WebAssembly.Module(axpyModule() as Uint8Array<ArrayBuffer>);
    } catch {
      compiled = null;
    }
  }
  return compiled;
}

export function wasmKernelAvailable(): boolean {
  return kernelModule() !== null;
}

// ---------------------------------------------------------------------------------------------
// The JavaScript twin

/**
 * sum[at + i] = fl32(sum[at + i] + fl32(w32 · values[i])); returns true when every result is
 * finite. `w32` must already be an fp32 value (Math.fround).
 */
export function axpyJs(sum: Float32Array, at: number, values: Float32Array, w32: number): boolean {
  let bad = 0;
  for (let i = 0; i < values.length; i++) {
    const r = Math.fround((sum[at + i] as number) + Math.fround(w32 * (values[i] as number)));
    sum[at + i] = r;
    bad += r - r;
  }
  return bad === 0;
}

// ---------------------------------------------------------------------------------------------
// Sum storage

export type KernelKind = "wasm" | "js";

interface Arena {
  scratch: Float32Array;
  axpy: (sum: number, values: number, n: number, w: number) => number;
}

/** One fp32 sum buffer per tensor, zero-initialised, with the kernel that adds into it. */
export class SumStorage {
  readonly kind: KernelKind;
  /** The sums, one view per tensor in layout order. */
  readonly views: Float32Array[] = [];
  readonly #arenas: (Arena | undefined)[] = [];
  readonly #pointers: number[] = [];

  constructor(elements: readonly number[], kind: KernelKind = "wasm") {
    const module = kind === "wasm" ? kernelModule() : null;
    this.kind = module ? "wasm" : "js";
    if (!module) {
      for (const n of elements) {
        this.views.push(new Float32Array(n));
        this.#arenas.push(undefined);
        this.#pointers.push(0);
      }
      return;
    }
    // Pack tensors into arenas in layout order; a tensor too large for any arena gets a plain
    // array and the JavaScript kernel.
    const capacity = MAX_ARENA_PAGES * PAGE;
    const placement: { arena: number; pointer: number }[] = [];
    const arenaBytes: number[] = [];
    for (const n of elements) {
      const bytes = n * 4;
      if (SCRATCH_BYTES + bytes > capacity) {
        placement.push({ arena: -1, pointer: 0 });
        continue;
      }
      let last = arenaBytes.length - 1;
      let pointer = last < 0 ? 0 : align(arenaBytes[last] as number);
      if (last < 0 || pointer + bytes > capacity) {
        arenaBytes.push(SCRATCH_BYTES);
        last++;
        pointer = align(SCRATCH_BYTES);
      }
      placement.push({ arena: last, pointer });
      arenaBytes[last] = pointer + bytes;
    }
    const arenas = arenaBytes.map((bytes) => {
      const memory = new WebAssembly.Memory({ initial: Math.ceil(bytes / PAGE) });
      const instance = new WebAssembly.Instance(module, { env: { memory } });
      return {
        memory,
        scratch: new Float32Array(memory.buffer, 0, SCRATCH_ELEMENTS),
        axpy: instance.exports.axpy as Arena["axpy"],
      };
    });
    elements.forEach((n, i) => {
      const { arena, pointer } = placement[i] as { arena: number; pointer: number };
      const home = arenas[arena];
      if (!home) {
        this.views.push(new Float32Array(n));
        this.#arenas.push(undefined);
        this.#pointers.push(0);
        return;
      }
      this.views.push(new Float32Array(home.memory.buffer, pointer, n));
      this.#arenas.push(home);
      this.#pointers.push(pointer);
    });
  }

  /**
   * Adds w32 · values into tensor `tensor` from element `at`; returns false when a result is
   * not finite (the sums are modified either way: the caller rolls back).
   */
  add(tensor: number, at: number, values: Float32Array, w32: number): boolean {
    const arena = this.#arenas[tensor];
    if (!arena) return axpyJs(this.views[tensor] as Float32Array, at, values, w32);
    const base = (this.#pointers[tensor] as number) + at * 4;
    let bad = 0;
    for (let from = 0; from < values.length; from += SCRATCH_ELEMENTS) {
      const piece = values.subarray(from, from + SCRATCH_ELEMENTS);
      arena.scratch.set(piece);
      bad |= arena.axpy(base + from * 4, 0, piece.length, w32);
    }
    return bad === 0;
  }
}

function align(n: number): number {
  return Math.ceil(n / TENSOR_ALIGN) * TENSOR_ALIGN;
}
