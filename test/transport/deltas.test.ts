// Deltas from a learner in a region to the hub, on the testbed's real servers: the learner
// puts into its own region's JetStream domain with its own restricted credential, the hub
// reads its mirror (fed over the leaf link the region dialled) and verifies every byte
// against the learner's signed manifest.
import { generateKeyPairSync } from "node:crypto";
import { Objm } from "@nats-io/obj";
import test, { type ExecutionContext } from "ava";
import { decodeDeltaToArrays, openSafetensors, serializeSignedManifest } from "../../deltas/mod.ts";
import {
  deltaArrivals,
  deltaObjectName,
  ensureRegionDeltaBucket,
  ensureRegionDeltaMirror,
  MANIFEST_METADATA,
  openArrivedDelta,
  publishDelta,
  regionDeltaBucket,
} from "../../transport/mod.ts";
import { gaussian } from "../deltas/helpers.ts";
import { uniqueName, useTestbed } from "../testbed/harness.ts";
import { arrivalOf, connectParties, drain, learnerKeys, refusal, signedDelta } from "./fixtures.ts";

const MiB = 1024 * 1024;

async function arrivalRefusal(hub: Parameters<typeof arrivalOf>[0], region: string, name: string) {
  const arrival = await arrivalOf(hub, region, name);
  return arrival.delta ? "accepted" : refusal(Promise.reject(arrival.error));
}

async function regionReady(t: ExecutionContext, region: string) {
  const tb = await useTestbed();
  const parties = await connectParties(t, tb, region);
  await ensureRegionDeltaBucket(parties.member, region);
  await ensureRegionDeltaMirror(parties.hub, region);
  return { tb, ...parties };
}

test("a learner's delta is verified at the hub from the region's mirror and decodes to what was sent", async (t) => {
  const region = "region-a";
  const { hub, learner } = await regionReady(t, region);
  const run = uniqueName("xfer");
  const weights = gaussian(64 * 48, 0.01, 11);
  const bias = gaussian(48, 0.01, 12);
  for (const encoding of ["fp32", "int8-block128"] as const) {
    const { file, signed } = await signedDelta({
      run,
      round: 1,
      region,
      learner: `learner-${encoding}`,
      encoding,
      tensors: [
        { name: "layer.weight", shape: [64, 48], values: weights },
        { name: "layer.bias", shape: [48], values: bias },
      ],
    });
    const published = await publishDelta(learner, { region, namespace: "default", signed, source: [file] });
    t.is(published.size, file.byteLength);

    const arrival = await arrivalOf(hub, region, published.name);
    if (!arrival.delta) throw arrival.error;
    t.deepEqual(arrival.delta.signed, signed);
    const stream = await openArrivedDelta(hub, arrival.delta, learnerKeys.publicKey, { maxBytes: 64 * MiB });
    const decoded = await decodeDeltaToArrays(stream);
    const original = await decodeDeltaToArrays(await openSafetensors([file]));
    t.deepEqual(decoded, original, `${encoding}: the hub decodes exactly what the learner encoded`);
  }
});

