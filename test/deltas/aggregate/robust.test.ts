// Robust rules against straightforward references, and against outlier regions.
import test from "ava";
import fc from "fast-check";
import {
  coordinateMedian,
  type DeltaArrays,
  DeltaCollector,
  elementCount,
  krum,
  type ModelLayout,
  modelBytes,
  trimCount,
  trimmedMean,
} from "../../../deltas/aggregate/mod.ts";
import type { DecodedChunk } from "../../../deltas/delta.ts";
import { gaussian } from "../helpers.ts";
import {
  chunksOf,
  layoutArbitrary,
  randomTensors,
  rejectsWithReason,
  sameBits,
  type Tensors,
  tensorsArbitrary,
} from "./helpers.ts";

/** All of a delta's values in layout order, as one vector. */
function flatten(layout: ModelLayout, tensors: ReadonlyMap<string, Float32Array>): number[] {
  return layout.flatMap((t) => [...(tensors.get(t.name) as Float32Array)]);
}

function referenceCoordinatewise(
  layout: ModelLayout,
  deltas: DeltaArrays[],
  reduce: (sortedValues: number[]) => number,
): Tensors {
  return new Map(
    layout.map((t) => {
      const out = new Float32Array(elementCount(t.shape));
      for (let i = 0; i < out.length; i++) {
        const column = deltas
          .map((d) => (d.tensors.get(t.name) as Float32Array)[i] as number)
          .sort((a, b) => a - b);
        out[i] = reduce(column);
      }
      return [t.name, out];
    }),
  );
}

const roundArbitrary = layoutArbitrary.chain((layout) =>
  fc.record({
    layout: fc.constant(layout),
    deltas: fc.array(tensorsArbitrary(layout), { minLength: 1, maxLength: 9 }),
  }),
);

test("coordinate median and trimmed mean equal a sort-per-coordinate reference", async (t) => {
  await fc.assert(
    fc.property(roundArbitrary, fc.nat(), ({ layout, deltas }, trimSeed) => {
      const input = deltas.map((tensors) => ({ tensors }));
      const n = input.length;
      const median = coordinateMedian(layout, input);
      const expectedMedian = referenceCoordinatewise(layout, input, (v) =>
        n % 2 ? (v[n >> 1] as number) : ((v[(n >> 1) - 1] as number) + (v[n >> 1] as number)) / 2,
      );
      const k = trimSeed % Math.ceil(n / 2);
      const trimmed = trimmedMean(layout, input, { trim: k });
      const expectedTrimmed = referenceCoordinatewise(layout, input, (v) => {
        let sum = 0;
        for (let i = k; i < n - k; i++) sum += v[i] as number;
        return sum / (n - 2 * k);
      });
      return sameBits(median, expectedMedian) && sameBits(trimmed, expectedTrimmed);
    }),
    { numRuns: 300 },
  );
  t.pass();
});

/** Krum written out plainly over whole flattened vectors. */
function referenceKrum(layout: ModelLayout, deltas: DeltaArrays[], f: number, m: number) {
  const vectors = deltas.map((d) => flatten(layout, d.tensors));
  const n = vectors.length;
  const distance = (a: number[], b: number[]) => {
    let s = 0;
    for (let i = 0; i < a.length; i++) s += ((a[i] as number) - (b[i] as number)) ** 2;
    return s;
  };
  const scores = vectors.map((v, i) =>
    vectors
      .filter((_, j) => j !== i)
      .map((u) => distance(v, u))
      .sort((a, b) => a - b)
      .slice(0, n - f - 2)
      .reduce((s, x) => s + x, 0),
  );
  const order = scores
    .map((_, i) => i)
    .sort((a, b) => (scores[a] as number) - (scores[b] as number) || a - b);
  return { scores, selected: order.slice(0, m) };
}

