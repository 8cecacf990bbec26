// Three 64 MiB deltas read at once from the hub's mirrors on one connection, as the hub reads a
// closing round's deltas (addVerifiedDeltas). Each reader may keep only a bounded window
// unread: together they must stay under the connection's max_pending, or the server drops
// their messages as to a slow consumer and the reads stall (found by bench/hub-aggregate.ts:
// with the window sized on the server's 8 MB max_payload, three readers overran 64 MiB).
import test from "ava";
import { Accumulator, addVerifiedDeltas } from "../../deltas/aggregate/mod.ts";
import { writeDelta } from "../../deltas/mod.ts";
import {
  arrivedDeltaBytes,
  ensureRegionDeltaBucket,
  ensureRegionDeltaMirror,
  publishDelta,
} from "../../transport/mod.ts";
import { uniqueName, useTestbed } from "../testbed/harness.ts";
import { arrivalOf, connectParties, generatedTensors, learnerKeys, signedStreamedDelta } from "./fixtures.ts";

const SIZE_MIB = 64;

test("three large deltas read at once on the hub's connection are each read once, and the hub's server sees no slow consumer", async (t) => {
  t.timeout(5 * 60_000);
  const tb = await useTestbed();
  const regions = ["region-a", "region-b", "region-c"];
  const run = uniqueName("concurrent");
  const tensors = generatedTensors(SIZE_MIB);
  const arrivals = [];
  let hub: Awaited<ReturnType<typeof connectParties>>["hub"] | undefined;
  for (const region of regions) {
    const parties = await connectParties(t, tb, region);
    hub ??= parties.hub;
    await ensureRegionDeltaBucket(parties.member, region);
    await ensureRegionDeltaMirror(parties.hub, region);
    const spec = { run, round: 1, region, learner: "learner-0" };
    const signed = await signedStreamedDelta(spec, () => writeDelta(tensors, "fp32"));
    const published = await publishDelta(parties.learner, {
      region,
      namespace: "default",
      signed,
      source: writeDelta(tensors, "fp32"),
    });
    const arrival = await arrivalOf(parties.hub, region, published.name, 2 * 60_000);
    if (!arrival.delta) throw arrival.error;
    arrivals.push(arrival.delta);
  }
  const hubNc = hub as NonNullable<typeof hub>;
  const slowConsumers = async () =>
    ((await (await fetch(`${tb.description.nats.hub.monitorUrl}/varz`)).json()) as { slow_consumers: number })
      .slow_consumers;
  const before = await slowConsumers();

  const opens = arrivals.map(() => 0);
  const accumulator = new Accumulator(tensors.map((x) => ({ name: x.name, shape: x.shape })));
  const reports = await addVerifiedDeltas(
    accumulator,
    arrivals.map((arrival, i) => ({
      signed: arrival.signed,
      trustedKey: learnerKeys.publicKey,
      open: () => {
        opens[i] = (opens[i] as number) + 1;
        return arrivedDeltaBytes(hubNc, arrival, { maxBytes: 2 * SIZE_MIB * 1024 * 1024 });
      },
      read: { expectedTotalBytes: arrival.size },
    })),
  );
  await accumulator.close();
  t.is(reports.length, 3);
  // Read together once: a stalled reader would have failed the group and made it re-read one by one.
  t.deepEqual(opens, [1, 1, 1]);
  t.is(await slowConsumers(), before, "the hub's server dropped messages to a slow consumer");
});
