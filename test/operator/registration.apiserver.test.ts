// Registration end to end on real servers: a member, holding only its scoped hub
// credential, registers its region and heartbeats its GPU inventory from its own
// cluster; the hub's SovereignNode controller turns that into conditions and Events,
// including a region going stale when its heartbeats stop.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import {
  CoreV1Api,
  CustomObjectsApi,
  KubeConfig,
  KubernetesObjectApi,
  RbacAuthorizationV1Api,
} from "@kubernetes/client-node";
import test from "ava";
import { parse } from "yaml";
import { installCrds } from "../../crds/install.ts";
import type { AttestationPolicy, Condition, SovereignNode } from "../../crds/types.generated.ts";
import { issueRegionCredential } from "../../operator/hub/credentials.ts";
import { regionNamespace } from "../../operator/hub/region-access.ts";
import { sovereignNodeReconciler } from "../../operator/hub/sovereignnode-controller.ts";
import { ATTESTED_LABEL, registrationReconciler } from "../../operator/member/registration.ts";
import { realClock } from "../../operator/runtime/clock.ts";
import { Controller } from "../../operator/runtime/controller.ts";
import { eventRecorder } from "../../operator/runtime/events.ts";
import { SupervisedInformer } from "../../operator/runtime/informer.ts";
import { silentLogger } from "../../operator/runtime/log.ts";
import { OperatorMetrics } from "../../operator/runtime/metrics.ts";
import { uniqueName, useTestbed } from "../testbed/harness.ts";
import { repoRoot } from "../testbed/topology.ts";

const GROUP = { group: "sovereign.ai", version: "v1alpha1" };

