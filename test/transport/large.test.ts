// A 1 GiB delta (SOVEREIGN_LARGE_DELTA_MIB to change it) from a learner to the hub, through
// the region's bucket, the leaf link and the hub's mirror, verified byte for byte against the
// signed manifest, streaming on both sides: neither end ever holds the whole delta.
import test from "ava";
import { writeDelta } from "../../deltas/mod.ts";
import {
  ensureRegionDeltaBucket,
  ensureRegionDeltaMirror,
  openArrivedDelta,
  publishDelta,
} from "../../transport/mod.ts";
import { uniqueName, useTestbed } from "../testbed/harness.ts";
import {
  arrivalOf,
  connectParties,
  drain,
  generatedTensors,
  learnerKeys,
  signedStreamedDelta,
  TENSOR_MIB,
} from "./fixtures.ts";

const MiB = 1024 * 1024;
const SIZE_MIB = Number(process.env.SOVEREIGN_LARGE_DELTA_MIB ?? 1024);

test(`a ${SIZE_MIB} MiB delta crosses the leaf link and verifies at the hub without either side holding it whole`, async (t) => {
  t.timeout(10 * 60_000);
  const tb = await useTestbed();
  const region = "region-b";
  const { hub, member, learner } = await connectParties(t, tb, region);
  await ensureRegionDeltaBucket(member, region);
  await ensureRegionDeltaMirror(hub, region);
  const run = uniqueName("large");
  const spec = { run, round: 1, region, learner: "learner-0" };

  let peakRss = process.memoryUsage().rss;
  const sampler = setInterval(() => {
    peakRss = Math.max(peakRss, process.memoryUsage().rss);
  }, 50);
  t.teardown(() => clearInterval(sampler));
  const baseline = process.memoryUsage().rss;

  const signed = await signedStreamedDelta(spec, () => writeDelta(generatedTensors(SIZE_MIB), "fp32"));
  t.true(signed.manifest.size > SIZE_MIB * MiB);
  const started = performance.now();
  const published = await publishDelta(learner, {
    region,
    namespace: "default",
    signed,
    source: writeDelta(generatedTensors(SIZE_MIB), "fp32"),
  });
  const putMs = performance.now() - started;

  const arrival = await arrivalOf(hub, region, published.name, 5 * 60_000);
  if (!arrival.delta) throw arrival.error;
  const arrivedMs = performance.now() - started;
  const stream = await openArrivedDelta(hub, arrival.delta, learnerKeys.publicKey, {
    maxBytes: 2 * SIZE_MIB * MiB,
  });
  const verifiedBytes = await drain(stream.chunks());
  const totalMs = performance.now() - started;
  clearInterval(sampler);

  // Every data byte of the delta went through the digest check.
  t.is(verifiedBytes, stream.header.dataBytes);
  t.is(stream.header.totalBytes, signed.manifest.size);
  const growthMiB = (peakRss - baseline) / MiB;
  t.log(
    `${SIZE_MIB} MiB: learner put ${(putMs / 1000).toFixed(1)} s, at the hub after ${(arrivedMs / 1000).toFixed(1)} s, verified after ${(totalMs / 1000).toFixed(1)} s; ` +
      `peak RSS +${growthMiB.toFixed(0)} MiB over ${(baseline / MiB).toFixed(0)} MiB`,
  );
  // Streaming: a few tensors in flight at most, never the delta (generation holds one 64 MiB
  // tensor and its encoded copy, the client buffers a window of chunks).
  t.true(growthMiB < 6 * TENSOR_MIB, `peak RSS grew ${growthMiB.toFixed(0)} MiB for a ${SIZE_MIB} MiB delta`);
});
