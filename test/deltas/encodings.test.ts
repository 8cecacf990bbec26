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

test("int4 per-block on a known input: scales are absmax/7, codes packed low nibble first as two's complement", (t) => {
  // Powers of two keep the scales and ratios exact, so the ties are real ties.
  const values = new Float32Array([
    0.875, -0.4375, 0.0625, -0.875, 0, 0.1875, 0, 0, -1.75, 0.375, 0.125, -0.125, 0, 0, 0, 0,
  ]);
  const parsed = parseEncoding("int4-block8");
  const encoded = encodeValues("w", values, [2, 8], parsed);
  t.is(encoded.payload.dtype, "U8");
  const scales = [0.875 / 7, 1.75 / 7];
  t.deepEqual([...(encoded.scales ?? [])], scales);
  // Expected codes from the definition, in double as the encoder computes them.
  const codes = [...values].map((x, i) => {
    const r = x / (scales[Math.floor(i / 8)] as number);
    return Math.max(-7, Math.min(7, r < 0 ? -Math.round(-r) : Math.round(r)));
  });
  t.deepEqual(codes.slice(0, 6), [7, -4, 1, -7, 0, 2]); // ±k.5 round away from zero
  t.deepEqual(codes.slice(8, 12), [-7, 2, 1, -1]);
  const nibble = (q: number) => q & 0xf;
  t.deepEqual(
    [...encoded.payload.bytes],
    Array.from(
      { length: 8 },
      (_, i) => nibble(codes[2 * i] as number) | (nibble(codes[2 * i + 1] as number) << 4),
    ),
  );
  t.is(encoded.payload.bytes[0], 0xc7); // 7 low, −4 high
  const decoded = decodeValues(encoded, [2, 8], parsed);
  t.deepEqual(
    [...decoded],
    codes.map((q, i) => Math.fround(q * (scales[Math.floor(i / 8)] as number))),
  );
});

test("int4 packs tensors whose last dimension is even; scalars and odd last dimensions fall back to int8 with int4's blocks", async (t) => {
  const parsed = parseEncoding("int4-block8");
  const values = gaussian(2 * 15, 1, 5);
  const odd = encodeValues("odd", values, [2, 15], parsed);
  t.is(odd.payload.dtype, "I8");
  t.is(odd.payload.bytes.byteLength, 30);
  t.is(odd.scales?.length, Math.ceil(30 / 8));
  const asInt8 = encodeValues("odd", values, [2, 15], parseEncoding("int8-block8"));
  t.deepEqual(odd, asInt8);
  const scalar = encodeValues("s", new Float32Array([-0.5]), [], parsed);
  t.is(scalar.payload.dtype, "I8");
  t.deepEqual([...new Int8Array(scalar.payload.bytes.buffer)], [-127]);
  const file = await collectBytes(
    writeDelta(
      [
        { name: "even", shape: [3, 4, 10], values: gaussian(120, 1, 6) },
        { name: "odd", shape: [2, 15], values },
        { name: "scalar", shape: [], values: new Float32Array([-0.5]) },
        { name: "empty", shape: [4, 0], values: new Float32Array(0) },
        { name: "empty.odd", shape: [0, 3], values: new Float32Array(0) },
      ],
      "int4-block8",
    ),
  );
  const { stream, layout } = await openDelta([file]);
  t.deepEqual(
    stream.header.tensors.map((x) => `${x.name} ${x.dtype} [${x.shape.join(",")}]`),
    [
      "even:scale F32 [15]",
      "even U8 [3,4,5]",
      "odd:scale F32 [4]",
      "odd I8 [2,15]",
      "scalar:scale F32 [1]",
      "scalar I8 []",
      "empty:scale F32 [0]",
      "empty U8 [4,0]",
      "empty.odd:scale F32 [0]",
      "empty.odd I8 [0,3]",
    ],
  );
  t.deepEqual(
    layout.tensors.map((x) => [x.name, x.shape]),
    [
      ["even", [3, 4, 10]],
      ["odd", [2, 15]],
      ["scalar", []],
      ["empty", [4, 0]],
      ["empty.odd", [0, 3]],
    ],
  );
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
    [
      "fp32",
      "bf16",
      "fp16",
      "int8-row",
      "int8-block128",
      "int8-block64",
      "int4-block64",
      "int4-block32",
    ] as DeltaEncoding[]
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
  // int4 with fp32 scales: half a byte a value plus 4 bytes per block.
  t.is(by["int4-block64"]?.ratio, (0.5 + 4 / 64) / 4);
  t.is(by["int4-block32"]?.ratio, (0.5 + 4 / 32) / 4);
  t.true((by["int4-block32"]?.relativeError ?? 1) < (by["int4-block64"]?.relativeError ?? 0));
  t.true((by["int8-block64"]?.relativeError ?? 1) < (by["int4-block32"]?.relativeError ?? 0));
});

