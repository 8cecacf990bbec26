// The SDK's numpy encodings against deltas/encodings.ts, byte for byte: the float conversions
// on structured and random bit patterns (every exponent, ties, NaN payloads, subnormals), and
// whole-tensor encodes for every encoding on random data and edge values, including the
// inputs both sides must refuse.
import { join } from "node:path";
import test from "ava";
import {
  type DeltaEncoding,
  encodeValues,
  f32ToBf16Bits,
  f32ToF16Bits,
  isDeltaError,
  parseEncoding,
} from "../../deltas/mod.ts";
import { gaussian } from "../deltas/helpers.ts";
import { runPythonJson, scripts } from "./sdk-venv.ts";

const tool = join(scripts, "tool.py");
const b64 = (view: ArrayBufferView) =>
  Buffer.from(view.buffer, view.byteOffset, view.byteLength).toString("base64");

/** Every sign and exponent with mantissas at the rounding boundaries of bf16 and fp16, plus random patterns. */
function bitPatterns(randomCount: number, seed: number): Uint32Array {
  const mantissas = [
    0, 1, 2, 0x7fffff, 0x400000, 0x3fffff, 0x7fff, 0x8000, 0x8001, 0x18000, 0x17fff, 0x10000, 0xfff, 0x1000,
    0x1001, 0x3000, 0x2fff, 0x3001, 0x2000, 0x7fe000, 0x7ff000, 0x7fefff, 0x7ff001, 0x0007ff, 0x000800,
    0x7fffe000, 0x123456, 0x654321,
  ];
  const out: number[] = [];
  for (let sign = 0; sign < 2; sign++)
    for (let exponent = 0; exponent < 256; exponent++)
      for (const m of mantissas) out.push(((sign << 31) | (exponent << 23) | (m & 0x7fffff)) >>> 0);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < randomCount; i++) {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    out.push(s);
  }
  return new Uint32Array(out);
}

test("bf16 and fp16 rounding of the SDK equal the TypeScript conversions on every bit pattern tried", async (t) => {
  const bits = bitPatterns(200_000, 7);
  const result = await runPythonJson<{ bf16: string; f16: string }>([tool], { op: "bits", bits: b64(bits) });
  const bf16 = new Uint16Array(new Uint8Array(Buffer.from(result.bf16, "base64")).buffer);
  const f16 = new Uint16Array(new Uint8Array(Buffer.from(result.f16, "base64")).buffer);
  t.is(bf16.length, bits.length);
  t.is(f16.length, bits.length);
  const mismatches = { bf16: [] as string[], f16: [] as string[] };
  for (let i = 0; i < bits.length; i++) {
    const b = bits[i] as number;
    const hex = (v: number) => v.toString(16);
    if (bf16[i] !== f32ToBf16Bits(b))
      mismatches.bf16.push(`${hex(b)}: py ${hex(bf16[i] as number)} ts ${hex(f32ToBf16Bits(b))}`);
    if (f16[i] !== f32ToF16Bits(b))
      mismatches.f16.push(`${hex(b)}: py ${hex(f16[i] as number)} ts ${hex(f32ToF16Bits(b))}`);
  }
  t.deepEqual(mismatches.bf16.slice(0, 5), [], `${mismatches.bf16.length} bf16 mismatches`);
  t.deepEqual(mismatches.f16.slice(0, 5), [], `${mismatches.f16.length} fp16 mismatches`);
  t.log(`${bits.length} patterns, bf16 and fp16 identical`);
});

interface Case {
  name: string;
  shape: number[];
  values: Float32Array;
}

const F32_MAX = 3.4028234663852886e38;

