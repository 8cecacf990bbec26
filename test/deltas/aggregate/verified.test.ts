// Real deltas through the real path: written with writeDelta in every encoding, signed, read
// back through openVerifiedDelta from a chunked transport and streamed into the accumulator;
// then the FedAvg outer step.
import { generateKeyPairSync, type KeyObject } from "node:crypto";
import test from "ava";
import {
  Accumulator,
  addVerifiedDelta,
  addVerifiedDeltas,
  DeltaCollector,
  deltaKeys,
  FEDAVG_OUTER,
  lateDeltaWeight,
  OuterOptimizer,
  stalenessFactor,
} from "../../../deltas/aggregate/mod.ts";
import {
  collectBytes,
  type DeltaEncoding,
  type DeltaManifest,
  decodeDelta,
  decodeDeltaToArrays,
  describeDelta,
  openDelta,
  openVerifiedDelta,
  publicKeyField,
  type SignedManifest,
  signManifest,
  writeDelta,
  writeSafetensors,
} from "../../../deltas/mod.ts";
import { chunked, rejectsWith } from "../helpers.ts";
import {
  copyOf,
  randomTensors,
  referenceMean,
  rejectsWithReason,
  sameBits,
  type Tensors,
} from "./helpers.ts";

const layout = [
  { name: "model.embed_tokens.weight", shape: [64, 48] },
  { name: "model.layers.0.mlp.up_proj.weight", shape: [96, 48] },
  { name: "model.norm.weight", shape: [48] },
  { name: "logit_scale", shape: [] },
];

interface Made {
  file: Uint8Array;
  signed: SignedManifest;
  key: KeyObject;
  /** The fp32 values the hub decodes (after the encoding's rounding). */
  decoded: Tensors;
}

const keys = new Map<string, ReturnType<typeof generateKeyPairSync>>();
function keyOf(learner: string) {
  let pair = keys.get(learner);
  if (!pair) {
    pair = generateKeyPairSync("ed25519");
    keys.set(learner, pair);
  }
  return pair;
}

async function signed(
  file: Uint8Array,
  fields: { region: string; tokens: number; round?: number; learner?: string },
): Promise<Omit<Made, "decoded">> {
  const learner = fields.learner ?? `learner-0.${fields.region}`;
  const pair = keyOf(learner);
  const described = await describeDelta([file]);
  const manifest: DeltaManifest = {
    version: 1,
    namespace: "sovereign-eu",
    run: "llama-eu",
    round: fields.round ?? 7,
    region: fields.region,
    learner,
    learnerKey: publicKeyField(pair.publicKey),
    baseModel: `sha256:${"ab".repeat(32)}`,
    encoding: described.encoding,
    tokens: fields.tokens,
    innerSteps: 500,
    createdAt: "2026-11-24T04:05:06Z",
    size: described.size,
    tensors: described.tensors,
  };
  return { file, signed: signManifest(manifest, pair.privateKey), key: pair.publicKey };
}

async function makeDelta(
  encoding: DeltaEncoding,
  tensors: Tensors,
  fields: { region: string; tokens: number; round?: number; learner?: string },
): Promise<Made> {
  const file = await collectBytes(
    writeDelta(
      layout.map((t) => ({ name: t.name, shape: t.shape, values: tensors.get(t.name) as Float32Array })),
      encoding,
    ),
  );
  const decoded = await decodeDeltaToArrays((await openDelta([file])).stream);
  return { ...(await signed(file, fields)), decoded };
}

// int4-block64 packs the matrices and the vector, and stores the scalar at int8.
const encodings: DeltaEncoding[] = ["fp32", "bf16", "fp16", "int8-row", "int8-block64", "int4-block64"];