test("Krum and Multi-Krum select what the plain reference selects", async (t) => {
  await fc.assert(
    fc.property(
      layoutArbitrary.chain((layout) =>
        fc.record({
          layout: fc.constant(layout),
          deltas: fc.array(tensorsArbitrary(layout), { minLength: 3, maxLength: 9 }),
          f: fc.nat({ max: 3 }),
          m: fc.integer({ min: 1, max: 4 }),
        }),
      ),
      ({ layout, deltas, f: fRaw, m: mRaw }) => {
        const n = deltas.length;
        const f = Math.min(fRaw, Math.floor((n - 3) / 2));
        const m = Math.min(mRaw, n - f);
        const input = deltas.map((tensors) => ({ tensors }));
        const got = krum(layout, input, { f, m });
        const expected = referenceKrum(layout, input, f, m);
        const close = got.scores.every(
          (s, i) =>
            Math.abs(s - (expected.scores[i] as number)) <= 1e-9 * Math.max(1, expected.scores[i] as number),
        );
        // Equal scores may be ordered differently only if they differ by rounding; require equality otherwise.
        return close && JSON.stringify(got.selected) === JSON.stringify(expected.selected);
      },
    ),
    { numRuns: 200 },
  );
  t.pass();
});

// ---------------------------------------------------------------------------------------------
// Against outliers

const layout: ModelLayout = [
  { name: "w", shape: [64, 32] },
  { name: "b", shape: [32] },
];

/** Honest deltas: a common direction plus small per-region noise. */
function honest(count: number, seed: number): DeltaArrays[] {
  const direction = randomTensors(layout, 0.01, seed);
  return Array.from({ length: count }, (_, r) => {
    const noise = randomTensors(layout, 0.001, seed * 100 + r + 1);
    return {
      keys: [`honest-${r}`],
      tensors: new Map(
        layout.map((t) => {
          const d = direction.get(t.name) as Float32Array;
          const e = noise.get(t.name) as Float32Array;
          return [t.name, d.map((x, i) => x + (e[i] as number))];
        }),
      ),
    };
  });
}

function outlier(name: string, seed: number, scale: number): DeltaArrays {
  return { keys: [name], tensors: randomTensors(layout, scale, seed) };
}

/** Whether every coordinate of `result` lies within the honest deltas' range there. */
function withinHonestRange(result: ReadonlyMap<string, Float32Array>, good: DeltaArrays[]): boolean {
  return layout.every((t) => {
    const r = result.get(t.name) as Float32Array;
    return r.every((x, i) => {
      const column = good.map((d) => (d.tensors.get(t.name) as Float32Array)[i] as number);
      return x >= Math.min(...column) - 1e-9 && x <= Math.max(...column) + 1e-9;
    });
  });
}

test("median and trimmed mean stay within the honest regions' range despite an outlier region; the mean does not", (t) => {
  const good = honest(4, 1);
  const deltas = [...good.slice(0, 2), outlier("byzantine", 9, 1000), ...good.slice(2)];
  t.true(withinHonestRange(coordinateMedian(layout, deltas), good));
  t.true(withinHonestRange(trimmedMean(layout, deltas, { trim: 1 }), good));
  t.false(
    withinHonestRange(trimmedMean(layout, deltas, { trim: 0 }), good),
    "the plain mean is dragged away",
  );
  // trimFraction from the run spec: ⌊0.2 · 5⌋ = 1
  t.is(trimCount(5, 0.2), 1);
  t.throws(() => trimCount(5, 0.5), { message: /^AggregateConfigInvalid/ });
});

test("Krum picks an honest delta and Multi-Krum only honest ones with f Byzantine regions, colluding or not", (t) => {
  const good = honest(5, 2);
  const colluding = outlier("byzantine-a", 7, 0.05);
  const cases: [string, DeltaArrays[]][] = [
    [
      "two far outliers",
      [outlier("byzantine-a", 7, 1), ...good.slice(0, 3), outlier("byzantine-b", 8, 1), ...good.slice(3)],
    ],
    [
      "two colluding outliers sending the same delta",
      [...good.slice(0, 2), colluding, { ...colluding, keys: ["byzantine-b"] }, ...good.slice(2)],
    ],
    [
      "an outlier near the honest cluster's scale",
      [outlier("byzantine-a", 7, 0.01), outlier("byzantine-b", 8, 0.01), ...good],
    ],
  ];
  for (const [what, deltas] of cases) {
    const honestIndices = deltas.flatMap((d, i) => ((d.keys?.[0] ?? "").startsWith("honest") ? [i] : []));
    const single = krum(layout, deltas, { f: 2 });
    t.true(honestIndices.includes(single.selected[0] as number), `${what}: Krum chose ${single.selected}`);
    t.true(sameBits(single.tensors, (deltas[single.selected[0] as number] as DeltaArrays).tensors));
    const multi = krum(layout, deltas, { f: 2, m: 3 });
    t.true(
      multi.selected.every((i) => honestIndices.includes(i)),
      `${what}: Multi-Krum chose ${multi.selected}`,
    );
    t.true(withinHonestRange(multi.tensors, good), what);
  }
});

