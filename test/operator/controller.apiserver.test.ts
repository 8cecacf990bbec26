// The runtime end to end against the hub's real apiserver: an informer feeds keys to a
// controller whose reconcile reads the world afresh; failures back off and are counted
// under controller-runtime's metric names; /metrics, /healthz and /readyz answer.
import { CoreV1Api, type V1ConfigMap } from "@kubernetes/client-node";
import test from "ava";
import { Controller } from "../../operator/runtime/controller.ts";
import { SupervisedInformer } from "../../operator/runtime/informer.ts";
import { OperatorMetrics } from "../../operator/runtime/metrics.ts";
import { startProbeServer } from "../../operator/runtime/server.ts";
import { eventually, testNamespace, useTestbed } from "../testbed/harness.ts";

function metricValue(text: string, name: string, labels: string): number {
  const line = text.split("\n").find((l) => l.startsWith(`${name}{`) && l.includes(labels));
  return line ? Number(line.split(" ").at(-1)) : 0;
}

test("an informer-fed controller converges on the world, retries failures with backoff and exposes metrics", async (t) => {
  const tb = await useTestbed();
  const ns = await testNamespace(t, tb, "hub", "ctrl");
  const kc = tb.kubeConfig("hub");
  const core = kc.makeApiClient(CoreV1Api);
  const metrics = new OperatorMetrics({ defaultMetrics: false });

  // Reconcile mirrors each ConfigMap's data.want into a "<name>-mirror" ConfigMap, reading
  // the current object (not the event), and fails twice for "flaky" before succeeding.
  const attempts = new Map<string, number>();
  const controller = new Controller({
    name: "mirror",
    metrics,
    workers: 2,
    reconcile: async (key) => {
      const name = key.split("/")[1] as string;
      if (name.endsWith("-mirror")) return undefined;
      attempts.set(name, (attempts.get(name) ?? 0) + 1);
      if (name === "flaky" && (attempts.get(name) ?? 0) <= 2) throw new Error("transient failure");
      let source: V1ConfigMap | undefined;
      try {
        source = await core.readNamespacedConfigMap({ name, namespace: ns });
      } catch (err) {
        if ((err as { code?: number }).code !== 404) throw err;
      }
      const mirror = `${name}-mirror`;
      if (!source) {
        await core.deleteNamespacedConfigMap({ name: mirror, namespace: ns }).catch(() => undefined);
        return undefined;
      }
      const body = { metadata: { name: mirror, namespace: ns }, data: { want: source.data?.want ?? "" } };
      try {
        await core.replaceNamespacedConfigMap({ name: mirror, namespace: ns, body });
      } catch (err) {
        if ((err as { code?: number }).code !== 404) throw err;
        await core.createNamespacedConfigMap({ namespace: ns, body });
      }
      return undefined;
    },
  });
  const informer = new SupervisedInformer<V1ConfigMap>({
    kc,
    path: `/api/v1/namespaces/${ns}/configmaps`,
    list: () => core.listNamespacedConfigMap({ namespace: ns }),
    onKey: (key) => controller.enqueue(key),
    metrics,
  });
  const abort = new AbortController();
  const running = controller.run(abort.signal);
  await informer.start();
  const probes = await startProbeServer({
    host: "127.0.0.1",
    port: 0,
    metrics,
    healthz: { ping: () => ({ ok: true }) },
    readyz: { informers: () => ({ ok: informer.hasSynced(), reason: "caches not synced" }) },
  });
  t.teardown(async () => {
    abort.abort();
    await informer.stop();
    await running;
    await probes.close();
  });

  const read = (name: string) =>
    core.readNamespacedConfigMap({ name, namespace: ns }).then(
      (cm) => cm.data?.want,
      () => undefined,
    );
  await core.createNamespacedConfigMap({
    namespace: ns,
    body: { metadata: { name: "alpha" }, data: { want: "1" } },
  });
  await core.createNamespacedConfigMap({
    namespace: ns,
    body: { metadata: { name: "flaky" }, data: { want: "x" } },
  });
  await eventually(async () => (await read("alpha-mirror")) === "1", "alpha-mirror = 1");
  await eventually(async () => (await read("flaky-mirror")) === "x", "flaky-mirror = x");
  t.is(attempts.get("flaky"), 3, "failed twice, retried, then succeeded");

  await core.replaceNamespacedConfigMap({
    name: "alpha",
    namespace: ns,
    body: { metadata: { name: "alpha" }, data: { want: "2" } },
  });
  await eventually(async () => (await read("alpha-mirror")) === "2", "alpha-mirror = 2");
  await core.deleteNamespacedConfigMap({ name: "alpha", namespace: ns });
  await eventually(async () => (await read("alpha-mirror")) === undefined, "alpha-mirror = undefined");

  const res = await fetch(`http://127.0.0.1:${probes.port}/metrics`);
  const text = await res.text();
  t.true(metricValue(text, "controller_runtime_reconcile_errors_total", 'controller="mirror"') >= 2);
  t.true(metricValue(text, "controller_runtime_reconcile_total", 'result="success"') >= 4);
  t.true(metricValue(text, "workqueue_retries_total", 'name="mirror"') >= 2);
  t.true(metricValue(text, "workqueue_adds_total", 'name="mirror"') >= 5);
  t.regex(text, /controller_runtime_reconcile_time_seconds_bucket\{le="0\.005",controller="mirror"\}/);
  t.is((await fetch(`http://127.0.0.1:${probes.port}/healthz`)).status, 200);
  const ready = await fetch(`http://127.0.0.1:${probes.port}/readyz`);
  t.is(ready.status, 200);
  t.regex(await ready.text(), /\[\+\]informers ok/);
});

test("readyz names the check that fails", async (t) => {
  const metrics = new OperatorMetrics({ defaultMetrics: false });
  const probes = await startProbeServer({
    host: "127.0.0.1",
    port: 0,
    metrics,
    healthz: {},
    readyz: { informers: () => ({ ok: false, reason: "caches not synced" }), lease: () => ({ ok: true }) },
  });
  t.teardown(() => probes.close());
  const res = await fetch(`http://127.0.0.1:${probes.port}/readyz`);
  t.is(res.status, 503);
  t.regex(await res.text(), /\[-\]informers failed: caches not synced/);
  t.is((await fetch(`http://127.0.0.1:${probes.port}/nope`)).status, 404);
});
