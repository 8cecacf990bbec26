// Measures one learner round through the SDK on the running testbed (not a test; the testbed
// must be up): the hub publishes an fp32 model of the given size, region-a mirrors it, the
// Python learner fetches it, adds 1e-3 and publishes its delta in the given encoding, and the
// hub verifies it from its mirror. Prints the timings and the learner's peak RSS.
//
//   node test/sdk/measure.ts [modelMiB=128] [dtype=int8]
import { generateKeyPairSync } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Objm } from "@nats-io/obj";
import { connect } from "@nats-io/transport-node";
import { writeSafetensors } from "../../deltas/mod.ts";
import {
  ensureRegionDeltaBucket,
  ensureRegionDeltaMirror,
  ensureRunModelMirror,
  openArrivedDelta,
  publishGlobalModel,
  regionDeltaBucket,
  removeRunModelMirror,
  runModelBucket,
} from "../../transport/mod.ts";
import { readDescription } from "../testbed/testbed.ts";
import { defaultStateDir } from "../testbed/topology.ts";
import { arrivalOf, drain } from "../transport/fixtures.ts";
import { runPython, scripts } from "./sdk-venv.ts";

const modelMiB = Number(process.argv[2] ?? 128);
const dtype = process.argv[3] ?? "int8";
const region = "region-a";
const description = await readDescription(defaultStateDir());
if (!description) throw new Error("the testbed is not up (make testbed-up)");
const { hub: hubDesc, regions } = description.nats;
const r = regions[region];
if (!r) throw new Error(`no ${region}`);
const hub = await connect({ servers: hubDesc.url, user: hubDesc.admin.user, pass: hubDesc.admin.password });
const member = await connect({ servers: r.url, user: r.member.user, pass: r.member.password });
const run = `sdk-measure-${Date.now().toString(36)}`;
const ref = { namespace: "default", run };
const dir = await mkdtemp(join(tmpdir(), "sdk-measure-"));
const keys = generateKeyPairSync("ed25519");
const key = join(dir, "learner.pem");
await writeFile(key, keys.privateKey.export({ type: "pkcs8", format: "pem" }) as string, { mode: 0o600 });

const TENSOR_MIB = 4;
const elements = (TENSOR_MIB * 1024 * 1024) / 4;
const count = Math.max(1, Math.round(modelMiB / TENSOR_MIB));
const tensors = Array.from({ length: count }, (_, i) => ({
  name: `layers.${i}.weight`,
  dtype: "F32" as const,
  shape: [elements / 1024, 1024],
  data: () => {
    const values = new Float32Array(elements);
    for (let j = 0; j < elements; j++) values[j] = (((j * 2654435761 + i) % 2001) - 1000) * 1e-4;
    return new Uint8Array(values.buffer);
  },
}));

try {
  await ensureRegionDeltaBucket(member, region);
  await ensureRegionDeltaMirror(hub, region);
  let start = performance.now();
  const published = await publishGlobalModel(hub, { ...ref, round: 0 }, writeSafetensors(tensors));
  const hubPublishSeconds = (performance.now() - start) / 1000;
  await ensureRunModelMirror(member, region, ref);
  const learner = await runPython([join(scripts, "measure_learner.py")], {
    timeoutMs: 600_000,
    env: {
      PATH: process.env.PATH ?? "",
      SOVEREIGN_RUN: run,
      SOVEREIGN_RUN_NAMESPACE: "default",
      SOVEREIGN_REGION: region,
      SOVEREIGN_ROUND: "0",
      SOVEREIGN_ROUNDS: "1",
      SOVEREIGN_JETSTREAM_DOMAIN: region,
      SOVEREIGN_DELTA_DTYPE: dtype,
      SOVEREIGN_NATS_URL: r.url,
      SOVEREIGN_NATS_USER: r.learner.user,
      SOVEREIGN_NATS_PASSWORD: r.learner.password,
      SOVEREIGN_LEARNER_NAME: "learner-measure-0",
      SOVEREIGN_LEARNER_KEY: key,
      SOVEREIGN_WORK_DIR: join(dir, "work"),
    },
  });
  if (learner.code !== 0) throw new Error(learner.stderr);
  const result = JSON.parse(learner.stdout) as { object: string };
  start = performance.now();
  const arrival = await arrivalOf(hub, region, result.object, 300_000);
  if (!arrival.delta) throw arrival.error;
  const verified = await drain(
    (await openArrivedDelta(hub, arrival.delta, keys.publicKey, { maxBytes: 2 ** 34 })).chunks(),
  );
  const hubVerifySeconds = (performance.now() - start) / 1000;
  console.log(
    JSON.stringify(
      {
        modelMiB: published.size / 2 ** 20,
        hubPublishSeconds,
        ...result,
        hubVerifiedBytes: verified,
        hubVerifySeconds,
      },
      null,
      1,
    ),
  );
  await (await new Objm(member).open(regionDeltaBucket(region))).delete(result.object);
} finally {
  await removeRunModelMirror(member, ref).catch(() => undefined);
  await (await new Objm(hub).open(runModelBucket("default", run))).destroy().catch(() => undefined);
  await rm(dir, { recursive: true, force: true });
  await hub.close();
  await member.close();
}