async function eventually<T>(
  probe: () => Promise<T | undefined>,
  what: string,
  timeoutMs = 20_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

test.serial(
  "a member registers and heartbeats; the hub judges the region Ready, then stale when it goes quiet",
  async (t) => {
    const tb = await useTestbed();
    const admin = tb.kubeConfig("hub");
    await installCrds(admin);
    const region = uniqueName("reg");
    const policyName = uniqueName("policy");
    const custom = admin.makeApiClient(CustomObjectsApi);
    const regionCluster = tb.regions[0] as string;
    const regionKc = tb.kubeConfig(regionCluster);
    const regionCore = regionKc.makeApiClient(CoreV1Api);
    const gpuNodes = tb
      .cluster(regionCluster)
      .nodes.filter((n) => n.gpus > 0)
      .map((n) => n.name);

    const metrics = new OperatorMetrics({ defaultMetrics: false });
    const abort = new AbortController();
    const nodes = new SupervisedInformer<SovereignNode>({
      kc: admin,
      path: "/apis/sovereign.ai/v1alpha1/sovereignnodes",
      list: () => custom.listClusterCustomObject({ ...GROUP, plural: "sovereignnodes" }),
      onKey: (k) => controller.enqueue(k),
    });
    const policies = new SupervisedInformer<AttestationPolicy>({
      kc: admin,
      path: "/apis/sovereign.ai/v1alpha1/attestationpolicies",
      list: () => custom.listClusterCustomObject({ ...GROUP, plural: "attestationpolicies" }),
      // A policy appearing changes the judgement of every region that names it.
      onKey: () => {
        for (const n of nodes.list()) controller.enqueue(n.metadata?.name ?? "");
      },
    });
    const controller = new Controller({
      name: "sovereignnode",
      metrics,
      reconcile: sovereignNodeReconciler({
        kc: admin,
        getNode: (name) => nodes.get(name),
        getPolicy: (name) => policies.get(name),
        events: eventRecorder(admin, "sovereign-hub", silentLogger),
        clock: realClock,
        heartbeatTimeoutMs: 3_000,
      }),
    });
    const running = controller.run(abort.signal);
    await nodes.start();
    await policies.start();
    t.teardown(async () => {
      abort.abort();
      await Promise.all([nodes.stop(), policies.stop(), running]);
      for (const n of gpuNodes) {
        await regionCore
          .patchNode({
            name: n,
            body: [{ op: "remove", path: `/metadata/labels/${ATTESTED_LABEL.replace("/", "~1")}` }],
          })
          .catch(() => undefined);
      }
      await custom
        .deleteClusterCustomObject({ ...GROUP, plural: "sovereignnodes", name: region })
        .catch(() => undefined);
      await custom
        .deleteClusterCustomObject({ ...GROUP, plural: "attestationpolicies", name: policyName })
        .catch(() => undefined);
      const rbac = admin.makeApiClient(RbacAuthorizationV1Api);
      await rbac.deleteClusterRoleBinding({ name: `sovereign:member:${region}` }).catch(() => undefined);
      await rbac.deleteClusterRole({ name: `sovereign:member:${region}` }).catch(() => undefined);
      await KubernetesObjectApi.makeApiClient(admin)
        .delete({ apiVersion: "v1", kind: "Namespace", metadata: { name: regionNamespace(region) } })
        .catch(() => undefined);
    });

    // The member holds only its scoped hub credential.
    const hubKc = new KubeConfig();
    hubKc.loadFromString((await issueRegionCredential(admin, region, { ttlSeconds: 3600 })).kubeconfig);
    const heartbeat = registrationReconciler({
      region,
      regionKc,
      hubKc,
      clock: realClock,
      heartbeatIntervalMs: 1_000,
      registration: {
        displayName: "Test region",
        jurisdiction: "DE",
        attestationPolicyRef: { name: policyName },
        dataResidency: {
          allowedEgress: ["ModelDeltas"],
          acceptAggregates: true,
          checkpointLocation: "InRegion",
        },
        jetStreamDomain: regionCluster,
      },
    });
    t.deepEqual(await heartbeat(), { requeueAfterMs: 1_000 });

    const conditionOf = async (
      type: string,
      status: string,
      reason: string,
    ): Promise<Condition | undefined> => {
      const node = (await custom.getClusterCustomObject({
        ...GROUP,
        plural: "sovereignnodes",
        name: region,
      })) as SovereignNode;
      const c = node.status?.conditions?.find((x) => x.type === type);
      return c?.status === status && c.reason === reason ? c : undefined;
    };
    await eventually(() => conditionOf("Joined", "True", "RegistrationReceived"), "Joined");
    await eventually(() => conditionOf("Ready", "False", "NotAccepted"), "Ready=False NotAccepted");
    const registered = (await custom.getClusterCustomObject({
      ...GROUP,
      plural: "sovereignnodes",
      name: region,
    })) as SovereignNode;
    t.false(registered.spec.accepted, "registered unaccepted");
    t.is(registered.status?.gpuNodes?.total, gpuNodes.length, "inventory from the region's own cluster");
    t.is(registered.status?.gpuNodes?.attested, 0);
    t.is(registered.status?.memberOperatorVersion, "0.1.0");

    // The admin accepts; the policy does not exist yet, and no GPU is attested.
    await custom.patchClusterCustomObject({
      ...GROUP,
      plural: "sovereignnodes",
      name: region,
      body: [{ op: "replace", path: "/spec/accepted", value: true }],
    });
    await eventually(() => conditionOf("Attested", "False", "PolicyNotFound"), "PolicyNotFound");
    const policy = parse(readFileSync(join(repoRoot, "examples", "attestationpolicy-testbed.yaml"), "utf8"));
    policy.metadata.name = policyName;
    await custom.createClusterCustomObject({ ...GROUP, plural: "attestationpolicies", body: policy });
    await eventually(() => conditionOf("Ready", "False", "NotAttested"), "Ready=False NotAttested");

    // The region's GPU nodes pass attestation; the member's next heartbeat reports it.
    for (const n of gpuNodes) {
      await regionCore.patchNode({
        name: n,
        body: [{ op: "add", path: `/metadata/labels/${ATTESTED_LABEL.replace("/", "~1")}`, value: "true" }],
      });
    }
    await heartbeat();
    await eventually(() => conditionOf("Ready", "True", "RegionReady"), "Ready=True");
    t.truthy(await conditionOf("Attested", "True", "AllNodesAttested"));
    const acceptedNode = (await custom.getClusterCustomObject({
      ...GROUP,
      plural: "sovereignnodes",
      name: region,
    })) as SovereignNode;
    t.true(acceptedNode.spec.accepted, "the member's re-registration did not undo the admin's acceptance");

    // Heartbeats stop: within the timeout (3 s) the hub marks the region stale by itself.
    const quietSince = Date.now();
    const stale = await eventually(
      () => conditionOf("Ready", "False", "HeartbeatMissed"),
      "HeartbeatMissed",
      15_000,
    );
    t.log(
      `marked stale ${((Date.now() - quietSince) / 1000).toFixed(1)} s after the last heartbeat (timeout 3 s)`,
    );
    t.regex(stale.message, /no heartbeat within 3s; last heartbeat \d+s ago/);
    t.is(stale.observedGeneration, acceptedNode.metadata.generation);

    const events = await admin.makeApiClient(CoreV1Api).listNamespacedEvent({
      namespace: "default",
      fieldSelector: `involvedObject.name=${region}`,
    });
    const reasons = events.items.map((e) => `${e.type}/${e.reason}`);
    t.true(reasons.includes("Normal/RegionReady"), reasons.join(", "));
    t.true(reasons.includes("Warning/HeartbeatMissed"), reasons.join(", "));
    // The stale verdict came from a timed requeue, not from an event.
    const text = await metrics.registry.metrics();
    t.regex(
      text,
      /controller_runtime_reconcile_total\{controller="sovereignnode",result="requeue_after"\} \d+/,
    );
  },
);