test("Krum needs n ≥ 2f + 3 and 1 ≤ m ≤ n − f; Multi-Krum can weight by tokens", (t) => {
  const good = honest(5, 3);
  t.throws(() => krum(layout, good, { f: 2 }), { message: /^AggregateTooFewDeltas/ });
  t.throws(() => krum(layout, good, { f: 1, m: 5 }), { message: /^AggregateConfigInvalid/ });
  t.throws(() => krum(layout, good, { f: 1, m: 0 }), { message: /^AggregateConfigInvalid/ });
  t.throws(() => krum(layout, good, { f: 1, m: 2, weighted: true }), { message: /^AggregateWeightInvalid/ });
  const weighted = good.map((d, i) => ({ ...d, weight: i + 1 }));
  const result = krum(layout, weighted, { f: 1, m: 4, weighted: true });
  const b = result.tensors.get("b") as Float32Array;
  const total = result.selected.reduce((s, i) => s + i + 1, 0);
  const expected = result.selected.reduce(
    (s, i) => s + (i + 1) * (((weighted[i] as DeltaArrays).tensors.get("b") as Float32Array)[0] as number),
    0,
  );
  t.is(b[0], Math.fround(expected / total));
  t.throws(() => trimmedMean(layout, good.slice(0, 2), { trim: 1 }), { message: /^AggregateTooFewDeltas/ });
  t.throws(() => coordinateMedian(layout, []), { message: /^AggregateTooFewDeltas/ });
});

test("robust rules refuse when the deltas and the result would exceed maxBytes", (t) => {
  const good = honest(5, 4);
  const bytes = modelBytes(layout);
  t.notThrows(() => coordinateMedian(layout, good, { maxBytes: 6 * bytes }));
  for (const run of [
    () => coordinateMedian(layout, good, { maxBytes: 6 * bytes - 1 }),
    () => trimmedMean(layout, good, { trim: 1, maxBytes: 5 * bytes }),
    () => krum(layout, good, { f: 1, maxBytes: bytes }),
  ]) {
    t.throws(run, { message: /^AggregateMemoryLimit/ });
  }
});

// ---------------------------------------------------------------------------------------------
// The collector

test("the collector refuses a delta over maxBytes before reading it, and keeps only whole, finite, new deltas", async (t) => {
  const bytes = modelBytes(layout);
  // Room for two deltas and the result.
  const collector = new DeltaCollector(layout, { maxBytes: 3 * bytes });
  const [a, b, c] = honest(3, 5) as [DeltaArrays, DeltaArrays, DeltaArrays];
  await collector.add(chunksOf(layout, a.tensors as Tensors, [100]), { keys: "a" });
  // A delta failing mid-stream is dropped whole.
  async function* broken(): AsyncGenerator<DecodedChunk> {
    let k = 0;
    for (const chunk of chunksOf(layout, b.tensors as Tensors, [100])) {
      if (k++ === 5) throw new Error("connection reset");
      yield chunk;
    }
  }
  await t.throwsAsync(collector.add(broken(), { keys: "b" }), { message: "connection reset" });
  const withNaN = new Map(b.tensors) as Tensors;
  withNaN.set(
    "b",
    gaussian(32, 1, 1).map((x, i) => (i === 31 ? Number.NaN : x)),
  );
  await rejectsWithReason(t, collector.add(chunksOf(layout, withNaN), { keys: "b" }), "AggregateNonFinite");
  await rejectsWithReason(
    t,
    collector.add(chunksOf(layout, a.tensors as Tensors), { keys: "a" }),
    "AggregateDuplicateDelta",
  );
  t.is(collector.deltas.length, 1);
  await collector.add(chunksOf(layout, b.tensors as Tensors, [100]), { keys: "b" });
  let started = false;
  function* third(): Generator<DecodedChunk> {
    started = true;
    yield* chunksOf(layout, c.tensors as Tensors);
  }
  await rejectsWithReason(t, collector.add(third(), { keys: "c" }), "AggregateMemoryLimit");
  t.false(started, "the refused delta was not read");
  t.is(collector.deltas.length, 2);
  t.true(sameBits(collector.trimmedMean(0), trimmedMean(layout, [a, b], { trim: 0 })));
});