/**
 * Every decoded value within half a quantisation step of its block's scale, plus rounding slack.
 * Scales that underflow (absmax below ~2^-143) decode to zero: hence the absolute slack.
 */
function withinHalfStep(
  values: Float32Array,
  decoded: Float32Array,
  scales: Float32Array | undefined,
  block: number,
): boolean {
  return values.every((x, i) => {
    const scale = scales?.[Math.floor(i / block)] as number;
    return (
      Math.abs(x - (decoded[i] as number)) <=
      scale / 2 + scale * 2 ** -20 + Math.abs(x) * 2 ** -22 + 2 ** -140
    );
  });
}

test("int8 error never exceeds half a quantisation step (property)", (t) => {
  fc.assert(
    fc.property(
      fc.float32Array({ noNaN: true, noDefaultInfinity: true, minLength: 1, maxLength: 300 }),
      (values) => {
        const parsed = parseEncoding("int8-block16");
        const encoded = encodeValues("w", values, [values.length], parsed);
        const decoded = decodeValues(encoded, [values.length], parsed);
        return withinHalfStep(values, decoded, encoded.scales, 16);
      },
    ),
    { numRuns: 2000 },
  );
  t.pass();
});

test("int4 error never exceeds half a quantisation step, packed or in its int8 fallback (property)", (t) => {
  fc.assert(
    fc.property(
      fc.float32Array({ noNaN: true, noDefaultInfinity: true, minLength: 1, maxLength: 301 }),
      (values) => {
        const parsed = parseEncoding("int4-block16");
        const encoded = encodeValues("w", values, [values.length], parsed);
        const packed = values.length % 2 === 0;
        if (encoded.payload.dtype !== (packed ? "U8" : "I8")) return false;
        const decoded = decodeValues(encoded, [values.length], parsed);
        return withinHalfStep(values, decoded, encoded.scales, 16);
      },
    ),
    { numRuns: 2000 },
  );
  // Near the top of fp32 the scale is stepped down so that 7·scale stays finite.
  const huge = new Float32Array([3.4028234663852886e38, -3.4028234663852886e38, 1, 0, 3e38, 0, 0, 0]);
  const decoded = decodeValues(
    encodeValues("w", huge, [8], parseEncoding("int4-block8")),
    [8],
    parseEncoding("int4-block8"),
  );
  t.true(decoded.every(Number.isFinite));
  t.true(Math.abs((decoded[0] as number) - (huge[0] as number)) <= (huge[0] as number) / 14 + 1e32);
});

