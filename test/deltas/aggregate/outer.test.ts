// The outer optimiser against hand-written references over several rounds, FedAvg as its
// special case, and a checkpoint that resumes bit for bit.
import test from "ava";
import fc from "fast-check";
import {
  DILOCO_OUTER,
  elementCount,
  FEDAVG_OUTER,
  type ModelLayout,
  type OuterConfig,
  OuterOptimizer,
  outerConfig,
} from "../../../deltas/aggregate/mod.ts";
import { collectBytes, openSafetensors, readSafetensors, writeSafetensors } from "../../../deltas/mod.ts";
import { chunked } from "../helpers.ts";
import {
  copyOf,
  layoutArbitrary,
  randomTensors,
  rejectsWithReason,
  sameBits,
  type Tensors,
} from "./helpers.ts";

const layout: ModelLayout = [
  { name: "w", shape: [33, 17] },
  { name: "b", shape: [17] },
  { name: "empty", shape: [0, 4] },
];

/**
 * PyTorch's SGD(momentum=μ, nesterov, dampening=0) on g = −Δ̄, in float64, as its docs write it;
 * with, per element, a bound on what rounding θ and m to fp32 once per round can add up to:
 * 2⁻²⁴·|θ| per round, and 2⁻²⁴·|m| per round carried into θ with weight η(1 + μ)/(1 − μ).
 */
function float64Reference(
  config: OuterConfig,
  theta0: Tensors,
  rounds: Tensors[],
): Map<string, { theta: Float64Array; bound: Float64Array }> {
  const out = new Map(
    [...theta0].map(([k, v]) => [k, { theta: Float64Array.from(v), bound: new Float64Array(v.length) }]),
  );
  const buf = new Map<string, Float64Array>();
  const { learningRate: lr, momentum: mu } = config;
  const carry = (lr * (1 + mu)) / (1 - mu);
  rounds.forEach((avg, step) => {
    for (const [name, { theta: th, bound }] of out) {
      const d = avg.get(name) as Float32Array;
      let b = buf.get(name);
      if (!b) {
        b = new Float64Array(th.length);
        buf.set(name, b);
      }
      for (let i = 0; i < th.length; i++) {
        const g = -(d[i] as number);
        let update = g;
        if (mu > 0) {
          b[i] = step === 0 ? g : mu * (b[i] as number) + g;
          update = config.nesterov ? g + mu * (b[i] as number) : (b[i] as number);
        }
        th[i] = (th[i] as number) - lr * update;
        bound[i] =
          (bound[i] as number) + 2 ** -24 * (Math.abs(th[i] as number) + carry * Math.abs(b[i] as number));
      }
    }
  });
  return out;
}

/** The documented fp32 arithmetic, element by element: each stored value rounded once. */
function fp32Reference(config: OuterConfig, theta0: Tensors, rounds: Tensors[]): Tensors {
  const theta = copyOf(theta0);
  const m = new Map([...theta0].map(([k, v]) => [k, new Float32Array(v.length)]));
  const { learningRate: lr, momentum: mu, nesterov } = config;
  for (const avg of rounds) {
    for (const [name, th] of theta) {
      const d = avg.get(name) as Float32Array;
      const mm = m.get(name) as Float32Array;
      for (let i = 0; i < th.length; i++) {
        if (mu === 0) {
          th[i] = Math.fround((th[i] as number) + lr * (d[i] as number));
          continue;
        }
        const g = -(d[i] as number);
        mm[i] = Math.fround(mu * (mm[i] as number) + g);
        const update = nesterov ? g + mu * (mm[i] as number) : (mm[i] as number);
        th[i] = Math.fround((th[i] as number) - lr * update);
      }
    }
  }
  return theta;
}

const configs: [string, OuterConfig][] = [
  ["DiLoCo Nesterov 0.7/0.9", DILOCO_OUTER],
  ["heavy ball 0.5/0.8", { learningRate: 0.5, momentum: 0.8, nesterov: false }],
  ["FedAvg", FEDAVG_OUTER],
  ["FedAvg server lr 0.3", { learningRate: 0.3, momentum: 0, nesterov: false }],
];

