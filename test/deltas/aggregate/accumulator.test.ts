// The streaming FedAvg accumulator against a plain reference: exact for a fixed order, within
// the documented bound of the float64 mean, all-or-nothing per delta, counted once.
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import test from "ava";
import fc from "fast-check";
import { Accumulator, type KernelKind, type ModelLayout, SumStorage } from "../../../deltas/aggregate/mod.ts";
import type { DecodedChunk } from "../../../deltas/delta.ts";
import {
  asyncChunks,
  bitsOf,
  chunksOf,
  copyOf,
  float64Mean,
  layoutArbitrary,
  randomTensors,
  referenceMean,
  rejectsWithReason,
  sameBits,
  type Tensors,
  tensorsArbitrary,
} from "./helpers.ts";

const weightArbitrary = fc.oneof(
  fc.integer({ min: 1, max: 2 ** 40 }),
  fc.double({ min: 1e-3, max: 1e6, noNaN: true }),
);
const kernels: KernelKind[] = ["wasm", "js"];

const roundArbitrary = layoutArbitrary.chain((layout) =>
  fc.record({
    layout: fc.constant(layout),
    deltas: fc.array(fc.record({ tensors: tensorsArbitrary(layout), weight: weightArbitrary }), {
      minLength: 1,
      maxLength: 5,
    }),
    sizes: fc.array(fc.integer({ min: 1, max: 13 }), { minLength: 1, maxLength: 3 }),
    kernel: fc.constantFrom(...kernels),
  }),
);

async function aggregate(
  layout: ModelLayout,
  deltas: { tensors: Tensors; weight: number }[],
  sizes: number[],
  kernel: KernelKind,
) {
  const acc = new Accumulator(layout, { kernel });
  for (const [i, d] of deltas.entries()) {
    await acc.add(asyncChunks(chunksOf(layout, d.tensors, sizes)), { weight: d.weight, keys: `delta-${i}` });
  }
  return acc.finish();
}

test("the streamed mean equals the plain reference bit for bit, for any layout, chunking, weights and kernel", async (t) => {
  await fc.assert(
    fc.asyncProperty(roundArbitrary, async ({ layout, deltas, sizes, kernel }) => {
      const result = await aggregate(layout, deltas, sizes, kernel);
      return result.count === deltas.length && sameBits(result.tensors, referenceMean(layout, deltas));
    }),
    { numRuns: 300 },
  );
  t.pass();
});

test("the fp32 mean is within (n + 3)·2⁻²⁴·Σ|wᵢvᵢ|/Σwᵢ of the exact float64 mean", async (t) => {
  let worst = 0;
  await fc.assert(
    fc.asyncProperty(roundArbitrary, async ({ layout, deltas, sizes, kernel }) => {
      const result = await aggregate(layout, deltas, sizes, kernel);
      const exact = float64Mean(layout, deltas);
      const n = deltas.length;
      const total = deltas.reduce((sum, d) => sum + Math.fround(d.weight), 0);
      for (const tensor of layout) {
        const got = result.tensors.get(tensor.name) as Float32Array;
        const { mean, magnitude } = exact.get(tensor.name) as { mean: Float64Array; magnitude: Float64Array };
        for (let i = 0; i < got.length; i++) {
          const error = Math.abs((got[i] as number) - (mean[i] as number));
          // The relative bound, plus half the smallest subnormal per rounding of a sum or
          // product (scaled by the division by Σw) and of the mean itself.
          const bound =
            (n + 3) * 2 ** -24 * (magnitude[i] as number) * 1.0001 + (2 * n * 2 ** -150) / total + 2 ** -150;
          if (error > bound) return false;
          if ((magnitude[i] as number) > 1e-30) worst = Math.max(worst, error / (magnitude[i] as number));
        }
      }
      return true;
    }),
    { numRuns: 300 },
  );
  t.log(`largest error seen: ${(worst / 2 ** -24).toFixed(2)} × 2⁻²⁴ · Σ|wv|/Σw`);
  t.pass();
});

