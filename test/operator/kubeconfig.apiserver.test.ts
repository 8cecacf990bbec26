// reuseConnections: client-node opens a TLS connection per request unless told otherwise; with
// it, one pool per API server and identity serves every request. Counted with undici's own
// diagnostics channel on the testbed's real API server.
import { subscribe, unsubscribe } from "node:diagnostics_channel";
import { CoreV1Api, KubeConfig } from "@kubernetes/client-node";
import test from "ava";
import { reuseConnections } from "../../operator/runtime/kubeconfig.ts";
import { useTestbed } from "../testbed/harness.ts";

async function connectionsFor(
  kc: KubeConfig,
  requests: number,
): Promise<{ connections: number; ms: number }> {
  let connections = 0;
  const onConnect = () => {
    connections++;
  };
  subscribe("undici:client:connected", onConnect);
  const api = kc.makeApiClient(CoreV1Api);
  const start = performance.now();
  try {
    for (let i = 0; i < requests; i++) await api.listNamespace({ limit: 1 });
  } finally {
    unsubscribe("undici:client:connected", onConnect);
  }
  return { connections, ms: performance.now() - start };
}

test("one connection serves many requests; a second identity gets its own", async (t) => {
  const tb = await useTestbed();
  const fresh = () => {
    const kc = new KubeConfig();
    kc.loadFromString(tb.kubeConfig("hub").exportConfig());
    return kc;
  };
  const plain = await connectionsFor(fresh(), 20);
  const pooledKc = reuseConnections(fresh());
  t.is(reuseConnections(pooledKc), pooledKc, "idempotent");
  const pooled = await connectionsFor(pooledKc, 20);
  t.log(
    `20 requests: ${plain.connections} connections in ${plain.ms.toFixed(0)} ms without, ${pooled.connections} in ${pooled.ms.toFixed(0)} ms with reuseConnections`,
  );
  t.true(plain.connections >= 10, `client-node alone connects per request (${plain.connections})`);
  t.true(pooled.connections <= 2, `pooled: ${pooled.connections} connections`);
  // Another API server through the same KubeConfig object: its own pool, still working.
  const region = tb.kubeConfig(tb.regions[0] as string);
  const both = fresh();
  both.loadFromString(region.exportConfig());
  reuseConnections(both);
  const again = await connectionsFor(both, 5);
  t.true(again.connections >= 1 && again.connections <= 2);
});
