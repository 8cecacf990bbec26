// The weighted-add kernel `sum ← fl32(sum + fl32(w · v))` over fp32 sums, in WebAssembly SIMD
// (4 lanes) with a plain-JavaScript twin that gives bit-identical results.
//
// Why WebAssembly: V8 runs a JavaScript typed-array loop as scalar code, 0.1-0.2 × the speed
// of a memcpy on the development machine; this kernel runs at about 0.45 × memcpy for one delta,
// chunk copy included, and above 0.5 for three at once (bench/aggregate.ts, docs/deltas.md).
// WebAssembly can only touch its own linear memory, so the sums live there ("arenas" of < 4 GiB
// each) and each incoming chunk is copied into a 16 KiB scratch slot first — small enough to
// stay in cache, so that copy costs little.
//
// Why several deltas per call: one delta costs a read of its values plus a read and a write of
// the sums, and a single core here streams about as many bytes per second either way; adding
// K deltas in one pass shares the sums' read and write among them.
//
// Why this rounding: both the product and the sum are rounded to fp32 (two IEEE fp32
// operations, round to nearest even). That is exactly what `Math.fround` gives in JavaScript
// (a double product of two fp32 values is exact, and a double sum of two fp32 values rounds to
// the same fp32 as a direct fp32 sum), so the JavaScript twin below is the reference the tests
// compare against bit for bit. A float64 product and sum (one rounding instead of two)
// measured about a third slower; either error is far below the encodings' own (docs/deltas.md).

/** Elements per kernel call: 16 KiB of scratch per delta, which the chunk copy and the kernel share. */
export const SCRATCH_ELEMENTS = 4096;
/**
 * Deltas one kernel call adds at once (addMany): each extra delta read in the same pass saves
 * a read and a write of the sums. Four scratch slots (64 KiB) still sit in L1/L2 cache.
 */
export const MAX_FUSED = 4;
const SCRATCH_BYTES = MAX_FUSED * SCRATCH_ELEMENTS * 4;
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
 * `axpyK(sum, values₁…values_K, n, w₁…w_K) → nonFinite`: for i < n,
 * sum[i] = fl32(…fl32(fl32(sum[i] + fl32(w₁·values₁[i])) + fl32(w₂·values₂[i]))…), the same
 * operations in the same order as K calls of the one-delta kernel, so the sums are bit-identical;
 * returns 1 when any result is NaN or ±Inf (checked as r − r ≠ 0 on the final sum: once an
 * intermediate is not finite, adding anything keeps it so). Pointers are byte addresses in the
 * imported memory. Unrolled 4 × 4 lanes with one check accumulator per unrolled step, scalar tail.
 */
function axpyFunction(K: number): { type: number[]; code: number[] } {
  // params: 0 sum, 1..K values, K+1 n (i32), K+2..2K+1 w (f32)
  const n = K + 1;
  const weight = (k: number) => K + 2 + k;
  // locals: vectorEnd, end (i32); wv₁..wv_K, r, bad₀..bad₃ (v128); r1, bad1 (f32)
  const vectorEnd = 2 * K + 2;
  const end = vectorEnd + 1;
  const splat = (k: number) => end + 1 + k;
  const r = end + 1 + K;
  const bad = (u: number) => r + 1 + u;
  const r1 = r + 1 + UNROLL;
  const bad1 = r1 + 1;
  const vectorBody: number[] = [];
  for (let u = 0; u < UNROLL; u++) {
    const offset = 16 * u;
    vectorBody.push(...get(0), ...get(0), ...v128Load(offset));
    for (let k = 0; k < K; k++) {
      vectorBody.push(...get(splat(k)), ...get(1 + k), ...v128Load(offset), ...F32X4_MUL, ...F32X4_ADD);
    }
    vectorBody.push(
      ...tee(r),
      ...v128Store(offset),
      ...get(bad(u)),
      ...get(r),
      ...get(r),
      ...F32X4_SUB,
      ...F32X4_ADD,
      ...set(bad(u)),
    );
  }
  const scalarBody: number[] = [...get(0), ...get(0), ...F32_LOAD];
  for (let k = 0; k < K; k++)
    scalarBody.push(...get(weight(k)), ...get(1 + k), ...F32_LOAD, F32_MUL, F32_ADD);
  scalarBody.push(
    ...tee(r1),
    ...F32_STORE,
    ...get(bad1),
    ...get(r1),
    ...get(r1),
    F32_SUB,
    F32_ADD,
    ...set(bad1),
  );
  const advance = (by: number) => Array.from({ length: K + 1 }, (_, p) => bump(p, by)).flat();
  const code = [
    3,
    2,
    I32,
    K + 1 + UNROLL,
    V128,
    2,
    F32,
    ...Array.from({ length: K }, (_, k) => [...get(weight(k)), ...F32X4_SPLAT, ...set(splat(k))]).flat(),
    // vectorEnd = sum + (n & -16) * 4; end = sum + n * 4
    ...get(0),
    ...get(n),
    ...i32Const(-4 * UNROLL),
    I32_AND,
    ...i32Const(2),
    I32_SHL,
    I32_ADD,
    ...set(vectorEnd),
    ...get(0),
    ...get(n),
    ...i32Const(2),
    I32_SHL,
    I32_ADD,
    ...set(end),
    ...BLOCK,
    ...LOOP,
    ...get(0),
    ...get(vectorEnd),
    I32_GE_U,
    BR_IF,
    1,
    ...vectorBody,
    ...advance(16 * UNROLL),
    BR,
    0,
    END,
    END,
    ...BLOCK,
    ...LOOP,
    ...get(0),
    ...get(end),
    I32_GE_U,
    BR_IF,
    1,
    ...scalarBody,
    ...advance(4),
    BR,
    0,
    END,
    END,
    // nonFinite = any lane of any bad is NaN, or bad1 is NaN
    ...get(bad(0)),
    ...get(bad(1)),
    ...F32X4_ADD,
    ...get(bad(2)),
    ...F32X4_ADD,
    ...get(bad(3)),
    ...F32X4_ADD,
    ...tee(bad(0)),
    ...get(bad(0)),
    ...F32X4_NE,
    ...V128_ANY_TRUE,
    ...get(bad1),
    ...get(bad1),
    F32_NE,
    I32_OR,
    END,
  ];
  const params = [...new Array(K + 2).fill(I32), ...new Array(K).fill(F32)];
  return { type: [0x60, ...uleb(params.length), ...params, 1, I32], code };
}

