// A watch killed by an API server restart: the supervised informer notices, relists
// with backoff and the controller sees what changed, with no event lost for good.
import { CoreV1Api, type V1ConfigMap } from "@kubernetes/client-node";
import test from "ava";
import { SupervisedInformer } from "../../operator/runtime/informer.ts";
import { OperatorMetrics } from "../../operator/runtime/metrics.ts";
import { testNamespace, useTestbed } from "../testbed/harness.ts";
import { restart } from "../testbed/testbed.ts";

test.serial("an informer whose watch dies with its API server restarts and catches up", async (t) => {
  const tb = await useTestbed();
  const ns = await testNamespace(t, tb, "hub", "watch");
  const kc = tb.kubeConfig("hub");
  const core = kc.makeApiClient(CoreV1Api);
  const metrics = new OperatorMetrics({ defaultMetrics: false });
  const keys = new Set<string>();
  const informer = new SupervisedInformer<V1ConfigMap>({
    kc,
    path: `/api/v1/namespaces/${ns}/configmaps`,
    list: () => core.listNamespacedConfigMap({ namespace: ns }),
    onKey: (k) => keys.add(k),
    minBackoffMs: 200,
    maxBackoffMs: 2_000,
    metrics,
  });
  await informer.start();
  t.teardown(() => informer.stop());
  await core.createNamespacedConfigMap({ namespace: ns, body: { metadata: { name: "before" } } });
  const deadline = () => Date.now() + 30_000;
  for (const end = deadline(); !keys.has(`${ns}/before`) && Date.now() < end; )
    await new Promise((r) => setTimeout(r, 50));
  t.true(keys.has(`${ns}/before`));

  await restart("hub/kube-apiserver", { log: t.log });
  await core.createNamespacedConfigMap({ namespace: ns, body: { metadata: { name: "after" } } });
  for (const end = deadline(); !keys.has(`${ns}/after`) && Date.now() < end; )
    await new Promise((r) => setTimeout(r, 100));
  t.true(keys.has(`${ns}/after`), "the restarted informer saw an object created after the restart");
  t.truthy(informer.get("after", ns), "and its cache holds it");
  t.truthy(informer.get("before", ns), "and still holds what it had");
  t.log(`informer restarts: ${informer.restarts}`);
});
