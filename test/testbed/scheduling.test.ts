// Each region's real kube-scheduler places a pod that asks for a GPU onto a kwok GPU
// node, and kwok's pod stages take it to Running, as a kubelet would.
import { CoreV1Api, type V1Pod } from "@kubernetes/client-node";
import test from "ava";
import { testNamespace, useTestbed } from "./harness.ts";

async function waitForPhase(
  api: CoreV1Api,
  ns: string,
  name: string,
  phase: string,
  timeoutMs = 60_000,
): Promise<V1Pod> {
  const deadline = Date.now() + timeoutMs;
  let pod: V1Pod | undefined;
  while (Date.now() < deadline) {
    pod = await api.readNamespacedPod({ name, namespace: ns });
    if (pod.status?.phase === phase) return pod;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`pod ${ns}/${name} did not reach ${phase}: ${JSON.stringify(pod?.status)}`);
}

test("a pod requesting nvidia.com/gpu is scheduled onto a GPU node and runs, in every region", async (t) => {
  const tb = await useTestbed();
  t.true(tb.regions.length >= 1);
  await Promise.all(
    tb.regions.map(async (region) => {
      const api = tb.kubeConfig(region).makeApiClient(CoreV1Api);
      const ns = await testNamespace(t, tb, region, "gpu");
      await api.createNamespacedPod({
        namespace: ns,
        body: {
          metadata: { name: "learner" },
          spec: {
            containers: [
              {
                name: "train",
                image: "example.invalid/train:1",
                resources: { limits: { "nvidia.com/gpu": "2" } },
              },
            ],
            nodeSelector: { "nvidia.com/cc.mode.state": "on" },
          },
        },
      });
      const pod = await waitForPhase(api, ns, "learner", "Running");
      const node = await api.readNode({ name: pod.spec?.nodeName as string });
      t.is(
        node.metadata?.labels?.["topology.kubernetes.io/region"],
        region,
        `${region}: placed in its own region`,
      );
      t.is(node.status?.allocatable?.["nvidia.com/gpu"], "8", `${region}: placed on a GPU node`);
      t.true(
        pod.status?.conditions?.some((c) => c.type === "PodScheduled" && c.status === "True"),
        `${region}: the scheduler bound it`,
      );
    }),
  );
});

test("a pod asking for more GPUs than any node has stays Pending with the scheduler's reason", async (t) => {
  const tb = await useTestbed();
  const region = tb.regions[0] as string;
  const api = tb.kubeConfig(region).makeApiClient(CoreV1Api);
  const ns = await testNamespace(t, tb, region, "gpu");
  await api.createNamespacedPod({
    namespace: ns,
    body: {
      metadata: { name: "too-big" },
      spec: {
        containers: [
          {
            name: "train",
            image: "example.invalid/train:1",
            resources: { limits: { "nvidia.com/gpu": "64" } },
          },
        ],
      },
    },
  });
  const deadline = Date.now() + 30_000;
  let message = "";
  while (Date.now() < deadline && !message) {
    const pod = await api.readNamespacedPod({ name: "too-big", namespace: ns });
    message =
      pod.status?.conditions?.find((c) => c.type === "PodScheduled" && c.reason === "Unschedulable")
        ?.message ?? "";
    if (!message) await new Promise((r) => setTimeout(r, 250));
  }
  t.regex(message, /Insufficient nvidia\.com\/gpu/);
});

test("every testbed cluster has the nodes its description promises, Ready", async (t) => {
  const tb = await useTestbed();
  for (const c of tb.description.clusters) {
    const api = tb.kubeConfig(c.name).makeApiClient(CoreV1Api);
    const nodes = await api.listNode();
    for (const want of c.nodes) {
      const got = nodes.items.find((n) => n.metadata?.name === want.name);
      t.truthy(got, `${c.name}: node ${want.name} exists`);
      t.is(
        got?.status?.conditions?.find((x) => x.type === "Ready")?.status,
        "True",
        `${c.name}: ${want.name} Ready`,
      );
      if (want.gpus) t.is(got?.metadata?.labels?.["nvidia.com/cc.mode.state"], "on");
    }
  }
});
