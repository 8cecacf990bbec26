import test from "ava";
import fc from "fast-check";
import { decodeDeltaToArrays } from "../../deltas/delta.ts";
import {
  bf16BitsToF32Bits,
  collectBytes,
  type DeltaEncoding,
  decodeDelta,
  decodeValues,
  encodeValues,
  f16BitsToF32,
  f32ToBf16Bits,
  f32ToF16Bits,
  isDeltaError,
  measureEncoding,
  openDelta,
  parseEncoding,
  writeDelta,
} from "../../deltas/mod.ts";
import { chunked, gaussian, rejectsWith } from "./helpers.ts";

const f16round = (Math as unknown as { f16round(x: number): number }).f16round;
const bitsOf = (x: number) => new Uint32Array(new Float32Array([x]).buffer)[0] as number;
const floatOf = (bits: number) => new Float32Array(new Uint32Array([bits]).buffer)[0] as number;

test("fp16 agrees with Math.f16round on every fp16 boundary and on random fp32 values", (t) => {
  let checked = 0;
  const check = (bits: number) => {
    const x = floatOf(bits);
    const ours = f16BitsToF32(f32ToF16Bits(bits));
    const reference = f16round(x);
    if (!(Object.is(ours, reference) || (Number.isNaN(ours) && Number.isNaN(reference)))) {
      t.fail(`0x${bits.toString(16)} (${x}): ours ${ours}, Math.f16round ${reference}`);
    }
    checked++;
  };
  // Each fp16 value's upper midpoint in fp32, exactly and one ulp either side, both signs.
  for (let h = 0; h < 0x7c00; h++) {
    const mid = bitsOf((f16BitsToF32(h) + f16BitsToF32(h + 1)) / 2);
    for (const b of [mid - 1, mid, mid + 1]) {
      check(b >>> 0);
      check((b | 0x80000000) >>> 0);
    }
  }
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 0xffffffff }), (bits) => check(bits)),
    { numRuns: 200_000 },
  );
  t.log(`${checked} conversions checked`);
  t.pass();
});

test("fp16 specials: overflow to Inf, Inf, quiet NaN, signed zero, smallest subnormal", (t) => {
  t.is(f32ToF16Bits(bitsOf(65504)), 0x7bff);
  t.is(f32ToF16Bits(bitsOf(65520)), 0x7c00); // the tie above max rounds to even: Inf
  t.is(f32ToF16Bits(bitsOf(65519.99)), 0x7bff);
  t.is(f32ToF16Bits(bitsOf(Number.NEGATIVE_INFINITY)), 0xfc00);
  t.is(f32ToF16Bits(0x7f800001) & 0x7e00, 0x7e00);
  t.is(f32ToF16Bits(0x80000000), 0x8000);
  t.is(f32ToF16Bits(bitsOf(2 ** -24)), 0x0001);
  t.is(f32ToF16Bits(bitsOf(2 ** -25)), 0x0000); // tie to even
  t.is(f32ToF16Bits(bitsOf(2 ** -25 * 1.0001)), 0x0001);
  t.is(f16BitsToF32(0x0001), 2 ** -24);
  t.true(Number.isNaN(f16BitsToF32(0x7e00)));
});

test("bf16 rounds to nearest even and keeps NaN, Inf and subnormals", (t) => {
  t.is(f32ToBf16Bits(0x3f808000), 0x3f80); // tie, even stays
  t.is(f32ToBf16Bits(0x3f818000), 0x3f82); // tie, odd rounds up
  t.is(f32ToBf16Bits(0x3f808001), 0x3f81);
  t.is(f32ToBf16Bits(0x7f7fffff), 0x7f80); // max fp32 rounds to Inf
  t.is(f32ToBf16Bits(0xff800000), 0xff80);
  t.is(f32ToBf16Bits(0x7f800001) & 0x7fc0, 0x7fc0); // signalling NaN stays NaN, quieted
  t.is(f32ToBf16Bits(0x00010000), 0x0001); // subnormal kept
  t.is(f32ToBf16Bits(0x00008000), 0x0000); // tie to even at the bottom
  fc.assert(
    fc.property(fc.float({ noNaN: true }), (x) => {
      const y = floatOf(bf16BitsToF32Bits(f32ToBf16Bits(bitsOf(x))));
      if (!Number.isFinite(x)) return Object.is(x, y);
      // Within half a bf16 ulp (8 significand bits), or overflowed to Inf at the very top.
      return !Number.isFinite(y) || Math.abs(x - y) <= Math.abs(x) * 2 ** -8 + 2 ** -134;
    }),
    { numRuns: 100_000 },
  );
  t.pass();
});