test("over six rounds the outer step matches the fp32 reference exactly and PyTorch's float64 formula closely", (t) => {
  const theta0 = randomTensors(layout, 0.5, 1);
  const rounds = [1, 2, 3, 4, 5, 6].map((r) => randomTensors(layout, 0.01, 10 + r));
  for (const [what, config] of configs) {
    const theta = copyOf(theta0);
    const optimizer = new OuterOptimizer(layout, config);
    for (const avg of rounds) optimizer.step(theta, avg);
    t.is(optimizer.steps, 6);
    t.true(sameBits(theta, fp32Reference(config, theta0, rounds)), what);
    const exact = float64Reference(config, theta0, rounds);
    let worst = 0;
    for (const [name, th] of theta) {
      const { theta: e, bound } = exact.get(name) as { theta: Float64Array; bound: Float64Array };
      for (let i = 0; i < th.length; i++) {
        const error = Math.abs((th[i] as number) - (e[i] as number));
        worst = Math.max(worst, error / Math.max(bound[i] as number, 2 ** -149));
      }
    }
    t.log(`${what}: worst error ${worst.toFixed(3)} of the rounding bound, against the float64 formula`);
    t.true(worst <= 1, `${what}: ${worst}`);
  }
});

test("Nesterov's first step is θ − η(1 + μ)g and the momentum buffer starts at g, as in PyTorch", (t) => {
  const theta = new Map([["x", new Float32Array([1, 2])]]);
  const optimizer = new OuterOptimizer([{ name: "x", shape: [2] }], DILOCO_OUTER);
  optimizer.step(theta, new Map([["x", new Float32Array([0.5, -0.25])]]));
  // g = −Δ̄ = (−0.5, 0.25); m = g; θ − 0.7·(g + 0.9·g) = θ + 0.7·1.9·Δ̄
  t.deepEqual([...(optimizer.momentum("x") ?? [])], [-0.5, 0.25]);
  t.deepEqual(
    [...(theta.get("x") ?? [])],
    [Math.fround(1 + 0.7 * 1.9 * 0.5), Math.fround(2 - 0.7 * 1.9 * 0.25)],
  );
});

test("FedAvg (lr 1, momentum 0) is base + mean delta, for any layout and values, and keeps no momentum", async (t) => {
  await fc.assert(
    fc.property(layoutArbitrary, fc.integer(), (someLayout, seed) => {
      const base = randomTensors(someLayout, 1, seed);
      const avg = randomTensors(someLayout, 0.01, seed + 1);
      const theta = copyOf(base);
      const optimizer = new OuterOptimizer(someLayout, FEDAVG_OUTER);
      optimizer.step(theta, avg);
      return (
        optimizer.momentum((someLayout[0] as { name: string }).name) === undefined &&
        someLayout.every((tensor) => {
          const got = theta.get(tensor.name) as Float32Array;
          const b = base.get(tensor.name) as Float32Array;
          const d = avg.get(tensor.name) as Float32Array;
          return got.every((x, i) => Object.is(x, Math.fround((b[i] as number) + (d[i] as number))));
        })
      );
    }),
    { numRuns: 200 },
  );
  t.pass();
});

test("checkpoint → restore → continue equals the uninterrupted run bit for bit", async (t) => {
  const theta0 = randomTensors(layout, 0.5, 2);
  const rounds = [1, 2, 3, 4, 5].map((r) => randomTensors(layout, 0.01, 20 + r));
  for (const [what, config] of configs) {
    const straight = copyOf(theta0);
    const uninterrupted = new OuterOptimizer(layout, config);
    for (const avg of rounds) uninterrupted.step(straight, avg);

    for (const cut of [0, 1, 3]) {
      const theta = copyOf(theta0);
      const before = new OuterOptimizer(layout, config);
      for (const avg of rounds.slice(0, cut)) before.step(theta, avg);
      // The hub saves θ (elsewhere), m and the round together, then restarts.
      const saved = await collectBytes(before.saveState({ round: String(cut), model: "sha256:abc" }));
      const restored = await OuterOptimizer.restore(chunked(saved, [7, 1000]), layout, config);
      t.deepEqual(restored.metadata, { round: String(cut), model: "sha256:abc" });
      t.is(restored.optimizer.steps, cut);
      for (const avg of rounds.slice(cut)) restored.optimizer.step(theta, avg);
      t.true(sameBits(theta, straight), `${what}, restarted after ${cut} rounds`);
      t.is(restored.optimizer.steps, rounds.length);
    }
  }
});