test("a delta round-trips through every encoding while decoded chunk by chunk", async (t) => {
  const a = gaussian(3 * 50, 1, 1);
  const b = gaussian(37, 1e-3, 2);
  const c = new Float32Array([0.25]);
  const shapes: Record<string, number[]> = { "layer.a": [3, 50], "layer.b": [37], scalar: [], empty: [0] };
  for (const encoding of [
    "fp32",
    "bf16",
    "fp16",
    "int8-row",
    "int8-block8",
    "int4-block8",
    "int4-block64",
  ] as DeltaEncoding[]) {
    const file = await collectBytes(
      writeDelta(
        [
          { name: "layer.a", shape: [3, 50], values: a },
          { name: "layer.b", shape: [37], values: () => b },
          { name: "scalar", shape: [], values: c },
          { name: "empty", shape: [0], values: new Float32Array(0) },
        ],
        encoding,
      ),
    );
    const { layout, stream } = await openDelta(chunked(file, [5, 11, 3]));
    t.is(layout.encoding, encoding);
    // Chunks carry the model's shapes and follow each other without gaps, whatever the payload.
    const decoded = new Map<string, Float32Array>();
    for await (const chunk of decodeDelta(stream)) {
      t.deepEqual(chunk.shape, shapes[chunk.name], `${encoding} ${chunk.name} shape`);
      const before = decoded.get(chunk.name) ?? new Float32Array(0);
      t.is(chunk.offset, before.length, `${encoding} ${chunk.name} offset`);
      const joined = new Float32Array(before.length + chunk.values.length);
      joined.set(before);
      joined.set(chunk.values, before.length);
      decoded.set(chunk.name, joined);
    }
    for (const [name, original, shape] of [
      ["layer.a", a, [3, 50]],
      ["layer.b", b, [37]],
      ["scalar", c, []],
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
  for (const encoding of ["fp32", "bf16", "fp16", "int4-block64"] as DeltaEncoding[]) {
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
  for (const name of ["int4", "int4-block7", "int4-block6", "int4-block01", `int4-block${2 ** 20 + 2}`]) {
    t.true(
      isDeltaError(
        catching(() => parseEncoding(name)),
        "EncodingUnknown",
      ),
      name,
    );
  }
  t.deepEqual(parseEncoding("int4-block8"), { kind: "int4-block", blockSize: 8 });
  t.deepEqual(parseEncoding(`int4-block${2 ** 20}`), { kind: "int4-block", blockSize: 2 ** 20 });
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

test("int4 layouts the writer never produces are refused before any data is read, and truncated payloads while reading", async (t) => {
  const { writeSafetensors } = await import("../../deltas/mod.ts");
  type Entry = { name: string; dtype: "F32" | "U8" | "I8"; shape: number[] };
  const file = (encoding: string, tensors: Entry[]) =>
    collectBytes(
      writeSafetensors(
        tensors.map((x) => ({
          ...x,
          data: new Uint8Array(x.shape.reduce((a, b) => a * b, 1) * (x.dtype === "F32" ? 4 : 1)),
        })),
        { metadata: { "sovereign.format": "sovereign-delta/1", "sovereign.encoding": encoding } },
      ),
    );
  const scales = (n: number) => ({ name: "w:scale", dtype: "F32" as const, shape: [n] });
  // The well-formed one first, so that each refusal below is for the one thing changed.
  const good = await file("int4-block8", [scales(4), { name: "w", dtype: "U8", shape: [2, 8] }]);
  const { layout } = await openDelta([good]);
  t.deepEqual(layout.tensors[0]?.shape, [2, 16]);
  const cases: Array<[string, string, Entry[]]> = [
    ["I8 for an even last dimension", "int4-block8", [scales(4), { name: "w", dtype: "I8", shape: [2, 16] }]],
    ["I8 with the packed shape", "int4-block8", [scales(2), { name: "w", dtype: "I8", shape: [2, 8] }]],
    ["U8 under an int8 encoding", "int8-block8", [scales(4), { name: "w", dtype: "U8", shape: [2, 8] }]],
    ["U8 scalar", "int4-block8", [scales(1), { name: "w", dtype: "U8", shape: [] }]],
    ["F32 payload", "int4-block8", [scales(4), { name: "w", dtype: "F32", shape: [2, 16] }]],
    [
      "scales counted on the packed shape",
      "int4-block8",
      [scales(2), { name: "w", dtype: "U8", shape: [2, 8] }],
    ],
    ["scales missing", "int4-block8", [{ name: "w", dtype: "U8", shape: [2, 8] }]],
  ];
  for (const [what, encoding, tensors] of cases) {
    await rejectsWith(t, openDelta([await file(encoding, tensors)]), "DeltaLayoutInvalid");
    t.log(`refused: ${what}`);
  }
  // A packed payload cut short: the chunks before the cut are handed on, then the read fails.
  const real = await collectBytes(
    writeDelta([{ name: "w", shape: [4, 10], values: gaussian(40, 1, 3) }], "int4-block8"),
  );
  const cut = real.subarray(0, real.byteLength - 3);
  let handedOn = 0;
  const drained = (async () => {
    for await (const chunk of decodeDelta((await openDelta(chunked(cut, [7]))).stream))
      handedOn += chunk.values.length;
  })();
  await rejectsWith(t, drained, "DeltaTruncated");
  t.is(handedOn, 2 * (20 - 3), "every whole byte that arrived gave its two values");
});

function catching(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  return undefined;
}
