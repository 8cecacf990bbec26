// The testbed's NATS topology against the real servers: a region's JetStream domain is
// readable from the hub across the leaf link that the region dialled, and the servers
// (not the clients) keep regions out of each other's subjects.
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import test from "ava";
import { uniqueName, useTestbed } from "./harness.ts";

async function natsAs(url: string, user: { user: string; password: string }): Promise<NatsConnection> {
  return connect({ servers: url, user: user.user, pass: user.password, name: `test-${user.user}` });
}

/** Resolves with the first permission violation the server reports on this connection. */
function nextPermissionViolation(nc: NatsConnection): Promise<{ operation: string; subject: string }> {
  return (async () => {
    for await (const s of nc.status()) {
      if (s.type === "error" && s.error.name === "PermissionViolationError") {
        const e = s.error as Error & { operation: string; subject: string };
        return { operation: e.operation, subject: e.subject };
      }
    }
    throw new Error("connection closed without a permission violation");
  })();
}

test("a message stored in a region's JetStream domain is read at the hub across the leaf link", async (t) => {
  const tb = await useTestbed();
  const { hub, regions } = tb.description.nats;
  const region = tb.regions[0] as string;
  const r = regions[region];
  if (!r) throw new Error(`no NATS description for ${region}`);
  const stream = uniqueName("LEAFTEST").toUpperCase().replaceAll("-", "_");
  const subject = `sovereign.${region}.leaftest.${stream.toLowerCase()}`;

  const member = await natsAs(r.url, r.member);
  const learner = await natsAs(r.url, r.learner);
  const atHub = await natsAs(hub.url, hub.admin);
  t.teardown(async () => {
    await (await jetstreamManager(member)).streams.delete(stream).catch(() => undefined);
    await Promise.all([member.close(), learner.close(), atHub.close()]);
  });

  // The region creates its stream in its own domain and a learner publishes into it.
  const regionJsm = await jetstreamManager(member);
  await regionJsm.streams.add({ name: stream, subjects: [subject] });
  const ack = await jetstream(learner).publish(subject, "delta-bytes", { msgID: "round-1-learner-0" });
  t.is(ack.domain, region, "the region's own JetStream domain stored it");

  // The hub addresses the region's domain by name; the request crosses the leaf link.
  const hubView = await jetstreamManager(atHub, { domain: region });
  const info = await hubView.streams.info(stream);
  t.is(info.state.messages, 1);
  const msg = await hubView.streams.getMessage(stream, { seq: ack.seq });
  t.is(msg?.string(), "delta-bytes");
  t.is(msg?.subject, subject);

  // A duplicate publish with the same message id is not stored twice.
  const dup = await jetstream(learner).publish(subject, "delta-bytes", { msgID: "round-1-learner-0" });
  t.true(dup.duplicate);
  t.is((await hubView.streams.info(stream)).state.messages, 1);
});

test("the region server refuses a learner publishing into another region's subjects", async (t) => {
  const tb = await useTestbed();
  const [own, other] = tb.regions as [string, string];
  const r = tb.description.nats.regions[own];
  if (!r) throw new Error(`no NATS description for ${own}`);
  const learner = await natsAs(r.url, r.learner);
  t.teardown(() => learner.close());

  const violation = nextPermissionViolation(learner);
  learner.publish(`sovereign.${other}.deltas.forged`, "x");
  await learner.flush();
  t.deepEqual(await violation, { operation: "publish", subject: `sovereign.${other}.deltas.forged` });
});

test("the hub drops what a region's leaf link sends outside that region's subjects", async (t) => {
  // Even a fully trusted user on a region's own server (or a compromised region server)
  // cannot reach another region's subjects at the hub: the leaf link's hub credential
  // admits only `sovereign.<region>.>`.
  const tb = await useTestbed();
  const [own, other] = tb.regions as [string, string];
  const r = tb.description.nats.regions[own];
  if (!r) throw new Error(`no NATS description for ${own}`);
  const member = await natsAs(r.url, r.member);
  const atHub = await natsAs(tb.description.nats.hub.url, tb.description.nats.hub.admin);
  t.teardown(async () => Promise.all([member.close(), atHub.close()]));

  const tag = uniqueName("iso");
  const forged = atHub.subscribe(`sovereign.${other}.${tag}`);
  const allowed = atHub.subscribe(`sovereign.${own}.${tag}`);
  await atHub.flush();
  // Interest from the hub has to reach the region's server before it forwards anything.
  const deadline = Date.now() + 10_000;
  let received = false;
  const got = (async () => {
    for await (const m of allowed) {
      received = true;
      return m.string();
    }
  })();
  while (!received && Date.now() < deadline) {
    member.publish(`sovereign.${other}.${tag}`, "forged");
    member.publish(`sovereign.${own}.${tag}`, "allowed");
    await member.flush();
    await new Promise((res) => setTimeout(res, 200));
  }
  t.is(await got, "allowed", "the region's own subject crosses the leaf link");
  // Give a forged message every chance to arrive after the allowed ones did.
  await new Promise((res) => setTimeout(res, 500));
  await atHub.flush();
  t.is(forged.getProcessed(), 0, "nothing published under another region's subjects reached the hub");
});

test("a region reads the hub's JetStream domain but cannot change it", async (t) => {
  const tb = await useTestbed();
  const region = tb.regions[0] as string;
  const r = tb.description.nats.regions[region];
  if (!r) throw new Error(`no NATS description for ${region}`);
  const hub = tb.description.nats.hub;
  const member = await natsAs(r.url, r.member);
  const atHub = await natsAs(hub.url, hub.admin);
  const published = uniqueName("GLOBAL").toUpperCase().replaceAll("-", "_");
  const forged = uniqueName("EVIL").toUpperCase().replaceAll("-", "_");
  const hubJsm = await jetstreamManager(atHub);
  t.teardown(async () => {
    await hubJsm.streams.delete(published).catch(() => undefined);
    await hubJsm.streams.delete(forged).catch(() => undefined);
    await Promise.all([member.close(), atHub.close()]);
  });
  await hubJsm.streams.add({ name: published, subjects: [`sovereign.global.${published.toLowerCase()}`] });
  await jetstream(atHub).publish(`sovereign.global.${published.toLowerCase()}`, "global-model-r1");

  const fromRegion = await jetstreamManager(member, { domain: "hub", timeout: 2000 });
  t.is((await fromRegion.getAccountInfo()).domain, "hub");
  t.is((await fromRegion.streams.getMessage(published, { seq: 1 }))?.string(), "global-model-r1");

  // The hub tells the leaf which calls it denies, so the region's own server already
  // has no route for them: the client sees no responder (which nats.js words as
  // "jetstream is not enabled"). What matters is checked at the hub: nothing changed.
  await t.throwsAsync(
    fromRegion.streams.add({ name: forged, subjects: [`sovereign.global.${forged.toLowerCase()}`] }),
  );
  await t.throwsAsync(fromRegion.streams.delete(published));
  await t.throwsAsync(fromRegion.streams.purge(published));
  const names: string[] = [];
  for await (const name of hubJsm.streams.names()) names.push(name);
  t.false(names.includes(forged), "no stream was created in the hub's domain");
  t.is((await hubJsm.streams.info(published)).state.messages, 1, "the published stream is intact");
});