test("the SIMD kernel and the JavaScript kernel agree bit for bit on large tensors cut anywhere", async (t) => {
  const layout = [
    { name: "embed", shape: [97, 131] },
    { name: "mlp.w", shape: [4099] },
    { name: "norm", shape: [3] },
  ];
  const deltas = [1, 2, 3, 4].map((seed) => ({
    tensors: randomTensors(layout, 10 ** -seed, seed),
    weight: 1000 * seed + 7,
  }));
  const reference = referenceMean(layout, deltas);
  for (const sizes of [[1], [5000], [17, 4096, 3], [12707]]) {
    for (const kernel of kernels) {
      const result = await aggregate(layout, deltas, sizes, kernel);
      t.true(sameBits(result.tensors, reference), `kernel ${kernel}, chunks ${sizes}`);
    }
  }
});

// ---------------------------------------------------------------------------------------------
// Staging and rollback

type Failure =
  | { kind: "throw"; at: number }
  | { kind: "nan"; at: number }
  | { kind: "overflow"; at: number }
  | { kind: "truncate"; at: number }
  | { kind: "reshape"; at: number };

/** A delta's chunks with a failure injected at chunk `at` (clamped to the delta's length). */
function* failing(chunks: DecodedChunk[], failure: Failure): Generator<DecodedChunk> {
  const at = Math.min(failure.at, chunks.length - 1);
  for (const [i, chunk] of chunks.entries()) {
    if (i < at) {
      yield chunk;
      continue;
    }
    switch (failure.kind) {
      case "throw":
        throw new Error("the transport dropped the connection");
      case "truncate":
        return;
      case "reshape":
        yield { ...chunk, shape: [...chunk.shape, 1] };
        return;
      case "nan":
      case "overflow": {
        if (chunk.values.length === 0) {
          throw new Error("the transport dropped the connection");
        }
        const values = new Float32Array(chunk.values);
        values[values.length - 1] = failure.kind === "nan" ? Number.NaN : 3e38;
        yield { ...chunk, values };
        return;
      }
    }
  }
  throw new Error("the transport dropped the connection");
}

const failureArbitrary = fc.record({
  kind: fc.constantFrom("throw", "nan", "overflow", "truncate", "reshape"),
  at: fc.nat({ max: 40 }),
}) as fc.Arbitrary<Failure>;

test("a delta failing anywhere leaves the sums, count and weight exactly as before; later deltas are unaffected", async (t) => {
  await fc.assert(
    fc.asyncProperty(roundArbitrary, failureArbitrary, async ({ layout, deltas, sizes, kernel }, failure) => {
      const acc = new Accumulator(layout, { kernel });
      // The failure lands after a random number of good deltas (including none: the zero-fill undo).
      const failAfter = deltas.length >> 1;
      for (const [i, d] of deltas.slice(0, failAfter).entries()) {
        await acc.add(chunksOf(layout, d.tensors, sizes), { weight: d.weight, keys: `good-${i}` });
      }
      const before = copyOf(acc.sums());
      const { count, totalWeight } = acc;
      const bad = deltas[0] as { tensors: Tensors; weight: number };
      const chunks = [...chunksOf(layout, bad.tensors, sizes)];
      const outcome = await acc
        .add(asyncChunks(failing(chunks, failure)), { weight: bad.weight * 1e9, keys: "bad" })
        .then(
          () => "accepted",
          () => "refused",
        );
      // An overflow or NaN in an empty model cannot happen; everything else must be refused.
      if (outcome !== "refused") return false;
      if (!sameBits(acc.sums(), before) || acc.count !== count || acc.totalWeight !== totalWeight)
        return false;
      if (acc.has("bad")) return false;
      for (const [i, d] of deltas.slice(failAfter).entries()) {
        await acc.add(chunksOf(layout, d.tensors, sizes), { weight: d.weight, keys: `late-${i}` });
      }
      const result = await acc.finish();
      return sameBits(result.tensors, referenceMean(layout, deltas));
    }),
    { numRuns: 300 },
  );
  t.pass();
});

