// The SDK end to end on the testbed's NATS: the hub publishes a round's global model, the
// region's member mirrors it and owns the delta bucket, and a Python learner configured only
// by environment (learner credentials) fetches the model, trains a numpy step and publishes
// its int8 delta, which the hub's real path (watchRegionDeltas + openArrivedDelta, verified
// against the learner's key) accepts and decodes bit for bit. Then: the next round, a refusal
// from the hub surfacing as DeltaRefused, a model whose bytes do not match its recorded digest,
// the end of the run; and the configuration and connection errors a user can act on.
import { createHash, generateKeyPairSync } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Objm } from "@nats-io/obj";
import test, { type ExecutionContext } from "ava";
import {
  collectBytes,
  decodeDeltaToArrays,
  decodeValues,
  encodeValues,
  parseEncoding,
  writeSafetensors,
} from "../../deltas/mod.ts";
import {
  ensureRegionDeltaBucket,
  ensureRegionDeltaMirror,
  ensureRunModelMirror,
  MODEL_DIGEST_METADATA,
  modelObjectName,
  openArrivedDelta,
  publishGlobalModel,
  regionDeltaBucket,
  removeRunModelMirror,
  runModelBucket,
} from "../../transport/mod.ts";
import { gaussian } from "../deltas/helpers.ts";
import { type Testbed, uniqueName, useTestbed } from "../testbed/harness.ts";
import { arrivalOf, connectParties } from "../transport/fixtures.ts";
import { PythonSession, runPython, scripts } from "./sdk-venv.ts";

const keys = generateKeyPairSync("ed25519");
const NAMESPACE = "default";
const LEARNER = "learner-sdk-0";

interface ModelTensor {
  name: string;
  shape: number[];
  values: Float32Array;
}

function model(seed: number): ModelTensor[] {
  return [
    { name: "encoder.weight", shape: [32, 16], values: gaussian(512, 0.1, seed) },
    { name: "encoder.bias", shape: [16], values: gaussian(16, 0.1, seed + 1) },
    { name: "head.weight", shape: [10, 300], values: gaussian(3000, 0.05, seed + 2) },
  ];
}

function modelFile(tensors: ModelTensor[]): Promise<Uint8Array> {
  return collectBytes(
    writeSafetensors(
      tensors.map((x) => ({
        name: x.name,
        dtype: "F32" as const,
        shape: x.shape,
        data: new Uint8Array(x.values.buffer),
      })),
    ),
  );
}