function cases(): Case[] {
  const ties = new Float32Array([127, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, -126.5, 3.5, 0, -0]);
  const subnormal = new Float32Array(40).map((_, i) => (i - 20) * 1.401298464324817e-45);
  const mixed = gaussian(37, 1, 3).map((v, i) => (i % 5 === 0 ? v * 1e-30 : i % 7 === 0 ? v * 1e4 : v));
  return [
    { name: "gaussian.matrix", shape: [64, 48], values: gaussian(64 * 48, 0.01, 11) },
    { name: "gaussian.3d", shape: [4, 3, 50], values: gaussian(600, 2, 12) },
    { name: "vector.not.block.aligned", shape: [37], values: mixed },
    { name: "ties", shape: [2, 6], values: ties },
    // int4's ties: with absmax 7 the scale is exactly 1.
    {
      name: "int4.ties",
      shape: [10],
      values: new Float32Array([7, 3.5, -3.5, 0.5, -0.5, 1.5, -2.5, 6.5, -6.5, 0]),
    },
    { name: "odd.last.dimension", shape: [5, 7], values: gaussian(35, 0.1, 13) },
    { name: "subnormals", shape: [40], values: subnormal },
    { name: "zeros", shape: [3, 16], values: new Float32Array(48) },
    { name: "scalar", shape: [], values: new Float32Array([-0.123456789]) },
    { name: "empty", shape: [0], values: new Float32Array(0) },
    { name: "empty.rows", shape: [3, 0], values: new Float32Array(0) },
    // Near the top of fp32: the int8 scale must be stepped down; fp16 and bf16 must refuse.
    { name: "huge", shape: [2, 4], values: new Float32Array([F32_MAX, -F32_MAX, 1, 2, 3e38, -1e38, 0, 5]) },
    {
      name: "fp16.edge",
      shape: [6],
      values: new Float32Array([65504, 65519.99, -65504, 6.1e-5, 5.96e-8, 2.98e-8]),
    },
    { name: "fp16.overflow", shape: [2], values: new Float32Array([65520, 1]) },
    { name: "nan", shape: [3], values: new Float32Array([1, Number.NaN, 2]) },
    { name: "inf", shape: [3], values: new Float32Array([1, Number.NEGATIVE_INFINITY, 2]) },
  ];
}

const ENCODINGS: DeltaEncoding[] = [
  "fp32",
  "bf16",
  "fp16",
  "int8-row",
  "int8-block128",
  "int8-block8",
  "int4-block64",
  "int4-block8",
];

test("every encoding of the SDK writes the bytes deltas/encodings.ts writes, and refuses what it refuses", async (t) => {
  const all = cases();
  const requests = ENCODINGS.flatMap((encoding) =>
    all.map((c) => ({ name: c.name, shape: c.shape, values: b64(c.values), encoding })),
  );
  const results = await runPythonJson<
    Array<{ dtype?: string; payload?: string; scales?: string; error?: string }>
  >([tool], {
    op: "encode",
    cases: requests,
  });
  t.is(results.length, requests.length);
  let compared = 0;
  let refused = 0;
  requests.forEach((request, i) => {
    const c = all[i % all.length] as Case;
    const label = `${request.encoding} ${c.name}`;
    let expected: { dtype?: string; payload?: string; scales?: string; error?: string };
    try {
      const encoded = encodeValues(c.name, c.values, c.shape, parseEncoding(request.encoding));
      expected = {
        dtype: encoded.payload.dtype,
        payload: Buffer.from(encoded.payload.bytes).toString("base64"),
        ...(encoded.scales ? { scales: b64(encoded.scales) } : {}),
      };
    } catch (err) {
      if (!isDeltaError(err)) throw err;
      expected = { error: err.reason };
      refused++;
    }
    t.deepEqual(results[i], expected, label);
    compared++;
  });
  const packed = results.filter((r) => r.dtype === "U8").length;
  t.log(`${compared} tensor encodings identical (${refused} refused by both, ${packed} packed int4)`);
  t.true(packed >= 16, "int4 packs the tensors with an even last dimension");
  t.true(refused >= 6, "the non-finite and overflowing inputs are refused");
});
