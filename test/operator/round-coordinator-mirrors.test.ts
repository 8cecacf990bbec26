// The hub's view of a region's delta mirror on the testbed's real servers: a mirror whose origin
// answers is not silent; one whose origin never answers is, so the grace window stops waiting
// for that region long before its heartbeats are missed (rounds.ts unreachableRegions).
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import test from "ava";
import { RoundCoordinator } from "../../operator/hub/round-coordinator.ts";
import { silentLogger } from "../../operator/runtime/log.ts";
import { ensureRegionDeltaBucket, regionDeltaBucket } from "../../transport/mod.ts";
import { objectStoreStream } from "../../transport/objects.ts";
import { eventually, uniqueName, useTestbed } from "../testbed/harness.ts";

test("silentRegions names a region whose delta mirror never hears from its origin, not one whose origin answers", async (t) => {
  const tb = await useTestbed();
  const { hub } = tb.description.nats;
  const nc = await connect({ servers: hub.url, user: hub.admin.user, pass: hub.admin.password });
  // region-a's bucket exists, as once its member has started (the mirror needs an origin).
  const a = tb.description.nats.regions["region-a"];
  if (!a) return t.fail("no region-a in the testbed");
  const member = await connect({ servers: a.url, user: a.member.user, pass: a.member.password });
  await ensureRegionDeltaBucket(member, "region-a");
  await member.close();
  // A region no server serves: its mirror is created, and retries for ever.
  const ghost = uniqueName("ghost");
  t.teardown(async () => {
    await (await jetstreamManager(nc)).streams
      .delete(objectStoreStream(regionDeltaBucket(ghost)))
      .catch(() => undefined);
    await nc.close();
  });
  const coordinator = new RoundCoordinator({
    nc,
    keyFor: () => undefined,
    log: silentLogger,
    onProgress: () => undefined,
  });
  const regions = [
    { name: "region-a", domain: "region-a" },
    { name: ghost, domain: ghost },
  ];
  t.deepEqual(
    await coordinator.silentRegions(["region-a", ghost]),
    [],
    "nothing is judged before the hub mirrors a region",
  );
  const ref = { namespace: "default", run: uniqueName("silent"), round: 1, uid: "uid-silent" };
  const settings = { algorithm: { type: "FedAvg" }, maxDeltaBytes: 1 << 20 } as Parameters<
    RoundCoordinator["delivered"]
  >[2];
  // Looking for a round's deltas makes the hub mirror both regions.
  coordinator.delivered(ref, regions, settings);
  await eventually(
    async () => (await coordinator.silentRegions(["region-a", ghost])).length > 0,
    "the ghost region's mirror judged silent",
    15_000,
  );
  // region-a's mirror hears from its origin once it has connected (a fresh mirror is silent
  // until then): within seconds, only the ghost is left.
  await eventually(
    async () => (await coordinator.silentRegions(["region-a", ghost])).join() === ghost,
    "only the ghost region judged silent",
    15_000,
  );
  t.deepEqual(await coordinator.silentRegions(["region-a", ghost]), [ghost]);
});
