// Builders of raw safetensors files (valid or deliberately broken) and error matchers.
import type { ExecutionContext } from "ava";
import { type DeltaReason, isDeltaError } from "../../deltas/mod.ts";

export function rawFile(
  header: string | Uint8Array,
  data: Uint8Array = new Uint8Array(0),
  declaredLength?: bigint,
) {
  const json = typeof header === "string" ? new TextEncoder().encode(header) : header;
  const out = new Uint8Array(8 + json.byteLength + data.byteLength);
  new DataView(out.buffer).setBigUint64(0, declaredLength ?? BigInt(json.byteLength), true);
  out.set(json, 8);
  out.set(data, 8 + json.byteLength);
  return out;
}

/** Splits bytes into chunks of the given sizes (cycled), as a transport would deliver them. */
export function* chunked(
  bytes: Uint8Array,
  sizes: readonly number[] = [bytes.byteLength || 1],
): Generator<Uint8Array> {
  let at = 0;
  let i = 0;
  while (at < bytes.byteLength) {
    const size = Math.max(1, sizes[i++ % sizes.length] as number);
    yield bytes.subarray(at, at + size);
    at += size;
  }
}

export async function rejectsWith(t: ExecutionContext, promise: Promise<unknown>, reason: DeltaReason) {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  t.true(
    isDeltaError(err, reason),
    `expected ${reason}, got ${err instanceof Error ? err.message : String(err)}`,
  );
}

export function f32Bytes(values: number[]): Uint8Array {
  return new Uint8Array(new Float32Array(values).buffer);
}

/** Deterministic N(0, sigma²) samples (xorshift + Box–Muller), so figures are reproducible. */
export function gaussian(n: number, sigma: number, seed: number): Float32Array {
  let s = seed >>> 0 || 1;
  const uniform = () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return (s + 1) / 4294967297;
  };
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    out[i] = sigma * Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform());
  }
  return out;
}