test("a restore refuses another format, another momentum setting or another model", async (t) => {
  const optimizer = new OuterOptimizer(layout, DILOCO_OUTER);
  optimizer.step(randomTensors(layout, 1, 1), randomTensors(layout, 0.01, 2));
  const saved = await collectBytes(optimizer.saveState());
  await rejectsWithReason(
    t,
    OuterOptimizer.restore([saved], layout, { ...DILOCO_OUTER, momentum: 0.95 }),
    "AggregateStateInvalid",
  );
  await rejectsWithReason(
    t,
    OuterOptimizer.restore([saved], layout, { ...DILOCO_OUTER, nesterov: false }),
    "AggregateStateInvalid",
  );
  await rejectsWithReason(t, OuterOptimizer.restore([saved], layout, FEDAVG_OUTER), "AggregateStateInvalid");
  await rejectsWithReason(
    t,
    OuterOptimizer.restore([saved], layout.slice(0, 2), DILOCO_OUTER),
    "AggregateStateInvalid",
  );
  await rejectsWithReason(
    t,
    OuterOptimizer.restore([saved], [{ name: "w", shape: [17, 33] }, ...layout.slice(1)], DILOCO_OUTER),
    "AggregateStateInvalid",
  );
  const notAState = await collectBytes(
    writeSafetensors([{ name: "w", dtype: "F32", shape: [1], data: new Uint8Array(4) }], {
      metadata: { "sovereign.format": "sovereign-delta/1" },
    }),
  );
  await rejectsWithReason(
    t,
    OuterOptimizer.restore([notAState], layout, DILOCO_OUTER),
    "AggregateStateInvalid",
  );
  // A learning-rate change (a schedule) is allowed.
  const changed = await OuterOptimizer.restore([saved], layout, { ...DILOCO_OUTER, learningRate: 0.35 });
  t.is(changed.optimizer.config.learningRate, 0.35);
  t.deepEqual([...(changed.optimizer.momentum("b") ?? [])], [...(optimizer.momentum("b") ?? [])]);
});

test("the step checks its inputs and the configuration", (t) => {
  const optimizer = new OuterOptimizer(layout, DILOCO_OUTER);
  const theta = randomTensors(layout, 1, 1);
  const avg = randomTensors(layout, 1, 2);
  avg.delete("b");
  t.throws(() => optimizer.step(theta, avg), { message: /^AggregateTensorMissing/ });
  avg.set("b", new Float32Array(elementCount([16])));
  t.throws(() => optimizer.step(theta, avg), { message: /^AggregateShapeMismatch/ });
  t.is(optimizer.steps, 0);
  for (const bad of [
    { learningRate: 0, momentum: 0.9, nesterov: true },
    { learningRate: Number.NaN, momentum: 0.9, nesterov: true },
    { learningRate: 0.7, momentum: 1, nesterov: true },
    { learningRate: 0.7, momentum: -0.1, nesterov: true },
  ]) {
    t.throws(() => new OuterOptimizer(layout, bad), { message: /^AggregateConfigInvalid/ });
  }
  t.throws(() => optimizer.saveState({ "sovereign.outer.steps": "9" }), {
    message: /^AggregateConfigInvalid/,
  });
});

test("the run's spec.algorithm maps to the outer optimiser", (t) => {
  t.deepEqual(
    outerConfig({
      type: "DiLoCo",
      diloco: { innerSteps: 500, outerLearningRate: 0.7, outerMomentum: 0.9, nesterov: true },
    }),
    DILOCO_OUTER,
  );
  t.deepEqual(outerConfig({ type: "FedAvg" }), FEDAVG_OUTER);
  t.deepEqual(outerConfig({ type: "FedAvg", fedAvg: { serverLearningRate: 0.5 } }), {
    learningRate: 0.5,
    momentum: 0,
    nesterov: false,
  });
});