test("int8 per-block on a known input: scales are absmax/127, codes round half away from zero", (t) => {
  const values = new Float32Array([1.27, -0.635, 0.005, 0, 0, 0, 0, 0, -2.54, 1, 0, 0, 0, 0, 0, 0]);
  const parsed = parseEncoding("int8-block8");
  const encoded = encodeValues("w", values, [16], parsed);
  t.deepEqual([...(encoded.scales ?? [])], [Math.fround(1.27 / 127), Math.fround(2.54 / 127)]);
  t.deepEqual([...new Int8Array(encoded.payload.bytes.buffer)].slice(0, 3), [127, -64, 1]);
  t.deepEqual([...new Int8Array(encoded.payload.bytes.buffer)].slice(8, 10), [-127, 50]);
  const decoded = decodeValues(encoded, [16], parsed);
  t.is(decoded[0], Math.fround(127 * Math.fround(0.01)));
  t.true(Math.abs((decoded[1] as number) + 0.635) <= 0.005 + 1e-7);
});

test("int8 per-row uses one scale per first-dimension row; an all-zero row decodes to zeros", (t) => {
  const values = new Float32Array([1, -2, 4, 0, 0, 0]);
  const parsed = parseEncoding("int8-row");
  const encoded = encodeValues("w", values, [2, 3], parsed);
  t.deepEqual([...(encoded.scales ?? [])], [Math.fround(4 / 127), 0]);
  const decoded = decodeValues(encoded, [2, 3], parsed);
  t.deepEqual([...decoded.slice(3)], [0, 0, 0]);
  t.is(
    decoded[2],
    (4 * (1 + 0) * Math.fround(4 / 127) * 127) / 4 === decoded[2]
      ? decoded[2]
      : Math.fround(127 * Math.fround(4 / 127)),
  );
});

test("measured size and error on a known input (64×1024 N(0, 0.01²) by a fixed generator)", (t) => {
  const values = gaussian(64 * 1024, 0.01, 42);
  const shape = [64, 1024];
  const reports = (
    ["fp32", "bf16", "fp16", "int8-row", "int8-block128", "int8-block64"] as DeltaEncoding[]
  ).map((e) => measureEncoding(values, shape, e));
  for (const r of reports) {
    t.log(
      `${r.encoding.padEnd(14)} ratio ${r.ratio.toFixed(4)}  maxAbs ${r.maxAbsError.toExponential(3)}  rmse ${r.rmse.toExponential(3)}  rel ${r.relativeError.toExponential(3)}`,
    );
  }
  const by = Object.fromEntries(reports.map((r) => [r.encoding, r]));
  t.is(by.fp32?.maxAbsError, 0);
  t.is(by.fp32?.ratio, 1);
  t.is(by.bf16?.ratio, 0.5);
  t.is(by.fp16?.ratio, 0.5);
  // Rounding bounds: half an ulp relative for floats, half a step (scale/2) for int8.
  t.true((by.bf16?.relativeError ?? 1) < 2 ** -9);
  t.true((by.fp16?.relativeError ?? 1) < 2 ** -11);
  t.true((by["int8-block128"]?.ratio ?? 1) <= 0.26);
  t.true((by["int8-block128"]?.relativeError ?? 1) < 0.02);
  t.true((by["int8-row"]?.ratio ?? 1) < 0.2511);
  t.true((by["int8-block64"]?.relativeError ?? 1) < (by["int8-row"]?.relativeError ?? 0));
});

test("int8 error never exceeds half a quantisation step (property)", (t) => {
  fc.assert(
    fc.property(
      fc.float32Array({ noNaN: true, noDefaultInfinity: true, minLength: 1, maxLength: 300 }),
      (values) => {
        const parsed = parseEncoding("int8-block16");
        const encoded = encodeValues("w", values, [values.length], parsed);
        const decoded = decodeValues(encoded, [values.length], parsed);
        // Scales that underflow (absmax below ~2^-143) decode to zero: hence the absolute slack.
        return values.every((x, i) => {
          const scale = encoded.scales?.[Math.floor(i / 16)] as number;
          return (
            Math.abs(x - (decoded[i] as number)) <=
            scale / 2 + scale * 2 ** -20 + Math.abs(x) * 2 ** -22 + 2 ** -140
          );
        });
      },
    ),
    { numRuns: 2000 },
  );
  t.pass();
});

