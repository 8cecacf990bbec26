// A region's leaf link cut again and again in the middle of a delta transfer. The learner
// never notices (it writes to its own region's server); the hub's mirror resumes from the
// last message it holds, so what had crossed is not sent again, and nothing is duplicated.
import { jetstreamManager } from "@nats-io/jetstream";
import test from "ava";
import { writeDelta } from "../../deltas/mod.ts";
import {
  ensureRegionDeltaBucket,
  ensureRegionDeltaMirror,
  openArrivedDelta,
  publishDelta,
  regionDeltaBucket,
  regionDeltaMirrorProgress,
} from "../../transport/mod.ts";
import { eventually, uniqueName, useTestbed } from "../testbed/harness.ts";
import { cutLeafLink, type LeafLink, leafLink } from "../testbed/leaf-links.ts";
import {
  arrivalOf,
  connectParties,
  drain,
  generatedTensors,
  learnerKeys,
  signedStreamedDelta,
} from "./fixtures.ts";

const MiB = 1024 * 1024;
const SIZE_MIB = 256;

test("a leaf link cut repeatedly mid-transfer resumes without re-sending what arrived, and the delta verifies", async (t) => {
  t.timeout(5 * 60_000);
  const tb = await useTestbed();
  const region = "region-a";
  const { hub, member, learner } = await connectParties(t, tb, region);
  await ensureRegionDeltaBucket(member, region);
  await ensureRegionDeltaMirror(hub, region);
  const origin = await jetstreamManager(member);
  const stream = `OBJ_${regionDeltaBucket(region)}`;
  // Caught up first (lag 0: it holds everything of the origin's sequence; message counts differ
  // once either side purged old deltas): a test before this one may have restarted the region's
  // server, and the mirror resumes on its own schedule.
  const originBefore = (await origin.streams.info(stream)).state.messages;
  const mirrorBefore = await eventually(async () => {
    const progress = await regionDeltaMirrorProgress(hub, region);
    return progress.lag === 0 && progress.activeAgoMs >= 0 && progress.activeAgoMs < 10_000
      ? progress
      : undefined;
  }, "the mirror caught up with the region's bucket before the transfer");
  const linkBefore = (await leafLink(tb, region)) as LeafLink;

  const spec = { run: uniqueName("cut"), round: 1, region, learner: "learner-0" };
  const source = () => writeDelta(generatedTensors(SIZE_MIB), "fp32");
  const signed = await signedStreamedDelta(spec, source);
  const publishing = publishDelta(learner, { region, namespace: "default", signed, source: source() });

  // Cut once a fifth has crossed, then keep cutting for 3 s so the link stays down a while.
  await eventually(
    async () =>
      (await regionDeltaMirrorProgress(hub, region)).bytes - mirrorBefore.bytes > (SIZE_MIB * MiB) / 5,
    "a fifth of the delta in the hub's mirror",
    120_000,
  );
  const cuts: LeafLink[] = [];
  const cutUntil = performance.now() + 3000;
  while (performance.now() < cutUntil) {
    const cut = await cutLeafLink(tb, region);
    if (cut && cut.id !== cuts.at(-1)?.id) cuts.push(cut);
    await new Promise((r) => setTimeout(r, 200));
  }
  const mirroredAtLastCut = (await regionDeltaMirrorProgress(hub, region)).bytes - mirrorBefore.bytes;
  t.true(cuts.length >= 1, "the link was cut");

  const published = await publishing;
  const arrival = await arrivalOf(hub, region, published.name, 120_000);
  if (!arrival.delta) throw arrival.error;
  const verified = await openArrivedDelta(hub, arrival.delta, learnerKeys.publicKey, {
    maxBytes: 2 * SIZE_MIB * MiB,
  });
  t.is(await drain(verified.chunks()), verified.header.dataBytes);

  // Nothing twice: the mirror gained exactly the messages the origin gained during the test
  // (totals differ once either side purged old deltas; the mirror does not follow purges).
  const originGained = (await origin.streams.info(stream)).state.messages - originBefore;
  await eventually(async () => {
    const now = await regionDeltaMirrorProgress(hub, region);
    return now.lag === 0 && now.messages - mirrorBefore.messages === originGained ? true : undefined;
  }, "the mirror caught up, with each of the origin's new messages once");
  // Nothing re-sent: the bytes the hub received over all the link's connections add up to
  // about one delta (plus protocol overhead), not one delta plus what was already across.
  const linkAfter = (await leafLink(tb, region)) as LeafLink;
  const received =
    (cuts[0] as LeafLink).inBytes -
    linkBefore.inBytes +
    cuts.slice(1).reduce((sum, c) => sum + c.inBytes, 0) +
    (linkAfter.id === cuts.at(-1)?.id ? 0 : linkAfter.inBytes);
  const ratio = received / signed.manifest.size;
  t.log(
    `${cuts.length} cuts over 3 s with ${(mirroredAtLastCut / MiB).toFixed(0)} MiB across at the last; ` +
      `the hub received ${(received / MiB).toFixed(1)} MiB over the link for a ${(signed.manifest.size / MiB).toFixed(1)} MiB delta (×${ratio.toFixed(3)})`,
  );
  t.true(mirroredAtLastCut < signed.manifest.size, "the cuts happened mid-transfer");
  t.true(ratio < 1.1, `received ×${ratio.toFixed(3)} of the delta's size`);
});
