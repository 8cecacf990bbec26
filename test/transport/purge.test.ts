// Removing a run's old deltas: from the region's bucket (the member) and from the hub's
// mirror of it (the hub), on the testbed's real servers. A mirror follows neither the
// origin's purges nor its rollups, so the hub has to purge its own copy; this test pins
// that server behaviour down, and fails if a server version changes it.
import { jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import test from "ava";
import {
  ensureRegionDeltaBucket,
  ensureRegionDeltaMirror,
  listRegionDeltas,
  openArrivedDelta,
  publishDelta,
  purgeMirroredDeltas,
  purgeRegionDeltas,
  regionDeltaBucket,
} from "../../transport/mod.ts";
import { openObjectStore } from "../../transport/objects.ts";
import { eventually, uniqueName, useTestbed } from "../testbed/harness.ts";
import { arrivalOf, connectParties, drain, learnerKeys, signedDelta } from "./fixtures.ts";

/** How many messages each chunk subject of `nuids` holds in a stream. */
async function chunkCounts(nc: NatsConnection, bucket: string, nuids: string[]): Promise<number[]> {
  const jsm = await jetstreamManager(nc);
  const info = await jsm.streams.info(`OBJ_${bucket}`, { subjects_filter: `$O.${bucket}.C.>` });
  return nuids.map((n) => info.state.subjects?.[`$O.${bucket}.C.${n}`] ?? 0);
}

test("a run's deltas before a round are purged from the region's bucket, and from the hub's mirror only by the hub", async (t) => {
  t.timeout(3 * 60_000);
  const tb = await useTestbed();
  const region = "region-c";
  const { hub, member, learner } = await connectParties(t, tb, region);
  await ensureRegionDeltaBucket(member, region);
  await ensureRegionDeltaMirror(hub, region);
  const bucket = regionDeltaBucket(region);
  const run = uniqueName("purge");
  const other = uniqueName("keep");
  const tensors = [{ name: "w", shape: [300, 1024], values: new Float32Array(300 * 1024).fill(0.001) }];
  const publish = async (r: string, round: number, learnerName = "learner-0") => {
    const { file, signed } = await signedDelta({ run: r, round, region, learner: learnerName, tensors });
    const p = await publishDelta(learner, { region, namespace: "default", signed, source: [file] });
    const arrival = await arrivalOf(hub, region, p.name);
    return { name: p.name, arrival };
  };
  const originStore = await openObjectStore(member, bucket);
  const nuidOf = async (name: string) => (await originStore.info(name))?.nuid as string;
  // Round 1 is published twice (a learner retrying): the mirror keeps both versions.
  const r1a = await publish(run, 1);
  if (!r1a.arrival.delta) throw r1a.arrival.error;
  const r1Versions = [await nuidOf(r1a.name)];
  const r1b = await publish(run, 1);
  r1Versions.push(await nuidOf(r1b.name));
  t.not(r1Versions[0], r1Versions[1]);
  const r2 = await publish(run, 2);
  const r3 = await publish(run, 3);
  const kept = await publish(other, 1);
  const hubStore = await openObjectStore(hub, bucket);
  const purgedNuids = [...r1Versions, await nuidOf(r2.name)];
  const keptNuids = [await nuidOf(r3.name), await nuidOf(kept.name)];
  await eventually(
    async () => (await chunkCounts(hub, bucket, purgedNuids)).every((n) => n > 0),
    "every version in the hub's mirror",
  );

  const origin = await purgeRegionDeltas(member, region, { namespace: "default", run, beforeRound: 3 });
  t.deepEqual(origin.objects.sort(), [r1b.name, r2.name].sort());
  t.is(await originStore.info(r2.name).then((i) => i?.deleted), true);
  t.deepEqual(await chunkCounts(member, bucket, [r1Versions[1] as string, purgedNuids[2] as string]), [0, 0]);
  t.true(
    (await chunkCounts(member, bucket, keptNuids)).every((n) => n > 0),
    "later rounds and other runs stay",
  );

  // The delete markers cross; the mirror reports the objects deleted but keeps their bytes.
  await eventually(
    async () =>
      (await hubStore.info(r2.name))?.deleted === true && (await hubStore.info(r1b.name))?.deleted === true,
    "the delete markers in the hub's mirror",
  );
  t.deepEqual(await listRegionDeltas(hub, region, { namespace: "default", run, round: 2 }), []);
  t.true(
    (await chunkCounts(hub, bucket, purgedNuids)).every((n) => n > 0),
    "a mirror does not follow the origin's purges (if this fails, the server now replicates them: simplify)",
  );

  const mirror = await purgeMirroredDeltas(hub, region, { namespace: "default", run, beforeRound: 3 });
  t.deepEqual(mirror.objects.sort(), [r1b.name, r2.name].sort());
  t.deepEqual(
    await chunkCounts(hub, bucket, purgedNuids),
    [0, 0, 0],
    "every version's chunks gone from the mirror",
  );
  t.is(await hubStore.info(r2.name), null, "and the metas");
  t.true((await chunkCounts(hub, bucket, keptNuids)).every((n) => n > 0));

  // What stays still verifies at the hub.
  const arrival = (await listRegionDeltas(hub, region, { namespace: "default", run, round: 3 }))[0]?.delta;
  if (!arrival) throw new Error("round 3 is gone");
  const verified = await openArrivedDelta(hub, arrival, learnerKeys.publicKey, { maxBytes: 8 * 1024 * 1024 });
  t.is(await drain(verified.chunks()), verified.header.dataBytes);
  // Purging again finds nothing.
  t.deepEqual(
    (await purgeRegionDeltas(member, region, { namespace: "default", run, beforeRound: 3 })).objects,
    [],
  );
});