test("a delta round-trips through every encoding while decoded chunk by chunk", async (t) => {
  const a = gaussian(3 * 50, 1, 1);
  const b = gaussian(37, 1e-3, 2);
  for (const encoding of ["fp32", "bf16", "fp16", "int8-row", "int8-block8"] as DeltaEncoding[]) {
    const file = await collectBytes(
      writeDelta(
        [
          { name: "layer.a", shape: [3, 50], values: a },
          { name: "layer.b", shape: [37], values: () => b },
          { name: "empty", shape: [0], values: new Float32Array(0) },
        ],
        encoding,
      ),
    );
    const { layout, stream } = await openDelta(chunked(file, [5, 11, 3]));
    t.is(layout.encoding, encoding);
    const decoded = await decodeDeltaToArrays(stream);
    for (const [name, original, shape] of [
      ["layer.a", a, [3, 50]],
      ["layer.b", b, [37]],
    ] as const) {
      const expected = decodeValues(
        encodeValues(name, original, shape, parseEncoding(encoding)),
        shape,
        parseEncoding(encoding),
      );
      t.deepEqual(decoded.get(name), expected, `${encoding} ${name}`);
    }
    t.is(decoded.get("empty")?.length, 0);
  }
});

test("decodes chunks handed over as Node Buffers at odd offsets of a shared pool, as a socket delivers them", async (t) => {
  const values = gaussian(1000, 1e-2, 9);
  for (const encoding of ["fp32", "bf16", "fp16"] as DeltaEncoding[]) {
    const file = await collectBytes(writeDelta([{ name: "w", shape: [1000], values }], encoding));
    // One pool, each chunk a Buffer view at an odd byte offset: Buffer#slice is not a copy.
    const pool = Buffer.alloc(file.byteLength + 4096);
    const chunks: Buffer[] = [];
    let at = 0;
    let poolAt = 1;
    for (const size of [13, 1001, 7, 333]) {
      if (at >= file.byteLength) break;
      const part = file.subarray(at, at + size);
      pool.set(part, poolAt);
      chunks.push(pool.subarray(poolAt, poolAt + part.byteLength));
      poolAt += part.byteLength + 3;
      at += part.byteLength;
    }
    if (at < file.byteLength) {
      const rest = file.subarray(at);
      pool.set(rest, poolAt);
      chunks.push(pool.subarray(poolAt, poolAt + rest.byteLength));
    }
    const decoded = await decodeDeltaToArrays((await openDelta(chunks)).stream);
    const expected = decodeValues(
      encodeValues("w", values, [1000], parseEncoding(encoding)),
      [1000],
      parseEncoding(encoding),
    );
    t.deepEqual(decoded.get("w"), expected, encoding);
  }
});

test("refuses NaN and Inf, fp16 overflow, unknown encodings and deltas in another layout", async (t) => {
  for (const bad of [Number.NaN, Number.POSITIVE_INFINITY]) {
    await rejectsWith(
      t,
      collectBytes(writeDelta([{ name: "w", shape: [1], values: new Float32Array([bad]) }], "bf16")),
      "EncodingNonFinite",
    );
  }
  await rejectsWith(
    t,
    collectBytes(writeDelta([{ name: "w", shape: [1], values: new Float32Array([1e5]) }], "fp16")),
    "EncodingNonFinite",
  );
  t.true(
    isDeltaError(
      catching(() => parseEncoding("int8-block3")),
      "EncodingUnknown",
    ),
  );
  t.true(
    isDeltaError(
      catching(() => parseEncoding("int4")),
      "EncodingUnknown",
    ),
  );
  t.true(
    isDeltaError(
      catching(() => writeDelta([{ name: "w:scale", shape: [1], values: new Float32Array(1) }], "fp32")),
      "DeltaNameInvalid",
    ),
  );
  // A plain safetensors file is not a delta.
  const { writeSafetensors } = await import("../../deltas/mod.ts");
  const plain = await collectBytes(
    writeSafetensors([{ name: "w", dtype: "F32", shape: [1], data: new Uint8Array(4) }]),
  );
  await rejectsWith(t, openDelta([plain]), "DeltaLayoutInvalid");
  // int8 payload without its scales in front.
  const int8 = await collectBytes(
    writeDelta([{ name: "w", shape: [2], values: new Float32Array([1, 2]) }], "int8-block8"),
  );
  const stripped = await collectBytes(
    writeSafetensors([{ name: "w", dtype: "I8", shape: [2], data: new Uint8Array(2) }], {
      metadata: { "sovereign.format": "sovereign-delta/1", "sovereign.encoding": "int8-block8" },
    }),
  );
  await rejectsWith(t, openDelta([stripped]), "DeltaLayoutInvalid");
  const chunks: unknown[] = [];
  for await (const c of decodeDelta((await openDelta([int8])).stream)) chunks.push(c);
  t.is(chunks.length, 1);
});

function catching(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  return undefined;
}