test("the hub refuses, with a reason, objects that are not a region's signed delta for their place", async (t) => {
  const region = "region-b";
  const { hub, learner } = await regionReady(t, region);
  const run = uniqueName("refuse");
  const tensors = [{ name: "w", shape: [256], values: gaussian(256, 0.01, 5) }];
  const store = await new Objm(learner).open(regionDeltaBucket(region));
  const put = async (name: string, bytes: Uint8Array, manifest?: Uint8Array) =>
    store.putBlob(
      {
        name,
        ...(manifest ? { metadata: { [MANIFEST_METADATA]: new TextDecoder().decode(manifest) } } : {}),
      },
      bytes,
    );

  // No manifest at all: a learner that bypassed the SDK.
  const good = await signedDelta({ run, round: 3, region, learner: "l0", tensors });
  const bare = deltaObjectName({ namespace: "default", run, round: 3, learner: "l0" });
  await put(bare, good.file);
  t.is(await arrivalRefusal(hub, region, bare), "DeltaManifestMissing");

  // A manifest signed for region-a, put in region-b's bucket: a region cannot speak for another.
  const foreign = await signedDelta({ run, round: 3, region: "region-a", learner: "l1", tensors });
  const foreignName = deltaObjectName({ namespace: "default", run, round: 3, learner: "l1" });
  await put(foreignName, foreign.file, serializeSignedManifest(foreign.signed));
  t.is(await arrivalRefusal(hub, region, foreignName), "DeltaAddressMismatch");

  // A manifest for round 2 under round 3's name: a replayed old delta.
  const old = await signedDelta({ run, round: 2, region, learner: "l2", tensors });
  const replayName = deltaObjectName({ namespace: "default", run, round: 3, learner: "l2" });
  await put(replayName, old.file, serializeSignedManifest(old.signed));
  t.is(await arrivalRefusal(hub, region, replayName), "DeltaAddressMismatch");

  // A delta signed for the run of the same name in another namespace, put under this one's:
  // the namespace is signed, so it cannot be moved to another tenant's run.
  const otherTenant = await signedDelta({
    namespace: "tenant-b",
    run,
    round: 3,
    region,
    learner: "l6",
    tensors,
  });
  const movedName = deltaObjectName({ namespace: "default", run, round: 3, learner: "l6" });
  await put(movedName, otherTenant.file, serializeSignedManifest(otherTenant.signed));
  t.is(await arrivalRefusal(hub, region, movedName), "DeltaAddressMismatch");

  // Bytes altered after signing (same length): found while streaming, before anything counts.
  const tampered = await signedDelta({ run, round: 3, region, learner: "l3", tensors });
  const altered = tampered.file.slice();
  altered[altered.length - 5] = (altered[altered.length - 5] as number) ^ 0x40;
  const tamperedName = deltaObjectName({ namespace: "default", run, round: 3, learner: "l3" });
  await put(tamperedName, altered, serializeSignedManifest(tampered.signed));
  const arrival = await arrivalOf(hub, region, tamperedName);
  if (!arrival.delta) throw arrival.error;
  const stream = await openArrivedDelta(hub, arrival.delta, learnerKeys.publicKey, { maxBytes: MiB });
  t.is(await refusal(drain(stream.chunks())), "ManifestDigestMismatch");

  // Signed by a key that is not the one bound to the learner's attested GPU.
  const intruder = generateKeyPairSync("ed25519");
  const forged = await signedDelta({
    run,
    round: 3,
    region,
    learner: "l4",
    tensors,
    key: intruder.privateKey,
    publicKey: intruder.publicKey,
  });
  const forgedPublished = await publishDelta(learner, {
    region,
    namespace: "default",
    signed: forged.signed,
    source: [forged.file],
  });
  const forgedArrival = await arrivalOf(hub, region, forgedPublished.name);
  if (!forgedArrival.delta) throw forgedArrival.error;
  t.is(
    await refusal(openArrivedDelta(hub, forgedArrival.delta, learnerKeys.publicKey, { maxBytes: MiB })),
    "ManifestKeyMismatch",
  );

  // Larger than the hub accepts: refused from the object's size, before a byte is read.
  const big = await signedDelta({
    run,
    round: 3,
    region,
    learner: "l5",
    tensors: [{ name: "w", shape: [65536], values: gaussian(65536, 0.01, 6) }],
  });
  const bigPublished = await publishDelta(learner, {
    region,
    namespace: "default",
    signed: big.signed,
    source: [big.file],
  });
  const bigArrival = await arrivalOf(hub, region, bigPublished.name);
  if (!bigArrival.delta) throw bigArrival.error;
  t.is(
    await refusal(openArrivedDelta(hub, bigArrival.delta, learnerKeys.publicKey, { maxBytes: 64 * 1024 })),
    "DeltaObjectTooLarge",
  );

  // A learner may not publish a manifest for another region, or another namespace, from its own server.
  t.is(
    await refusal(
      publishDelta(learner, { region, namespace: "default", signed: foreign.signed, source: [foreign.file] }),
    ),
    "DeltaAddressMismatch",
  );
  t.is(
    await refusal(
      publishDelta(learner, {
        region,
        namespace: "default",
        signed: otherTenant.signed,
        source: [otherTenant.file],
      }),
    ),
    "DeltaAddressMismatch",
  );
});

test("deltaArrivals names each delta as it lands in the hub's mirror, and none that was there before", async (t) => {
  const region = "region-c";
  const { hub, learner } = await regionReady(t, region);
  const run = uniqueName("arrive");
  const publish = async (round: number) => {
    const { file, signed } = await signedDelta({
      run,
      round,
      region,
      learner: "learner-0",
      encoding: "fp32",
      tensors: [{ name: "w", shape: [4], values: gaussian(4, 0.01, round) }],
    });
    return publishDelta(learner, { region, namespace: "default", signed, source: [file] });
  };
  const before = await publish(1);
  await arrivalOf(hub, region, before.name); // in the mirror before the watch starts
  const abort = new AbortController();
  t.teardown(() => abort.abort());
  const seen: string[] = [];
  const watching = (async () => {
    for await (const name of deltaArrivals(hub, region, abort.signal)) {
      if (name.includes(run)) seen.push(name);
      if (seen.length === 1) return;
    }
  })();
  // The watch's consumer exists before the next delta, or it would start after it.
  await new Promise((r) => setTimeout(r, 500));
  const after = await publish(2);
  await Promise.race([
    watching,
    new Promise((_, reject) => setTimeout(() => reject(new Error("no arrival in 15 s")), 15_000)),
  ]);
  t.deepEqual(seen, [after.name]);
});
