// Restarting one kube-apiserver and one leaf nats-server: the testbed comes back on the
// same ports with the same data. Runs alone, after the main suite (ava.disruptive.config.js).
import { CoreV1Api } from "@kubernetes/client-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import test from "ava";
import { testNamespace, uniqueName, useTestbed } from "./harness.ts";
import { restart, status } from "./testbed.ts";

test.serial("a restarted kube-apiserver keeps everything written before it stopped", async (t) => {
  const tb = await useTestbed();
  const region = tb.regions[0] as string;
  const ns = await testNamespace(t, tb, region, "restart");
  const api = tb.kubeConfig(region).makeApiClient(CoreV1Api);
  await api.createNamespacedConfigMap({
    namespace: ns,
    body: { metadata: { name: "before" }, data: { round: "7" } },
  });
  const pidBefore = tb.description.processes.find((p) => p.name === `${region}/kube-apiserver`)?.pid;

  await restart(`${region}/kube-apiserver`, { log: t.log });

  const after = (await status())?.find((s) => s.name === `${region}/kube-apiserver`);
  t.true(after?.ready);
  t.not(after?.pid, pidBefore, "it really is a new process");
  const cm = await api.readNamespacedConfigMap({ name: "before", namespace: ns });
  t.is(cm.data?.round, "7");
  // And it takes writes again: the cluster recovered, not just the read path.
  await api.createNamespacedConfigMap({ namespace: ns, body: { metadata: { name: "after" } } });
  const nodes = await api.listNode();
  t.true(nodes.items.length > 0);
});

test.serial("a restarted leaf nats-server keeps its JetStream data and re-links to the hub", async (t) => {
  const tb = await useTestbed();
  const region = tb.regions[0] as string;
  const r = tb.description.nats.regions[region];
  if (!r) throw new Error(`no NATS description for ${region}`);
  const stream = uniqueName("RESTART").toUpperCase().replaceAll("-", "_");
  const subject = `sovereign.${region}.restart.${stream.toLowerCase()}`;

  const before = await connect({ servers: r.url, user: r.member.user, pass: r.member.password });
  const jsm = await jetstreamManager(before);
  await jsm.streams.add({ name: stream, subjects: [subject] });
  for (let i = 0; i < 10; i++) await jetstream(before).publish(subject, `delta-${i}`);
  await before.close();

  await restart(`${region}/nats-server`, { log: t.log });

  // Across the re-established leaf link, from the hub, every message is still there.
  const hub = tb.description.nats.hub;
  const atHub = await connect({ servers: hub.url, user: hub.admin.user, pass: hub.admin.password });
  t.teardown(async () => {
    await (await jetstreamManager(atHub, { domain: region })).streams.delete(stream).catch(() => undefined);
    await atHub.close();
  });
  const hubView = await jetstreamManager(atHub, { domain: region });
  const deadline = Date.now() + 30_000;
  let messages = -1;
  while (Date.now() < deadline) {
    try {
      messages = (await hubView.streams.info(stream)).state.messages;
      break;
    } catch {
      await new Promise((res) => setTimeout(res, 250)); // leaf link still re-connecting
    }
  }
  t.is(messages, 10);
  t.is((await hubView.streams.getMessage(stream, { seq: 10 }))?.string(), "delta-9");
});
