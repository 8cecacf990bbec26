// Global models, hub → regions, on the testbed's real servers: the hub publishes a round's
// model once; a region placed in the run mirrors the run's bucket and its learners read the
// local copy; a region that is not in the run has nothing to read.
import { createHash, randomBytes } from "node:crypto";
import { jetstreamManager } from "@nats-io/jetstream";
import { Objm } from "@nats-io/obj";
import test from "ava";
import {
  ensureRunModelMirror,
  fetchGlobalModel,
  MODEL_DIGEST_METADATA,
  ModelMirrorSweeper,
  modelObjectName,
  publishGlobalModel,
  type RunRef,
  removeRunModelMirror,
  runModelBucket,
  runModelMirrorProgress,
} from "../../transport/mod.ts";
import { eventually, uniqueName, useTestbed } from "../testbed/harness.ts";
import { connectParties, refusal } from "./fixtures.ts";

async function collect(source: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const part of source) parts.push(part);
  return Buffer.concat(parts);
}

test("a round's global model published once at the hub is fetched by a region's learner from its own mirror", async (t) => {
  const tb = await useTestbed();
  const region = "region-c";
  const { hub, member, learner } = await connectParties(t, tb, region);
  const ref = { namespace: "default", run: uniqueName("model") };
  const model = randomBytes(3 * 1024 * 1024 + 17);

  const published = await publishGlobalModel(hub, { ...ref, round: 0 }, [model]);
  t.is(published.digest, `sha256:${createHash("sha256").update(model).digest("hex")}`);
  t.teardown(async () => {
    await removeRunModelMirror(member, ref);
    await new Objm(hub).open(runModelBucket(ref.namespace, ref.run)).then((s) => s.destroy());
  });

  // Before the member mirrors the run, its learners have nothing to read.
  t.is(await refusal(fetchGlobalModel(learner, { ...ref, round: 0 })), "ModelObjectMissing");

  await ensureRunModelMirror(member, region, ref);
  await ensureRunModelMirror(member, region, ref); // idempotent: the member reconciles it every pass
  const fetched = await eventually(
    () => fetchGlobalModel(learner, { ...ref, round: 0 }).catch(() => undefined),
    "the round-0 model in region-c's mirror",
  );
  t.is(fetched.digest, published.digest);
  t.true((await collect(fetched.data)).equals(model));

  // The next round arrives through the same mirror with no further set-up.
  const next = randomBytes(1024);
  await publishGlobalModel(hub, { ...ref, round: 1 }, [next]);
  const fetchedNext = await eventually(
    () => fetchGlobalModel(learner, { ...ref, round: 1 }).catch(() => undefined),
    "the round-1 model",
  );
  t.true((await collect(fetchedNext.data)).equals(next));
  const progress = await runModelMirrorProgress(member, ref);
  t.is(progress.lag, 0);

  // A round the hub has not published is missing, not an empty model.
  t.is(await refusal(fetchGlobalModel(learner, { ...ref, round: 7 })), "ModelObjectMissing");
});

test("a model whose bytes no longer match the digest the hub recorded is refused at the end of the read", async (t) => {
  const tb = await useTestbed();
  const { hub } = await connectParties(t, tb, "region-a");
  const ref = { namespace: "default", run: uniqueName("tamper") };
  const bucket = runModelBucket(ref.namespace, ref.run);
  const original = randomBytes(4096);
  await publishGlobalModel(hub, { ...ref, round: 0 }, [original]);
  const store = await new Objm(hub).open(bucket);
  t.teardown(() => store.destroy().then(() => undefined));
  // Someone with write access to the hub's domain replaces the bytes but keeps the digest.
  const recorded = (await store.info(modelObjectName(0)))?.metadata?.[MODEL_DIGEST_METADATA] as string;
  await store.putBlob(
    { name: modelObjectName(0), metadata: { [MODEL_DIGEST_METADATA]: recorded } },
    randomBytes(4096),
  );
  const fetched = await fetchGlobalModel(hub, { ...ref, round: 0 });
  t.is(await refusal(collect(fetched.data)), "ModelDigestMismatch");
});

test("a region's mirror of a run whose bucket the hub removed is swept once its source has been gone a while; live and in-use mirrors stay", async (t) => {
  t.timeout(3 * 60_000);
  const tb = await useTestbed();
  const region = "region-b";
  const { hub, member } = await connectParties(t, tb, region);
  const [orphan, inUse, live] = ["orphan", "in-use", "live"].map((n) => ({
    namespace: "default",
    run: uniqueName(n),
  })) as [RunRef, RunRef, RunRef];
  const stream = (r: RunRef) => `OBJ_${runModelBucket(r.namespace, r.run)}`;
  t.teardown(async () => {
    for (const r of [orphan, inUse, live]) {
      await removeRunModelMirror(member, r);
      await new Objm(hub)
        .open(runModelBucket(r.namespace, r.run))
        .then((s) => s.destroy())
        .catch(() => undefined);
    }
  });
  for (const r of [orphan, inUse, live]) {
    await publishGlobalModel(hub, { ...r, round: 0 }, [randomBytes(64)]);
    await ensureRunModelMirror(member, region, r);
  }
  for (const r of [orphan, inUse, live]) {
    await eventually(
      async () =>
        (await runModelMirrorProgress(member, r)).lag === 0 && (await runModelMirrorProgress(member, r)),
      `${r.run} mirrored`,
    );
  }
  // The hub deletes two runs' buckets; the member that mirrored them is not there to see it.
  for (const r of [orphan, inUse]) {
    await new Objm(hub).open(runModelBucket(r.namespace, r.run)).then((s) => s.destroy());
  }
  const ours = (removed: string[]) =>
    removed.filter((n) => [orphan, inUse, live].some((r) => stream(r) === n));
  const existing = async () => {
    const names = new Set<string>();
    for await (const info of (await jetstreamManager(member)).streams.list()) names.add(info.config.name);
    return names;
  };
  // A sweeper with the default minute removes nothing of a mirror it has just seen orphaned.
  const patient = new ModelMirrorSweeper(member);
  // One that waits 2 s: the orphan goes once it has reported its source gone for 2 s
  // (nats-server asks again after 10 s, then backs off).
  const quick = new ModelMirrorSweeper(member, { orphanedAfterMs: 2_000 });
  // Other members on this region's server (tests running meanwhile) sweep too, without this
  // test's in-use run: the orphan may go by their hand, and so may the in-use mirror after a
  // minute. What this test's sweepers removed is checked exactly.
  const removedHere: string[] = [];
  const removedByPatient: string[] = [];
  await eventually(
    async () => {
      removedByPatient.push(...ours(await patient.sweep([inUse])));
      removedHere.push(...ours(await quick.sweep([inUse])));
      return !(await existing()).has(stream(orphan));
    },
    "the orphaned mirror swept",
    90_000,
  );
  t.deepEqual(removedByPatient, [], "within its minute, a just-orphaned mirror stays");
  t.false(removedHere.includes(stream(inUse)), "a member's own run keeps its mirror whatever it reports");
  t.false(removedHere.includes(stream(live)), "a mirror whose source is there is never swept");
  const names = await existing();
  t.false(names.has(stream(orphan)));
  t.true(names.has(stream(live)), "a mirror whose source is there stays");
});