test("rollback is bit-exact when the undo journal spilled to disk, and leaves no file behind", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "aggregate-journal-test-"));
  try {
    const layout = [
      { name: "a", shape: [1500, 1000] },
      { name: "b", shape: [1_700_001] },
      { name: "c", shape: [5] },
    ];
    const deltas = [1, 2, 3].map((seed) => ({
      tensors: randomTensors(layout, 0.01, seed),
      weight: seed * 1e6,
    }));
    for (const kernel of kernels) {
      const acc = new Accumulator(layout, { kernel, journal: { memoryBytes: 4 * 2 ** 20, directory: dir } });
      await acc.add(chunksOf(layout, (deltas[0] as { tensors: Tensors }).tensors, [65536]), {
        weight: (deltas[0] as { weight: number }).weight,
        keys: "a",
      });
      const before = copyOf(acc.sums());
      const chunks = [...chunksOf(layout, randomTensors(layout, 1, 99), [65536])];
      await t.throwsAsync(
        acc.add(failing(chunks, { kind: "throw", at: chunks.length }), { weight: 5, keys: "x" }),
        {
          message: /dropped/,
        },
      );
      t.true(acc.spilledBytes >= 8 * 2 ** 20, `spilled ${acc.spilledBytes} bytes`);
      t.true(sameBits(acc.sums(), before));
      t.deepEqual(await readdir(dir), [], "the spill file is unlinked at once");
      for (const [i, d] of deltas.slice(1).entries()) {
        await acc.add(chunksOf(layout, d.tensors, [100_003]), { weight: d.weight, keys: `b${i}` });
      }
      const result = await acc.finish();
      t.true(sameBits(result.tensors, referenceMean(layout, deltas)), kernel);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("when the journal cannot spill (no such directory) the delta fails and is undone from memory", async (t) => {
  const layout = [{ name: "a", shape: [3_300_000] }];
  const acc = new Accumulator(layout, {
    journal: { memoryBytes: 8 * 2 ** 20, directory: "/nonexistent/aggregate" },
  });
  await acc.add(chunksOf(layout, randomTensors(layout, 1, 1), [65536]), { weight: 1, keys: "a" });
  const before = copyOf(acc.sums());
  const err = await t.throwsAsync(
    acc.add(chunksOf(layout, randomTensors(layout, 1, 2), [65536]), { weight: 1, keys: "b" }),
  );
  t.is((err as NodeJS.ErrnoException).code, "ENOENT");
  t.true(sameBits(acc.sums(), before));
  t.is(acc.count, 1);
  const result = await acc.finish();
  t.is(result.count, 1);
});

// ---------------------------------------------------------------------------------------------
// Exactly once

// ---------------------------------------------------------------------------------------------
// Several deltas in one pass (addAll)

const manyArbitrary = layoutArbitrary.chain((layout) =>
  fc.record({
    layout: fc.constant(layout),
    // Up to 6 in a group: more than the kernel's 4 at once, so groups of groups are covered.
    deltas: fc.array(
      fc.record({
        tensors: tensorsArbitrary(layout),
        weight: weightArbitrary,
        // Each delta arrives in its own chunking.
        sizes: fc.array(fc.integer({ min: 1, max: 13 }), { minLength: 1, maxLength: 3 }),
      }),
      { minLength: 1, maxLength: 7 },
    ),
    // How many deltas go in one by one before the group (0: the group starts on zero sums).
    before: fc.nat({ max: 2 }),
    kernel: fc.constantFrom(...kernels),
  }),
);

test("addAll: deltas added in one pass give the sums add() gives one by one, bit for bit, whatever each one's chunking", async (t) => {
  await fc.assert(
    fc.asyncProperty(manyArbitrary, async ({ layout, deltas, before, kernel }) => {
      const acc = new Accumulator(layout, { kernel });
      const first = Math.min(before, deltas.length - 1);
      for (const [i, d] of deltas.slice(0, first).entries()) {
        await acc.add(chunksOf(layout, d.tensors, d.sizes), { weight: d.weight, keys: `one-${i}` });
      }
      const reports = await acc.addAll(
        deltas.slice(first).map((d, i) => ({
          chunks: asyncChunks(chunksOf(layout, d.tensors, d.sizes)),
          weight: d.weight,
          keys: `many-${i}`,
        })),
      );
      if (reports.length !== deltas.length - first) return false;
      const result = await acc.finish();
      return result.count === deltas.length && sameBits(result.tensors, referenceMean(layout, deltas));
    }),
    { numRuns: 300 },
  );
  t.pass();
});

test("addAll on large tensors, each delta cut differently, equals add() one by one in both kernels", async (t) => {
  const layout = [
    { name: "embed", shape: [97, 131] },
    { name: "mlp.w", shape: [4099] },
    { name: "norm", shape: [3] },
  ];
  const deltas = [1, 2, 3, 4, 5].map((seed) => ({
    tensors: randomTensors(layout, 10 ** -seed, seed),
    weight: 1000 * seed + 7,
  }));
  const reference = referenceMean(layout, deltas);
  // Pieces are as long as the shortest chunk at hand, so no delta is cut very fine here (the
  // property test above covers fine cuts, which run the kernel's scalar tail).
  const cuts = [[5000], [17, 4096, 3], [12707], [4096], [6000, 100]];
  for (const kernel of kernels) {
    const acc = new Accumulator(layout, { kernel });
    await acc.addAll(
      deltas.map((d, i) => ({
        chunks: asyncChunks(chunksOf(layout, d.tensors, cuts[i])),
        weight: d.weight,
        keys: `d${i}`,
      })),
    );
    t.true(sameBits((await acc.finish()).tensors, reference), `kernel ${kernel}`);
  }
});

test("addAll: one delta failing anywhere rolls the whole group back bit for bit; the rest then add as usual", async (t) => {
  await fc.assert(
    fc.asyncProperty(
      manyArbitrary,
      failureArbitrary,
      fc.nat(),
      async ({ layout, deltas, before, kernel }, failure, which) => {
        const acc = new Accumulator(layout, { kernel });
        const first = Math.min(before, deltas.length - 1);
        for (const [i, d] of deltas.slice(0, first).entries()) {
          await acc.add(chunksOf(layout, d.tensors, d.sizes), { weight: d.weight, keys: `one-${i}` });
        }
        const sums = copyOf(acc.sums());
        const { count, totalWeight } = acc;
        const group = deltas.slice(first);
        const bad = which % group.length;
        const outcome = await acc
          .addAll(
            group.map((d, i) => {
              const chunks = [...chunksOf(layout, d.tensors, d.sizes)];
              return {
                chunks: asyncChunks(i === bad ? failing(chunks, failure) : chunks),
                weight: i === bad ? d.weight * 1e9 : d.weight,
                keys: `many-${i}`,
              };
            }),
          )
          .then(
            () => "accepted",
            () => "refused",
          );
        if (outcome !== "refused") return false;
        if (!sameBits(acc.sums(), sums) || acc.count !== count || acc.totalWeight !== totalWeight)
          return false;
        if (group.some((_, i) => acc.has(`many-${i}`))) return false;
        await acc.addAll(
          group.map((d, i) => ({
            chunks: chunksOf(layout, d.tensors, d.sizes),
            weight: d.weight,
            keys: `again-${i}`,
          })),
        );
        return sameBits((await acc.finish()).tensors, referenceMean(layout, deltas));
      },
    ),
    { numRuns: 300 },
  );
  t.pass();
});

test("addAll: deltas in different tensor orders, duplicates within the group and bad weights are refused and change nothing", async (t) => {
  const layout = [
    { name: "w", shape: [40, 3] },
    { name: "b", shape: [3] },
  ];
  const acc = new Accumulator(layout);
  const d1 = randomTensors(layout, 1, 1);
  const d2 = randomTensors(layout, 1, 2);
  await acc.add(chunksOf(layout, d1), { weight: 3, keys: "first" });
  const sums = bitsOf(acc.sums());
  await rejectsWithReason(
    t,
    acc.addAll([
      { chunks: chunksOf(layout, d1, [7]), weight: 1, keys: "x" },
      { chunks: chunksOf([...layout].reverse(), d2, [5]), weight: 1, keys: "y" },
    ]),
    "AggregateOrderMismatch",
  );
  await rejectsWithReason(
    t,
    acc.addAll([
      { chunks: chunksOf(layout, d1), weight: 1, keys: ["x", "slot"] },
      { chunks: chunksOf(layout, d2), weight: 1, keys: ["y", "slot"] },
    ]),
    "AggregateDuplicateDelta",
  );
  await rejectsWithReason(
    t,
    acc.addAll([
      { chunks: chunksOf(layout, d1), weight: 1, keys: "x" },
      { chunks: chunksOf(layout, d2), weight: 1, keys: "first" },
    ]),
    "AggregateDuplicateDelta",
  );
  await rejectsWithReason(
    t,
    acc.addAll([
      { chunks: chunksOf(layout, d1), weight: 1, keys: "x" },
      { chunks: chunksOf(layout, d2), weight: Number.NaN, keys: "y" },
    ]),
    "AggregateWeightInvalid",
  );
  await rejectsWithReason(t, acc.addAll([]), "AggregateConfigInvalid");
  t.deepEqual(bitsOf(acc.sums()), sums);
  t.is(acc.count, 1);
  t.false(acc.has("x") || acc.has("y"));
});

test("SumStorage.addMany equals add() called in order, bit for bit, in both kernels, and reports a non-finite sum from any delta", (t) => {
  const n = 3 * 4096 + 77;
  for (const kind of kernels) {
    for (let k = 1; k <= 6; k++) {
      const values = Array.from(
        { length: k },
        (_, i) => randomTensors([{ name: "v", shape: [n] }], 10 ** -i, i + 1).get("v") as Float32Array,
      );
      const weights = values.map((_, i) => Math.fround(1.5 + i * 0.37));
      const one = new SumStorage([5, n], kind);
      const many = new SumStorage([5, n], kind);
      for (const [i, v] of values.entries()) t.true(one.add(1, 0, v, weights[i] as number));
      t.true(many.addMany(1, 0, values, weights));
      t.deepEqual(
        [
          ...new Uint32Array(
            (many.views[1] as Float32Array).buffer,
            (many.views[1] as Float32Array).byteOffset,
            n,
          ),
        ],
        [
          ...new Uint32Array(
            (one.views[1] as Float32Array).buffer,
            (one.views[1] as Float32Array).byteOffset,
            n,
          ),
        ],
        `${kind}, ${k} deltas`,
      );
      for (let bad = 0; bad < k; bad++) {
        const poisoned = values.map((v, i) => {
          if (i !== bad) return v;
          const copy = new Float32Array(v);
          copy[(bad * 4099) % n] = 3e38; // w · 3e38 overflows to +Inf
          return copy;
        });
        t.false(
          new SumStorage([n], kind).addMany(0, 0, poisoned, weights),
          `${kind}, ${k} deltas, #${bad} overflows`,
        );
      }
    }
  }
});

const layout = [
  { name: "w", shape: [4, 3] },
  { name: "b", shape: [3] },
];

test("the same delta delivered twice (by any of its keys) is counted once; a failed one may be retried", async (t) => {
  const acc = new Accumulator(layout);
  const d1 = randomTensors(layout, 1, 1);
  const d2 = randomTensors(layout, 1, 2);
  await acc.add(chunksOf(layout, d1), { weight: 10, keys: ["sha256:aa", "slot:run/1/eu/l0"] });
  const after = bitsOf(acc.sums());
  await rejectsWithReason(
    t,
    acc.add(chunksOf(layout, d1), { weight: 10, keys: ["sha256:aa", "slot:run/1/eu/l0"] }),
    "AggregateDuplicateDelta",
  );
  // A re-signed, different delta for the same slot is a duplicate too.
  await rejectsWithReason(
    t,
    acc.add(chunksOf(layout, d2), { weight: 10, keys: ["sha256:bb", "slot:run/1/eu/l0"] }),
    "AggregateDuplicateDelta",
  );
  t.deepEqual(bitsOf(acc.sums()), after);
  // A delta that failed was not accepted: its retry counts.
  await t.throwsAsync(
    acc.add(failing([...chunksOf(layout, d2)], { kind: "throw", at: 1 }), { weight: 5, keys: "c" }),
  );
  t.false(acc.has("c"));
  await acc.add(chunksOf(layout, d2), { weight: 5, keys: "c" });
  const result = await acc.finish();
  t.is(result.count, 2);
  t.deepEqual(result.keys, ["sha256:aa", "slot:run/1/eu/l0", "c"]);
  t.true(
    sameBits(
      result.tensors,
      referenceMean(layout, [
        { tensors: d1, weight: 10 },
        { tensors: d2, weight: 5 },
      ]),
    ),
  );
});

test("concurrent deliveries of one delta are serialised: one is accepted, the other refused as a duplicate", async (t) => {
  const acc = new Accumulator(layout);
  const d = randomTensors(layout, 1, 3);
  const outcomes = await Promise.allSettled([
    acc.add(asyncChunks(chunksOf(layout, d, [1])), { weight: 3, keys: "k" }),
    acc.add(asyncChunks(chunksOf(layout, d, [2])), { weight: 3, keys: "k" }),
    acc.add(asyncChunks(chunksOf(layout, d, [5])), { weight: 3, keys: "k" }),
  ]);
  t.deepEqual(
    outcomes.map((o) => o.status),
    ["fulfilled", "rejected", "rejected"],
  );
  const result = await acc.finish();
  t.is(result.count, 1);
  t.true(sameBits(result.tensors, referenceMean(layout, [{ tensors: d, weight: 3 }])));
});

// ---------------------------------------------------------------------------------------------
// Refusals

const chunk = (
  name: string,
  shape: number[],
  offset: number,
  values: number[],
  last: boolean,
): DecodedChunk => ({
  name,
  shape,
  offset,
  values: new Float32Array(values),
  last,
});
const w = (offset: number, n: number, last: boolean) =>
  chunk(
    "w",
    [4, 3],
    offset,
    Array.from({ length: n }, (_, i) => i + offset),
    last,
  );
const b = chunk("b", [3], 0, [1, 2, 3], true);

test("deltas that do not match the model are refused with a reason, and change nothing", async (t) => {
  const cases: [string, DecodedChunk[], Parameters<typeof rejectsWithReason>[2]][] = [
    [
      "an extra tensor",
      [w(0, 12, true), b, chunk("lm_head", [2], 0, [1, 1], true)],
      "AggregateTensorUnexpected",
    ],
    [
      "a tensor of another shape",
      [chunk("w", [3, 4], 0, new Array(12).fill(1), true), b],
      "AggregateShapeMismatch",
    ],
    ["a missing tensor", [w(0, 12, true)], "AggregateTensorMissing"],
    ["a truncated tensor", [b, w(0, 5, false)], "AggregateTensorMissing"],
    ["a gap", [w(0, 5, false), w(6, 6, true), b], "AggregateChunkInvalid"],
    ["an overlap", [w(0, 5, false), w(4, 8, true), b], "AggregateChunkInvalid"],
    ["an overrun", [w(0, 12, false), w(12, 1, true), b], "AggregateChunkInvalid"],
    ["a wrong last flag", [w(0, 12, false), b], "AggregateChunkInvalid"],
    ["a tensor sent twice", [w(0, 12, true), b, w(0, 12, true)], "AggregateChunkInvalid"],
    ["interleaved tensors", [w(0, 5, false), b, w(5, 7, true)], "AggregateChunkInvalid"],
  ];
  const acc = new Accumulator(layout);
  await acc.add([w(0, 12, true), b], { weight: 2, keys: "good" });
  const before = bitsOf(acc.sums());
  for (const [what, chunks, reason] of cases) {
    await rejectsWithReason(t, acc.add(chunks, { weight: 1, keys: what }), reason);
    t.deepEqual(bitsOf(acc.sums()), before, what);
  }
  t.is(acc.count, 1);
});

test("weights must be finite and positive in fp32; keys must be given", async (t) => {
  const acc = new Accumulator(layout);
  for (const weight of [0, -1, Number.NaN, Number.POSITIVE_INFINITY, 1e-50, 1e39]) {
    await rejectsWithReason(t, acc.add([w(0, 12, true), b], { weight, keys: "k" }), "AggregateWeightInvalid");
  }
  await rejectsWithReason(t, acc.add([w(0, 12, true), b], { weight: 1, keys: [] }), "AggregateConfigInvalid");
  t.is(acc.count, 0);
});

test("an invalid model layout is refused", (t) => {
  for (const bad of [
    [{ name: "", shape: [1] }],
    [
      { name: "a", shape: [1] },
      { name: "a", shape: [2] },
    ],
    [{ name: "a", shape: [-1] }],
    [{ name: "a", shape: [1.5] }],
  ]) {
    t.throws(() => new Accumulator(bad), { message: /^AggregateLayoutInvalid/ });
  }
});

test("finishing needs a delta; a finished accumulator takes no more", async (t) => {
  const acc = new Accumulator(layout);
  await rejectsWithReason(t, acc.finish(), "AggregateEmpty");
  await acc.add([w(0, 12, true), b], { weight: 4, keys: "a" });
  const result = await acc.finish();
  t.deepEqual([...(result.tensors.get("b") ?? [])], [1, 2, 3]);
  t.is(result.totalWeight, 4);
  await rejectsWithReason(t, acc.add([w(0, 12, true), b], { weight: 1, keys: "b" }), "AggregateClosed");
  await rejectsWithReason(t, acc.finish(), "AggregateClosed");
});

test("aborting a delta mid-stream rolls it back", async (t) => {
  const acc = new Accumulator(layout);
  await acc.add([w(0, 12, true), b], { weight: 1, keys: "a" });
  const before = bitsOf(acc.sums());
  const controller = new AbortController();
  async function* slow() {
    yield w(0, 5, false);
    controller.abort();
    yield w(5, 7, true);
    yield b;
  }
  await rejectsWithReason(
    t,
    acc.add(slow(), { weight: 1, keys: "b", signal: controller.signal }),
    "AggregateAborted",
  );
  t.deepEqual(bitsOf(acc.sums()), before);
  t.is(acc.count, 1);
});

// Serial, so that it runs alone in this process. The chunk buffer is reused: the decoder's
// garbage is not the accumulator's (bench/aggregate.ts measures the whole path).
test.serial("memory: three 64 MiB deltas streamed in grow RSS by about one model, not three", async (t) => {
  const mib = 64;
  const elements = (mib * 2 ** 20) / 4;
  const big = [{ name: "x", shape: [elements / 1024, 1024] }];
  const acc = new Accumulator(big, { journal: { memoryBytes: 16 * 2 ** 20 } });
  const chunkElements = 1 << 18;
  const buffer = new Float32Array(chunkElements);
  function* stream(seed: number): Generator<DecodedChunk> {
    for (let at = 0; at < elements; at += chunkElements) {
      const values = buffer.fill(seed);
      yield {
        name: "x",
        shape: big[0]?.shape as number[],
        offset: at,
        values,
        last: at + chunkElements === elements,
      };
    }
  }
  const before = process.memoryUsage().rss;
  let peak = before;
  const sample = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage().rss);
  }, 5);
  for (const seed of [1, 2, 3]) await acc.add(stream(seed), { weight: seed, keys: `d${seed}` });
  const result = await acc.finish();
  clearInterval(sample);
  peak = Math.max(peak, process.memoryUsage().rss);
  const x = result.tensors.get("x") as Float32Array;
  t.is(x[0], Math.fround((1 + 4 + 9) / 6));
  t.is(x[elements - 1], x[0]);
  const grew = (peak - before) / 2 ** 20;
  t.log(
    `RSS grew by ${grew.toFixed(0)} MiB aggregating 3 × ${mib} MiB (undo journal spilled ${acc.spilledBytes >> 20} MiB)`,
  );
  // One model (64 MiB) + the journal's 16 MiB in memory + slack, not 3 × 64.
  t.true(grew < mib + 48, `grew ${grew} MiB`);
});

test("sums of a model larger than one 4 GiB WebAssembly memory are spread over several, and a tensor beyond 4 GiB gets a plain array", (t) => {
  // Memory is committed only where written, so this needs little RSS.
  const sizes = [700_000_000, 700_000_000, 5, 1_100_000_000];
  const storage = new SumStorage(sizes, "wasm");
  t.is(storage.kind, "wasm");
  const ones = new Float32Array(9).fill(1);
  sizes.forEach((n, i) => {
    t.true(storage.add(i, 0, ones.subarray(0, Math.min(9, n)), i + 1));
    t.true(storage.add(i, n - Math.min(9, n), ones.subarray(0, Math.min(9, n)), i + 1));
  });
  sizes.forEach((n, i) => {
    const view = storage.views[i] as Float32Array;
    t.is(view.length, n);
    t.is(view[0], n <= 9 ? 2 * (i + 1) : i + 1);
    t.is(view[n - 1], n <= 9 ? 2 * (i + 1) : i + 1);
    if (n > 20) t.is(view[10], 0);
  });
});