test("signed deltas in every encoding stream through openVerifiedDelta into the mean, exactly as the reference computes it; FedAvg then gives base + mean", async (t) => {
  const deltas = await Promise.all(
    encodings.map((encoding, i) =>
      makeDelta(encoding, randomTensors(layout, 0.01, i + 1), {
        region: `region-${i}`,
        tokens: 1_000_000 * (i + 1) + 17,
      }),
    ),
  );
  const acc = new Accumulator(layout);
  for (const [i, d] of deltas.entries()) {
    const report = await addVerifiedDelta(acc, d.signed, d.key, chunked(d.file, [997, 13, 4096 + i]));
    t.is(report.weight, d.signed.manifest.tokens);
  }
  const result = await acc.finish();
  const reference = referenceMean(
    layout,
    deltas.map((d) => ({ tensors: d.decoded, weight: d.signed.manifest.tokens })),
  );
  t.true(sameBits(result.tensors, reference));
  t.is(result.count, encodings.length);
  t.deepEqual(
    result.keys,
    deltas.flatMap((d) => deltaKeys(d.signed.manifest)),
  );

  // FedAvg: lr 1, momentum 0 ⇒ θ' = θ + Δ̄, which is the token-weighted mean of the learners' models.
  const base = randomTensors(layout, 1, 42);
  const global = copyOf(base);
  new OuterOptimizer(layout, FEDAVG_OUTER).step(global, result.tensors);
  for (const tensor of layout) {
    const theta = global.get(tensor.name) as Float32Array;
    const theta0 = base.get(tensor.name) as Float32Array;
    const mean = result.tensors.get(tensor.name) as Float32Array;
    let exact = true;
    let worst = 0;
    for (let i = 0; i < theta.length; i++) {
      exact &&= theta[i] === Math.fround((theta0[i] as number) + (mean[i] as number));
      // The mean of the learners' models, θ₀ + Δᵢ per learner, in float64.
      let models = 0;
      let total = 0;
      for (const d of deltas) {
        const tokens = d.signed.manifest.tokens;
        models +=
          tokens * ((theta0[i] as number) + ((d.decoded.get(tensor.name) as Float32Array)[i] as number));
        total += tokens;
      }
      worst = Math.max(worst, Math.abs((theta[i] as number) - models / total));
    }
    t.true(exact, tensor.name);
    t.true(worst < 1e-6, `${tensor.name}: ${worst}`);
  }
});

test("a tampered, truncated or NaN-carrying signed delta is refused mid-stream and leaves the sums bit-exact", async (t) => {
  const acc = new Accumulator(layout);
  const good = await makeDelta("bf16", randomTensors(layout, 0.01, 1), { region: "region-a", tokens: 500 });
  await addVerifiedDelta(acc, good.signed, good.key, chunked(good.file, [4096]));
  const before = copyOf(acc.sums());

  const victim = await makeDelta("int8-block64", randomTensors(layout, 0.01, 2), {
    region: "region-b",
    tokens: 700,
  });
  // A flipped byte in the last data byte: every earlier tensor was already streamed in.
  const tampered = victim.file.slice();
  tampered[tampered.length - 1] = (tampered[tampered.length - 1] as number) ^ 0x01;
  await rejectsWith(
    t,
    addVerifiedDelta(acc, victim.signed, victim.key, chunked(tampered, [333])),
    "ManifestDigestMismatch",
  );
  t.true(sameBits(acc.sums(), before));
  // Cut in transit two bytes before the end.
  await rejectsWith(
    t,
    addVerifiedDelta(
      acc,
      victim.signed,
      victim.key,
      chunked(victim.file.subarray(0, victim.file.length - 2), [333]),
    ),
    "DeltaTruncated",
  );
  t.true(sameBits(acc.sums(), before));

  // A learner that signs a NaN: the F32 payload of the last tensor holds NaN (writeDelta
  // refuses to encode one, so the file is written raw).
  const values = layout.map((tensor) => {
    const v = new Float32Array(randomTensors(layout, 0.01, 3).get(tensor.name) as Float32Array);
    if (tensor.name === "logit_scale") v[0] = Number.NaN;
    return { name: tensor.name, dtype: "F32" as const, shape: tensor.shape, data: new Uint8Array(v.buffer) };
  });
  const nanFile = await collectBytes(
    writeSafetensors(values, {
      metadata: { "sovereign.format": "sovereign-delta/1", "sovereign.encoding": "fp32" },
    }),
  );
  const nan = await signed(nanFile, { region: "region-c", tokens: 900 });
  await rejectsWith(
    t,
    addVerifiedDelta(acc, nan.signed, nan.key, chunked(nanFile, [1000])),
    "EncodingNonFinite",
  );
  t.true(sameBits(acc.sums(), before));
  t.is(acc.count, 1);

  // The intact delta still counts afterwards.
  await addVerifiedDelta(acc, victim.signed, victim.key, chunked(victim.file, [333]));
  const result = await acc.finish();
  t.true(
    sameBits(
      result.tensors,
      referenceMean(layout, [
        { tensors: good.decoded, weight: 500 },
        { tensors: victim.decoded, weight: 700 },
      ]),
    ),
  );
});