/** The learner's env: what the member sets, plus NATS, name and key (docs/sdk.md). */
async function learnerEnv(t: ExecutionContext, tb: Testbed, region: string, run: string) {
  const dir = await mkdtemp(join(tmpdir(), "sdk-learner-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const key = join(dir, "learner.pem");
  await writeFile(key, keys.privateKey.export({ type: "pkcs8", format: "pem" }) as string, { mode: 0o600 });
  const r = tb.description.nats.regions[region];
  if (!r) throw new Error(`no NATS for ${region}`);
  return {
    dir,
    env: {
      PATH: process.env.PATH ?? "",
      SOVEREIGN_RUN: run,
      SOVEREIGN_RUN_NAMESPACE: NAMESPACE,
      SOVEREIGN_REGION: region,
      SOVEREIGN_ROUND: "0",
      SOVEREIGN_ROUNDS: "3",
      SOVEREIGN_LEARNER_INDEX: "0",
      SOVEREIGN_LEARNERS: "1",
      SOVEREIGN_NATS_SUBJECT_PREFIX: `sovereign.${region}.${NAMESPACE}.${run}`,
      SOVEREIGN_JETSTREAM_DOMAIN: region,
      SOVEREIGN_DELTA_DTYPE: "int8",
      SOVEREIGN_NATS_URL: r.url,
      SOVEREIGN_NATS_USER: r.learner.user,
      SOVEREIGN_NATS_PASSWORD: r.learner.password,
      SOVEREIGN_LEARNER_NAME: LEARNER,
      SOVEREIGN_LEARNER_KEY: key,
      SOVEREIGN_WORK_DIR: join(dir, "work"),
    },
  };
}

/** What the learner's step should produce as a delta, as the hub decodes it: w' = 0.5·w + 0.25 in fp32, minus w, int8-block128. */
function expectedDelta(x: ModelTensor): Float32Array {
  const delta = x.values.map((w) => Math.fround(Math.fround(Math.fround(w * 0.5) + 0.25) - w));
  const encoding = parseEncoding("int8-block128");
  return decodeValues(encodeValues(x.name, delta, x.shape, encoding), x.shape, encoding);
}

test("a learner configured by its environment fetches the round's model, publishes a delta the hub accepts, and follows the run", async (t) => {
  const tb = await useTestbed();
  const region = "region-c";
  const { hub, member } = await connectParties(t, tb, region);
  const run = uniqueName("sdk");
  const ref = { namespace: NAMESPACE, run };
  await ensureRegionDeltaBucket(member, region);
  await ensureRegionDeltaMirror(hub, region);
  const round0 = model(100);
  const published0 = await publishGlobalModel(hub, { ...ref, round: 0 }, [await modelFile(round0)]);
  t.teardown(async () => {
    await removeRunModelMirror(member, ref);
    await new Objm(hub).open(runModelBucket(NAMESPACE, run)).then((s) => s.destroy());
    const deltas = await new Objm(member).open(regionDeltaBucket(region));
    for (const round of [1, 2])
      await deltas.delete(`${NAMESPACE}/${run}/round-${round}/${LEARNER}`).catch(() => undefined);
  });
  await ensureRunModelMirror(member, region, ref);

  const { env } = await learnerEnv(t, tb, region, run);
  const learner = await PythonSession.start(join(scripts, "learner_e2e.py"), env);
  t.teardown(() => learner.kill());

  // Round 1 trains on round-0, the initial model as the hub published it, verified by its digest.
  const m0 = await learner.next<{ round: number; digest: string; shapes: Record<string, number[]> }>();
  t.like(m0, { event: "model", round: 1, digest: published0.digest });
  t.deepEqual(m0.shapes, Object.fromEntries(round0.map((x) => [x.name, x.shape])));

  // Weights that are not the global model's: refused before anything is published.
  const renamed = await learner.next<{ reason: string; missing: string[]; unexpected: string[] }>();
  t.like(renamed, {
    event: "mismatch",
    reason: "ModelMismatch",
    missing: ["encoder.weight"],
    unexpected: ["not.encoder.weight"],
  });
  const reshaped = await learner.next<{ reason: string; different: string[] }>();
  t.is(reshaped.reason, "ModelMismatch");
  t.regex(
    reshaped.different[0] ?? "",
    /'encoder\.weight' has shape \[1, 32, 16\], the global model's is \[32, 16\]/,
  );

  // The delta arrives at the hub, passes the learner-key verification and decodes to the expected step.
  const p0 = await learner.next<{ object: string; size: number }>();
  t.like(p0, { event: "published", round: 1, object: `${NAMESPACE}/${run}/round-1/${LEARNER}` });
  const arrival = await arrivalOf(hub, region, p0.object);
  if (!arrival.delta) throw arrival.error;
  const manifest = arrival.delta.signed.manifest;
  t.like(manifest, {
    namespace: NAMESPACE,
    run,
    round: 1,
    region,
    learner: LEARNER,
    baseModel: published0.digest,
    encoding: "int8-block128",
    tokens: 4096,
    innerSteps: 8,
    size: p0.size,
  });
  // The SDK's own timing, signed into the manifest for the goodput panel: present, whole
  // milliseconds, and no more than the test has been running.
  for (const ms of [manifest.trainMs, manifest.waitMs]) {
    t.true(Number.isSafeInteger(ms) && (ms as number) >= 0, `timing ${ms} is a whole number of ms`);
  }
  t.true(
    (manifest.trainMs as number) + (manifest.waitMs as number) <= performance.now(),
    "timing within the test's run",
  );
  const stream = await openArrivedDelta(hub, arrival.delta, keys.publicKey, { maxBytes: 1 << 20 });
  const decoded = await decodeDeltaToArrays(stream);
  t.deepEqual(
    [...decoded.keys()],
    round0.map((x) => x.name),
  );
  for (const x of round0) t.deepEqual(decoded.get(x.name), expectedDelta(x), `delta of ${x.name}`);

  // Round 1 closes: the hub publishes its aggregate (round-1); the learner moves to round 2 and trains from it.
  const round1 = model(200);
  const published1 = await publishGlobalModel(hub, { ...ref, round: 1 }, [await modelFile(round1)]);
  t.like(await learner.next(), { event: "next", advanced: true, round: 2 });
  t.like(await learner.next(), { event: "model", round: 2, digest: published1.digest });
  const p1 = await learner.next<{ object: string }>();
  t.like(p1, { event: "published", round: 2 });

  // The hub refuses it (as the hub will, on the refusal subject of the run in the region).
  // A refusal of another learner's delta is not this learner's business.
  const subject = `sovereign.${region}.refusals.${NAMESPACE}.${run}`;
  const refuse = (object: string, reason: string) =>
    hub.publish(
      subject,
      JSON.stringify({ object, reason, message: "the manifest names another key than the attested one" }),
    );
  refuse(`${NAMESPACE}/${run}/round-2/learner-other-7`, "DeltaSizeMismatch");
  refuse(p1.object, "ManifestKeyMismatch");
  const refused = await learner.next<{ text: string; listed: string[] }>();
  t.deepEqual(
    refused.listed,
    [p1.object, "ManifestKeyMismatch"],
    "refusals() lists only this learner's refusals",
  );
  t.like(refused, {
    event: "refused",
    reason: "DeltaRefused",
    hubReason: "ManifestKeyMismatch",
    object: p1.object,
    round: 2,
  });
  t.regex(
    refused.text,
    /^DeltaRefused: the hub refused delta .*round-2.*: ManifestKeyMismatch: the manifest names another key/,
  );

  // Round 3's base (round-2) does not hash to the digest recorded with it: the learner must not train on it.
  const bytes = await modelFile(model(300));
  const wrong = `sha256:${createHash("sha256").update("something else").digest("hex")}`;
  await (await new Objm(hub).open(runModelBucket(NAMESPACE, run))).putBlob(
    { name: modelObjectName(2), metadata: { [MODEL_DIGEST_METADATA]: wrong } },
    bytes,
  );
  t.like(await learner.next(), { event: "next", advanced: true, round: 3 });
  t.like(await learner.next(), { event: "model-error", reason: "ModelDigestMismatch" });
  // Round 3 was the last of 3: next_round says so at once.
  t.like(await learner.next(), { event: "end", advanced: false });
  const exit = await learner.exit();
  t.is(exit.code, 0, exit.stderr);
});

test("configuration, key, connection and ordering errors name their reason and the fix", async (t) => {
  const tb = await useTestbed();
  const region = "region-c";
  const run = uniqueName("sdk-err");
  const { env, dir } = await learnerEnv(t, tb, region, run);
  const notAKey = join(dir, "not-a-key.pem");
  await writeFile(
    notAKey,
    generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey.export({ type: "pkcs8", format: "pem" }),
  );
  const result = await runPython([join(scripts, "errors_e2e.py"), notAKey], { env, timeoutMs: 90_000 });
  t.is(result.code, 0, result.stderr);
  const r = JSON.parse(result.stdout) as Record<string, { reason: string; text: string }>;
  t.is(r.missing?.reason, "ConfigMissing");
  t.regex(r.missing?.text ?? "", /^ConfigMissing: SOVEREIGN_NATS_URL, SOVEREIGN_LEARNER_KEY are not set; /);
  t.is(r.badRound?.reason, "ConfigInvalid");
  t.regex(
    r.badDtype?.text ?? "",
    /^ConfigInvalid: SOVEREIGN_DELTA_DTYPE='int2' is not fp32, bf16, fp16, int8 or int4/,
  );
  t.regex(r.badKey?.text ?? "", /^KeyInvalid: .* holds a .*; learners sign their manifests with Ed25519/);
  t.is(r.badPassword?.reason, "NatsUnavailable");
  t.regex(
    r.noMirror?.text ?? "",
    /^ModelTimeout: no global model for round 0 of default\/sdk-err-.* this region holds no mirror/,
  );
  t.is(r.notFetched?.reason, "ModelNotFetched");
});
