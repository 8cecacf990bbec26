// Builders of in-memory deltas, straightforward reference aggregations, and bit-level
// comparison for the aggregation tests.
import type { ExecutionContext } from "ava";
import fc from "fast-check";
import {
  type AggregationReason,
  elementCount,
  isAggregationError,
  type ModelLayout,
} from "../../../deltas/aggregate/mod.ts";
import type { DecodedChunk } from "../../../deltas/delta.ts";
import { gaussian } from "../helpers.ts";

export type Tensors = Map<string, Float32Array>;

export function randomTensors(layout: ModelLayout, sigma: number, seed: number): Tensors {
  return new Map(layout.map((t, i) => [t.name, gaussian(elementCount(t.shape), sigma, seed * 131 + i + 1)]));
}

/**
 * A delta as decodeDelta would yield it: tensors in layout order, each cut into chunks whose
 * sizes cycle through `sizes` (every tensor gets at least one chunk, empty ones included).
 */
export function* chunksOf(
  layout: ModelLayout,
  tensors: Tensors,
  sizes: readonly number[] = [1 << 20],
): Generator<DecodedChunk> {
  let k = 0;
  for (const t of layout) {
    const values = tensors.get(t.name) as Float32Array;
    if (values.length === 0) {
      yield { name: t.name, shape: [...t.shape], offset: 0, values, last: true };
      continue;
    }
    for (let at = 0; at < values.length; ) {
      const size = Math.max(1, sizes[k++ % sizes.length] as number);
      const part = values.slice(at, at + size);
      yield {
        name: t.name,
        shape: [...t.shape],
        offset: at,
        values: part,
        last: at + part.length === values.length,
      };
      at += part.length;
    }
  }
}

/** The same chunks from an async generator, as a transport would deliver them. */
export async function* asyncChunks(chunks: Iterable<DecodedChunk>): AsyncGenerator<DecodedChunk> {
  for (const chunk of chunks) {
    await Promise.resolve();
    yield chunk;
  }
}

/**
 * The documented accumulation, written out plainly: sum ← fl32(sum + fl32(fl32(w)·v)) delta by
 * delta in the given order, then fl32(sum ÷ Σ fl32(w)).
 */
export function referenceMean(layout: ModelLayout, deltas: { tensors: Tensors; weight: number }[]): Tensors {
  const out: Tensors = new Map();
  let total = 0;
  for (const d of deltas) total += Math.fround(d.weight);
  for (const t of layout) {
    const sum = new Float32Array(elementCount(t.shape));
    for (const d of deltas) {
      const w = Math.fround(d.weight);
      const v = d.tensors.get(t.name) as Float32Array;
      for (let i = 0; i < sum.length; i++) {
        const product = Math.fround(w * (v[i] as number));
        sum[i] = Math.fround((sum[i] as number) + product);
      }
    }
    for (let i = 0; i < sum.length; i++) sum[i] = Math.fround((sum[i] as number) / total);
    out.set(t.name, sum);
  }
  return out;
}

/** The exact weighted mean in float64, and Σ|wᵢvᵢ|/Σwᵢ per element for error bounds. */
export function float64Mean(
  layout: ModelLayout,
  deltas: { tensors: Tensors; weight: number }[],
): Map<string, { mean: Float64Array; magnitude: Float64Array }> {
  const out = new Map<string, { mean: Float64Array; magnitude: Float64Array }>();
  let total = 0;
  for (const d of deltas) total += d.weight;
  for (const t of layout) {
    const n = elementCount(t.shape);
    const mean = new Float64Array(n);
    const magnitude = new Float64Array(n);
    for (const d of deltas) {
      const v = d.tensors.get(t.name) as Float32Array;
      for (let i = 0; i < n; i++) {
        mean[i] = (mean[i] as number) + d.weight * (v[i] as number);
        magnitude[i] = (magnitude[i] as number) + Math.abs(d.weight * (v[i] as number));
      }
    }
    for (let i = 0; i < n; i++) {
      mean[i] = (mean[i] as number) / total;
      magnitude[i] = (magnitude[i] as number) / total;
    }
    out.set(t.name, { mean, magnitude });
  }
  return out;
}

/** Bit patterns of every tensor, so that −0 vs +0 and NaN payloads count as differences. */
export function bitsOf(tensors: ReadonlyMap<string, Float32Array>): Map<string, number[]> {
  return new Map(
    [...tensors].map(([name, v]) => [name, [...new Uint32Array(v.buffer, v.byteOffset, v.length)]]),
  );
}

export function sameBits(
  a: ReadonlyMap<string, Float32Array>,
  b: ReadonlyMap<string, Float32Array>,
): boolean {
  if (a.size !== b.size) return false;
  for (const [name, x] of a) {
    const y = b.get(name);
    if (!y || y.length !== x.length) return false;
    const xb = new Uint32Array(x.buffer, x.byteOffset, x.length);
    const yb = new Uint32Array(y.buffer, y.byteOffset, y.length);
    for (let i = 0; i < xb.length; i++) if (xb[i] !== yb[i]) return false;
  }
  return true;
}

export function copyOf(tensors: ReadonlyMap<string, Float32Array>): Tensors {
  return new Map([...tensors].map(([name, v]) => [name, new Float32Array(v)]));
}

export async function rejectsWithReason(
  t: ExecutionContext,
  promise: Promise<unknown>,
  reason: AggregationReason,
): Promise<void> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  t.true(
    isAggregationError(err, reason),
    `expected ${reason}, got ${err instanceof Error ? err.message : String(err)}`,
  );
}

/** Random model layouts: 1–4 uniquely named tensors of rank 0–3 (empty dimensions included). */
export const layoutArbitrary = fc
  .uniqueArray(
    fc.record({
      name: fc.stringMatching(/^[a-z][a-z0-9_.]{0,8}$/),
      shape: fc.array(fc.integer({ min: 0, max: 9 }), { maxLength: 3 }),
    }),
    { selector: (t) => t.name, minLength: 1, maxLength: 4 },
  )
  .map((tensors) => tensors as ModelLayout);

/** Finite fp32 values of varied magnitude, including subnormals and both zeros. */
export const valueArbitrary = fc.oneof(
  fc.float({ min: Math.fround(-1e3), max: Math.fround(1e3), noNaN: true }),
  fc.float({ min: Math.fround(-1e-3), max: Math.fround(1e-3), noNaN: true }),
  fc.constantFrom(0, -0, 1e-40, -1e-45),
);

export function tensorsArbitrary(layout: ModelLayout): fc.Arbitrary<Tensors> {
  return fc
    .tuple(
      ...layout.map((t) =>
        fc.array(valueArbitrary, { minLength: elementCount(t.shape), maxLength: elementCount(t.shape) }),
      ),
    )
    .map((arrays) => new Map(layout.map((t, i) => [t.name, new Float32Array(arrays[i] as number[])])));
}