test("a redelivered delta, or a re-signed second delta from the same learner and round, is counted once", async (t) => {
  const acc = new Accumulator(layout);
  const first = await makeDelta("fp16", randomTensors(layout, 0.01, 1), { region: "region-a", tokens: 100 });
  await addVerifiedDelta(acc, first.signed, first.key, [first.file]);
  await rejectsWithReason(
    t,
    addVerifiedDelta(acc, first.signed, first.key, [first.file]),
    "AggregateDuplicateDelta",
  );
  // A forged copy (more tokens, signed by someone else) is refused for its signature, not as a duplicate.
  const forged = {
    manifest: { ...first.signed.manifest, tokens: 10 ** 9 },
    signature: first.signed.signature,
  };
  await rejectsWith(t, addVerifiedDelta(acc, forged, first.key, [first.file]), "ManifestSignatureInvalid");
  const second = await makeDelta("fp16", randomTensors(layout, 0.01, 2), { region: "region-a", tokens: 100 });
  t.notDeepEqual(deltaKeys(first.signed.manifest)[0], deltaKeys(second.signed.manifest)[0]);
  await rejectsWithReason(
    t,
    addVerifiedDelta(acc, second.signed, second.key, [second.file]),
    "AggregateDuplicateDelta",
  );
  // Another learner of the same region is a different slot; with per-region slots it is not.
  const other = await makeDelta("fp16", randomTensors(layout, 0.01, 3), {
    region: "region-a",
    tokens: 100,
    learner: "learner-1.region-a",
  });
  await addVerifiedDelta(acc, other.signed, other.key, [other.file]);
  const perRegion = new Accumulator(layout);
  await addVerifiedDelta(perRegion, first.signed, first.key, [first.file], { per: "region" });
  await rejectsWithReason(
    t,
    addVerifiedDelta(perRegion, other.signed, other.key, [other.file], { per: "region" }),
    "AggregateDuplicateDelta",
  );
  t.is(perRegion.count, 1);
  t.is(acc.count, 2);
});

test("a delta of another architecture is refused from its header, before its data is read", async (t) => {
  const acc = new Accumulator(layout);
  const otherLayout = layout.map((x) => (x.name === "model.norm.weight" ? { ...x, shape: [64] } : x));
  const file = await collectBytes(
    writeDelta(
      otherLayout.map((x) => ({
        name: x.name,
        shape: x.shape,
        values: randomTensors(otherLayout, 0.01, 1).get(x.name) as Float32Array,
      })),
      "bf16",
    ),
  );
  const made = await signed(file, { region: "region-a", tokens: 10 });
  let pulled = 0;
  function* counting() {
    for (const part of chunked(file, [64])) {
      pulled += part.byteLength;
      yield part;
    }
  }
  await rejectsWithReason(
    t,
    addVerifiedDelta(acc, made.signed, made.key, counting()),
    "AggregateShapeMismatch",
  );
  const headerBytes = 8 + Number(new DataView(file.buffer).getBigUint64(0, true));
  t.true(pulled <= headerBytes + 64, `pulled ${pulled} of ${file.length} bytes (header ${headerBytes})`);
  t.is(acc.count, 0);
});

test("a late delta folds into the open round with its staleness weight", async (t) => {
  const acc = new Accumulator(layout);
  const onTime = await makeDelta("bf16", randomTensors(layout, 0.01, 1), {
    region: "region-a",
    tokens: 1000,
  });
  const late = await makeDelta("bf16", randomTensors(layout, 0.01, 2), {
    region: "region-b",
    tokens: 1000,
    round: 6,
  });
  await addVerifiedDelta(acc, onTime.signed, onTime.key, [onTime.file]);
  const factor = stalenessFactor(7 - late.signed.manifest.round);
  t.is(factor, 0.5);
  const report = await addVerifiedDelta(acc, late.signed, late.key, [late.file], { weightFactor: factor });
  t.is(report.weight, lateDeltaWeight(late.signed.manifest, 7));
  const result = await acc.finish();
  t.is(result.totalWeight, 1500);
  t.true(
    sameBits(
      result.tensors,
      referenceMean(layout, [
        { tensors: onTime.decoded, weight: 1000 },
        { tensors: late.decoded, weight: 500 },
      ]),
    ),
  );
});

