// What the member's gate tests share: a member process's controllers for one region, started on
// the real API servers with the given attestation and stopped (its learners, their key Secrets,
// its SovereignNode and its hub access removed) when the test ends; and the hub's RegionWork for
// it, from examples/regionwork.yaml.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { CoreV1Api, CustomObjectsApi, KubeConfig } from "@kubernetes/client-node";
import type { ExecutionContext } from "ava";
import { parse } from "yaml";
import type { RegionWork } from "../../crds/types.generated.ts";
import { revokeRegionAccess } from "../../operator/hub/credentials.ts";
import { regionNamespace } from "../../operator/hub/region-access.ts";
import { type MemberAttestation, type MemberAudit, memberControllers } from "../../operator/member/setup.ts";
import { LEARNER_NAMESPACE, WORK_LABEL } from "../../operator/member/work-controller.ts";
import { SOVEREIGN_API } from "../../operator/names.ts";
import type { Logger } from "../../operator/runtime/log.ts";
import type { OperatorMetrics } from "../../operator/runtime/metrics.ts";
import { repoRoot } from "../testbed/topology.ts";

export interface GatedMember {
  t: ExecutionContext;
  region: string;
  /** The testbed cluster the region runs on (its JetStream domain too). */
  cluster: string;
  regionKc: KubeConfig;
  hubKc: KubeConfig;
  admin: KubeConfig;
  core: CoreV1Api;
  custom: CustomObjectsApi;
  policyName: string;
  /** The work id of the test's RegionWork: its learners and key Secrets are removed at the end. */
  workId: string;
  metrics: OperatorMetrics;
  log: Logger;
  attestation: MemberAttestation;
  audit: MemberAudit;
}

/** Starts the member's controllers (heartbeat every second) until the test ends. */
export async function startGatedMember(m: GatedMember): Promise<ReturnType<typeof memberControllers>> {
  const abort = new AbortController();
  const parts = memberControllers({
    region: m.region,
    regionKc: m.regionKc,
    hubKc: m.hubKc,
    metrics: m.metrics,
    log: m.log,
    heartbeatIntervalMs: 1_000,
    registration: {
      jurisdiction: "DE",
      attestationPolicyRef: { name: m.policyName },
      dataResidency: {
        allowedEgress: ["ModelDeltas"],
        acceptAggregates: true,
        checkpointLocation: "InRegion",
      },
      jetStreamDomain: m.cluster,
    },
    attestation: m.attestation,
    audit: m.audit,
  });
  for (const i of parts.informers) await i.start();
  const running = parts.controllers.map((c) => c.run(abort.signal));
  m.t.teardown(async () => {
    abort.abort();
    await Promise.all([...parts.informers.map((i) => i.stop()), ...running]);
    const selector = { namespace: LEARNER_NAMESPACE, labelSelector: `${WORK_LABEL}=${m.workId}` };
    await m.core.deleteCollectionNamespacedPod(selector).catch(() => undefined);
    await m.core.deleteCollectionNamespacedSecret(selector).catch(() => undefined);
    await m.custom
      .deleteClusterCustomObject({ ...SOVEREIGN_API, plural: "sovereignnodes", name: m.region })
      .catch(() => undefined);
    await revokeRegionAccess(m.admin, m.region);
  });
  return parts;
}

/** The hub's RegionWork for the region: `learners` learners of `gpus` GPUs each, under the member's policy. */
export async function createRegionWork(
  custom: CustomObjectsApi,
  w: { name: string; region: string; cluster: string; policyName: string; learners: number; gpus: number },
): Promise<RegionWork> {
  const work = parse(readFileSync(join(repoRoot, "examples", "regionwork.yaml"), "utf8")) as RegionWork;
  work.metadata = { name: w.name, namespace: regionNamespace(w.region) };
  work.spec.region = w.region;
  work.spec.nats = { subjectPrefix: `sovereign.${w.region}.t.train`, jetStreamDomain: w.cluster };
  work.spec.attestation = { policyRef: { name: w.policyName } };
  work.spec.workload.learnersPerRegion = w.learners;
  work.spec.workload.resources = { limits: { "nvidia.com/gpu": w.gpus } };
  await custom.createNamespacedCustomObject({
    ...SOVEREIGN_API,
    plural: "regionworks",
    namespace: regionNamespace(w.region),
    body: work,
  });
  return work;
}