test("a step applied tensor by tensor (streaming the global model) equals the in-memory step", (t) => {
  const theta0 = randomTensors(layout, 0.5, 3);
  const rounds = [1, 2, 3].map((r) => randomTensors(layout, 0.01, 30 + r));
  const whole = copyOf(theta0);
  const inMemory = new OuterOptimizer(layout, DILOCO_OUTER);
  const streamed = new OuterOptimizer(layout, DILOCO_OUTER);
  const pieces = copyOf(theta0);
  for (const avg of rounds) {
    inMemory.step(whole, avg);
    const step = streamed.beginStep();
    // In the model file's order, which need not be the layout's.
    for (const tensor of [...layout].reverse()) {
      step.apply(tensor.name, pieces.get(tensor.name) as Float32Array, avg.get(tensor.name) as Float32Array);
    }
    step.done();
  }
  t.true(sameBits(whole, pieces));
  t.is(streamed.steps, 3);
  const step = streamed.beginStep();
  step.apply("b", pieces.get("b") as Float32Array, (rounds[0] as Tensors).get("b") as Float32Array);
  t.throws(
    () => step.apply("b", pieces.get("b") as Float32Array, (rounds[0] as Tensors).get("b") as Float32Array),
    {
      message: /^AggregateChunkInvalid/,
    },
  );
  t.throws(() => step.apply("nope", new Float32Array(1), new Float32Array(1)), {
    message: /^AggregateTensorUnexpected/,
  });
  t.throws(() => step.done(), { message: /^AggregateTensorMissing/ });
  t.is(streamed.steps, 3);
});

test("streamStep writes the model the in-memory step gives, from a safetensors stream read once, and refuses a base with more than its header", async (t) => {
  // In file order (sorted by offset), as a layout taken from the model's header is.
  const fileLayout: ModelLayout = [
    { name: "w", shape: [33, 17] },
    { name: "b", shape: [17] },
  ];
  const theta = randomTensors(fileLayout, 0.5, 5);
  const avg = randomTensors(fileLayout, 0.01, 6);
  const file = await collectBytes(
    writeSafetensors(
      fileLayout.map((x) => ({
        name: x.name,
        dtype: "F32" as const,
        shape: x.shape,
        data: new Uint8Array((theta.get(x.name) as Float32Array).buffer),
      })),
    ),
  );
  const expected = copyOf(theta);
  new OuterOptimizer(fileLayout, DILOCO_OUTER).step(expected, avg);
  const streamed = new OuterOptimizer(fileLayout, DILOCO_OUTER);
  const written = await readSafetensors(
    writeSafetensors(streamed.streamStep(await openSafetensors(chunked(file, [100])), avg)),
  );
  const got = new Map(
    [...written.tensors].map(([name, x]) => [name, new Float32Array(new Uint8Array(x.bytes).buffer)]),
  );
  t.true(sameBits(got, expected));
  t.is(streamed.steps, 1);
  // A stream whose header lists only the first tensor, fed to a layout of both: the second is
  // not where the layout expects it.
  const short = await collectBytes(
    writeSafetensors([
      {
        name: "w",
        dtype: "F32",
        shape: [33, 17],
        data: new Uint8Array((theta.get("w") as Float32Array).buffer),
      },
    ]),
  );
  await t.throwsAsync(
    collectBytes(
      writeSafetensors(
        new OuterOptimizer(fileLayout, FEDAVG_OUTER).streamStep(await openSafetensors([short]), avg),
      ),
    ),
    { message: /expected tensor 'b' next/ },
  );
  // One that holds more than the layout's tensors.
  await t.throwsAsync(
    collectBytes(
      writeSafetensors(
        new OuterOptimizer([fileLayout[0] as ModelLayout[number]], FEDAVG_OUTER).streamStep(
          await openSafetensors([file]),
          avg,
        ),
      ),
    ),
    { message: /holds more than its header lists/ },
  );
});