test("the robust collector takes the same verified streams and drops a tampered one whole", async (t) => {
  const collector = new DeltaCollector(layout, { maxBytes: 64 * 2 ** 20 });
  const deltas = await Promise.all(
    [1, 2, 3].map((i) =>
      makeDelta("int8-row", randomTensors(layout, 0.01, i), { region: `region-${i}`, tokens: 10 }),
    ),
  );
  for (const d of deltas) {
    const stream = await openVerifiedDelta(d.signed, d.key, chunked(d.file, [500]));
    await collector.add(decodeDelta(stream), { keys: deltaKeys(d.signed.manifest), weight: 10 });
  }
  const d0 = deltas[0] as Made;
  const replay = await makeDelta("int8-row", randomTensors(layout, 0.01, 9), {
    region: "region-9",
    tokens: 10,
  });
  const file = replay.file.slice();
  file[file.length - 1] = (file[file.length - 1] as number) ^ 0x01;
  const stream = await openVerifiedDelta(replay.signed, replay.key, chunked(file, [500]));
  await rejectsWith(
    t,
    collector.add(decodeDelta(stream), { keys: deltaKeys(replay.signed.manifest) }),
    "ManifestDigestMismatch",
  );
  t.is(collector.deltas.length, 3);
  t.false(collector.has(deltaKeys(replay.signed.manifest)[0] as string));
  t.true(collector.has(deltaKeys(d0.signed.manifest)[0] as string));
  const median = collector.coordinateMedian();
  const norm = median.get("model.norm.weight") as Float32Array;
  const inputs = deltas.map((d) => d.decoded.get("model.norm.weight") as Float32Array);
  for (let i = 0; i < norm.length; i++) {
    const sorted = inputs.map((x) => x[i] as number).sort((a, b) => a - b);
    t.is(norm[i], sorted[1]);
  }
});

test("addVerifiedDeltas: a round's signed deltas in mixed encodings, in one pass, give the sums addVerifiedDelta gives one by one", async (t) => {
  const made = await Promise.all(
    encodings.map((encoding, i) =>
      makeDelta(encoding, randomTensors(layout, 0.01, 40 + i), {
        region: `region-${i}`,
        tokens: 100 * (i + 1),
      }),
    ),
  );
  const one = new Accumulator(layout);
  for (const m of made) await addVerifiedDelta(one, m.signed, m.key, chunked(m.file, [999]));
  const opens = made.map(() => 0);
  const fused = new Accumulator(layout);
  const reports = await addVerifiedDeltas(
    fused,
    made.map((m, i) => ({
      signed: m.signed,
      trustedKey: m.key,
      open: () => {
        opens[i] = (opens[i] as number) + 1;
        return chunked(m.file, [777 + i]);
      },
      read: { expectedTotalBytes: m.file.length },
    })),
  );
  t.is(reports.length, made.length);
  t.deepEqual(
    opens,
    made.map(() => 1),
    "each delta is read once",
  );
  t.true(sameBits(fused.sums(), one.sums()));
  t.is(fused.totalWeight, one.totalWeight);
});

test("addVerifiedDeltas: a tampered delta in a group rolls the group back, which is then re-read one at a time to name it", async (t) => {
  const made = await Promise.all(
    [0, 1, 2].map((i) =>
      makeDelta("int8-block64", randomTensors(layout, 0.01, 50 + i), {
        region: `region-${i}`,
        tokens: 10 + i,
      }),
    ),
  );
  const tampered = (made[1] as Made).file.slice();
  tampered[tampered.length - 1] = (tampered[tampered.length - 1] as number) ^ 0x01;
  const opens = [0, 0, 0];
  const acc = new Accumulator(layout);
  await rejectsWith(
    t,
    addVerifiedDeltas(
      acc,
      made.map((m, i) => ({
        signed: m.signed,
        trustedKey: m.key,
        open: () => {
          opens[i] = (opens[i] as number) + 1;
          return chunked(i === 1 ? tampered : m.file, [500]);
        },
      })),
    ),
    "ManifestDigestMismatch",
  );
  // Read together once, then one at a time up to the delta at fault.
  t.deepEqual(opens, [2, 2, 1]);
  t.is(acc.count, 1);
  t.true(acc.has(deltaKeys((made[0] as Made).signed.manifest)[0] as string));
  t.true(sameBits(acc.sums(), copyOf(scaled((made[0] as Made).decoded, 10))));
});

/** w · Δ in fp32, as the kernel computes the first delta's sums. */
function scaled(tensors: Tensors, weight: number): Tensors {
  const w = Math.fround(weight);
  return new Map([...tensors].map(([name, v]) => [name, v.map((x) => Math.fround(w * x))]));
}
