// A region's leaf nats-server killed and restarted with its JetStream store: the hub's delta
// mirror asked its origin for a consumer while the region was down, that request was lost, and
// the hub's server waits out its 30 s for the answer (then backs off) before asking again. The
// mirror nudger sends the lost request again once the region answers, and the mirror resumes
// at once. The second test measures the server alone, to show what the nudge saves (and to
// notice a nats-server that no longer needs it). Runs in the disruptive suite.
import { jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import test, { type ExecutionContext } from "ava";
import {
  ensureRegionDeltaBucket,
  ensureRegionDeltaMirror,
  type MirrorNudger,
  mirrorNudger,
  regionDeltaBucket,
  regionDeltaMirrorProgress,
} from "../../transport/mod.ts";
import { openObjectStore } from "../../transport/objects.ts";
import { eventually, type Testbed, uniqueName, useTestbed } from "../testbed/harness.ts";
import { start, stop } from "../testbed/testbed.ts";

interface Setup {
  tb: Testbed;
  region: string;
  hub: NatsConnection;
  stream: string;
  nudger: MirrorNudger;
}

async function setUp(t: ExecutionContext): Promise<Setup> {
  const tb = await useTestbed();
  const region = tb.regions.at(-1) as string;
  const { hub: hubDesc } = tb.description.nats;
  const hub = await connect({ servers: hubDesc.url, user: hubDesc.admin.user, pass: hubDesc.admin.password });
  t.teardown(() => hub.close());
  const member = await memberConnection(tb, region);
  await ensureRegionDeltaBucket(member, region);
  await member.close();
  await ensureRegionDeltaMirror(hub, region);
  const stream = `OBJ_${regionDeltaBucket(region)}`;
  const nudger = mirrorNudger(hub, { stream, fromDomain: region });
  t.teardown(() => nudger.close());
  // Caught up and in touch before the outage (a test before this one may have restarted it).
  await putAndWait(tb, hub, region, "before");
  return { tb, region, hub, stream, nudger };
}

function memberConnection(tb: Testbed, region: string): Promise<NatsConnection> {
  const r = tb.description.nats.regions[region];
  if (!r) throw new Error(`no NATS description for ${region}`);
  return connect({ servers: r.url, user: r.member.user, pass: r.member.password });
}

/** Puts a small object into the region's delta bucket; resolves with the origin's last sequence. */
async function put(tb: Testbed, region: string, prefix: string): Promise<number> {
  const member = await memberConnection(tb, region);
  try {
    const os = await openObjectStore(member, regionDeltaBucket(region));
    await os.putBlob({ name: uniqueName(prefix) }, new Uint8Array(1024));
    return (await (await jetstreamManager(member)).streams.info(`OBJ_${regionDeltaBucket(region)}`)).state
      .last_seq;
  } finally {
    await member.close();
  }
}

async function mirrorHas(hub: NatsConnection, stream: string, seq: number): Promise<boolean> {
  return (await (await jetstreamManager(hub)).streams.info(stream)).state.last_seq >= seq;
}

async function putAndWait(tb: Testbed, hub: NatsConnection, region: string, prefix: string): Promise<void> {
  const seq = await put(tb, region, prefix);
  await eventually(
    () => mirrorHas(hub, `OBJ_${regionDeltaBucket(region)}`, seq),
    "the hub's mirror had the object",
    60_000,
  );
}

/**
 * Kills the region's nats-server and keeps it down until the hub's server has sent its mirror
 * a consumer request into the void (the nudger sees it pending while the origin is down), then
 * starts it again. Resolves at the moment the region's server answers again.
 */
async function outageWithLostRequest(t: ExecutionContext, s: Setup): Promise<number> {
  const server = `${s.region}/nats-server`;
  await stop(server, { kill: true, log: t.log });
  try {
    // The mirror notices the silence within 10-20 s and asks again; nobody hears it.
    await eventually(async () => (await s.nudger.nudge()) === "origin-down", "a lost mirror request", 40_000);
  } finally {
    await start(server, { log: t.log });
  }
  return performance.now();
}

test.serial("a region back from a crash: the nudged mirror resumes at once", async (t) => {
  t.timeout(3 * 60_000);
  const s = await setUp(t);
  const back = await outageWithLostRequest(t, s);
  const seq = await put(s.tb, s.region, "after");
  const outcome = await eventually(async () => {
    const o = await s.nudger.nudge();
    return o === "resumed" || o === "nothing-lost" ? o : undefined;
  }, "the nudge to resume the mirror");
  t.is(outcome, "resumed", "the lost request was sent again and answered");
  await eventually(() => mirrorHas(s.hub, s.stream, seq), "the object in the hub's mirror", 5_000);
  const seconds = (performance.now() - back) / 1000;
  t.log(`the mirror had the new object ${seconds.toFixed(2)} s after the region's server was back`);
  t.true(seconds < 5, `${seconds.toFixed(2)} s`);
  const progress = await regionDeltaMirrorProgress(s.hub, s.region);
  t.true(progress.activeAgoMs >= 0 && progress.activeAgoMs < 5_000, "the mirror hears from its origin again");
});

test.serial("without the nudge the hub's server waits out its lost request", async (t) => {
  t.timeout(3 * 60_000);
  const s = await setUp(t);
  const back = await outageWithLostRequest(t, s);
  const seq = await put(s.tb, s.region, "after");
  await eventually(() => mirrorHas(s.hub, s.stream, seq), "the object in the hub's mirror", 120_000);
  const seconds = (performance.now() - back) / 1000;
  t.log(`unnudged, the mirror had the new object ${seconds.toFixed(2)} s after the region's server was back`);
  // The request went out at most a few seconds before the restart: 30 s of waiting on it,
  // then a 10 s backoff. If this fails, the pinned nats-server may have stopped needing the nudge.
  t.true(seconds > 15, `${seconds.toFixed(2)} s`);
});