const UNROLL = 4;

/** One module exporting axpy1 … axpy<MAX_FUSED>. */
function axpyModule(): Uint8Array {
  const functions = Array.from({ length: MAX_FUSED }, (_, i) => axpyFunction(i + 1));
  return new Uint8Array([
    0x00,
    0x61,
    0x73,
    0x6d,
    0x01,
    0x00,
    0x00,
    0x00,
    ...section(1, [...uleb(MAX_FUSED), ...functions.flatMap((f) => f.type)]),
    ...section(2, [1, ...name("env"), ...name("memory"), 0x02, 0x00, 0x00]),
    ...section(3, [...uleb(MAX_FUSED), ...functions.map((_, i) => i)]),
    ...section(7, [...uleb(MAX_FUSED), ...functions.flatMap((_, i) => [...name(`axpy${i + 1}`), 0x00, i])]),
    ...section(10, [...uleb(MAX_FUSED), ...functions.flatMap((f) => [...uleb(f.code.length), ...f.code])]),
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

type Axpy1 = (sum: number, v1: number, n: number, w1: number) => number;
type Axpy2 = (sum: number, v1: number, v2: number, n: number, w1: number, w2: number) => number;
type Axpy3 = (
  sum: number,
  v1: number,
  v2: number,
  v3: number,
  n: number,
  w1: number,
  w2: number,
  w3: number,
) => number;
type Axpy4 = (
  sum: number,
  v1: number,
  v2: number,
  v3: number,
  v4: number,
  n: number,
  w1: number,
  w2: number,
  w3: number,
  w4: number,
) => number;

interface Arena {
  /** MAX_FUSED scratch slots of SCRATCH_ELEMENTS each, slot k at byte k · SLOT. */
  scratch: Float32Array[];
  axpy1: Axpy1;
  axpy2: Axpy2;
  axpy3: Axpy3;
  axpy4: Axpy4;
}

const SLOT = SCRATCH_ELEMENTS * 4;

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
      const { exports } = new WebAssembly.Instance(module, { env: { memory } });
      return {
        memory,
        scratch: Array.from(
          { length: MAX_FUSED },
          (_, k) => new Float32Array(memory.buffer, k * SLOT, SCRATCH_ELEMENTS),
        ),
        axpy1: exports.axpy1 as Axpy1,
        axpy2: exports.axpy2 as Axpy2,
        axpy3: exports.axpy3 as Axpy3,
        axpy4: exports.axpy4 as Axpy4,
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
    return this.#addGroup(tensor, at, [values], [w32]);
  }

  /**
   * Adds w32s[0] · values[0], then w32s[1] · values[1], … into tensor `tensor` from element
   * `at`, in one pass over the sums: the same sums, bit for bit, as add() called for each in
   * order. All `values` have the same length. Returns false when a final sum is not finite (which
   * of the deltas made it so is not known; the sums are modified either way).
   */
  addMany(tensor: number, at: number, values: readonly Float32Array[], w32s: readonly number[]): boolean {
    let ok = true;
    for (let first = 0; first < values.length; first += MAX_FUSED) {
      const group = values.slice(first, first + MAX_FUSED);
      const weights = w32s.slice(first, first + MAX_FUSED);
      ok = this.#addGroup(tensor, at, group, weights) && ok;
    }
    return ok;
  }

  #addGroup(tensor: number, at: number, values: readonly Float32Array[], w: readonly number[]): boolean {
    const arena = this.#arenas[tensor];
    if (!arena) {
      let ok = true;
      values.forEach((v, k) => {
        ok = axpyJs(this.views[tensor] as Float32Array, at, v, w[k] as number) && ok;
      });
      return ok;
    }
    const length = (values[0] as Float32Array).length;
    const base = (this.#pointers[tensor] as number) + at * 4;
    let bad = 0;
    for (let from = 0; from < length; from += SCRATCH_ELEMENTS) {
      const n = Math.min(SCRATCH_ELEMENTS, length - from);
      for (let k = 0; k < values.length; k++) {
        (arena.scratch[k] as Float32Array).set((values[k] as Float32Array).subarray(from, from + n));
      }
      const sum = base + from * 4;
      switch (values.length) {
        case 1:
          bad |= arena.axpy1(sum, 0, n, w[0] as number);
          break;
        case 2:
          bad |= arena.axpy2(sum, 0, SLOT, n, w[0] as number, w[1] as number);
          break;
        case 3:
          bad |= arena.axpy3(sum, 0, SLOT, 2 * SLOT, n, w[0] as number, w[1] as number, w[2] as number);
          break;
        default:
          bad |= arena.axpy4(
            sum,
            0,
            SLOT,
            2 * SLOT,
            3 * SLOT,
            n,
            w[0] as number,
            w[1] as number,
            w[2] as number,
            w[3] as number,
          );
      }
    }
    return bad === 0;
  }
}

function align(n: number): number {
  return Math.ceil(n / TENSOR_ALIGN) * TENSOR_ALIGN;
}
