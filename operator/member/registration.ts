// Member: registers the region at the hub and keeps reporting in. It writes only what
// the region knows — its own registration (never spec.accepted) and, in status, the
// heartbeat time, its GPU node inventory and the operator's version — under its own
// field manager, so the hub's conditions and the admin's acceptance are never touched.
import {
  CoreV1Api,
  CustomObjectsApi,
  type KubeConfig,
  PatchStrategy,
  setHeaderOptions,
} from "@kubernetes/client-node";
import type { SovereignNodeSpec } from "../../crds/types.generated.ts";
import { MEMBER_FIELD_MANAGER, SOVEREIGN_API } from "../names.ts";
import type { Clock } from "../runtime/clock.ts";
import { apiTime } from "../runtime/conditions.ts";
import type { ReconcileResult } from "../runtime/controller.ts";

export const FIELD_MANAGER = MEMBER_FIELD_MANAGER;
export const OPERATOR_VERSION = "0.1.0";
/** Set by the attestation agent on GPU nodes whose evidence verified (issue 6). */
export const ATTESTED_LABEL = "sovereign.ai/attested";

export type Registration = Omit<SovereignNodeSpec, "accepted">;

export interface RegistrationDeps {
  region: string;
  registration: Registration;
  /** The region's own cluster (GPU inventory). */
  regionKc: KubeConfig;
  /** The scoped hub credential. */
  hubKc: KubeConfig;
  clock: Clock;
  heartbeatIntervalMs: number;
  /** Labels the region puts on its SovereignNode (placement selectors match them). */
  labels?: Record<string, string>;
}

/**
 * The region's GPU inventory: nodes and GPUs in all, and those on nodes the attestation
 * agent vouched for. Placement needs GPUs, not nodes: a run asks for learners × GPUs.
 */
export async function gpuInventory(regionKc: KubeConfig): Promise<{
  total: number;
  attested: number;
  failing: number;
  totalGpus: number;
  attestedGpus: number;
}> {
  const nodes = await regionKc
    .makeApiClient(CoreV1Api)
    .listNode({ labelSelector: "nvidia.com/gpu.present=true" });
  const inv = { total: 0, attested: 0, failing: 0, totalGpus: 0, attestedGpus: 0 };
  for (const n of nodes.items) {
    const gpus = Number(n.status?.allocatable?.["nvidia.com/gpu"] ?? 0) || 0;
    const label = n.metadata?.labels?.[ATTESTED_LABEL];
    inv.total++;
    inv.totalGpus += gpus;
    if (label === "true") {
      inv.attested++;
      inv.attestedGpus += gpus;
    } else if (label === "false") inv.failing++;
  }
  return inv;
}

/** One heartbeat: register (idempotent) and report. Returns when to beat again. */
export function registrationReconciler(deps: RegistrationDeps): () => Promise<ReconcileResult> {
  const hub = deps.hubKc.makeApiClient(CustomObjectsApi);
  const apply = setHeaderOptions("Content-Type", PatchStrategy.ServerSideApply);
  const target = { ...SOVEREIGN_API, plural: "sovereignnodes", name: deps.region };
  const identity = {
    apiVersion: "sovereign.ai/v1alpha1",
    kind: "SovereignNode",
    metadata: { name: deps.region },
  };
  const registered = {
    ...identity,
    metadata: { ...identity.metadata, ...(deps.labels ? { labels: deps.labels } : {}) },
  };
  return async () => {
    await hub.patchClusterCustomObject(
      {
        ...target,
        fieldManager: FIELD_MANAGER,
        force: true,
        body: { ...registered, spec: deps.registration },
      },
      apply,
    );
    const gpuNodes = await gpuInventory(deps.regionKc);
    await hub.patchClusterCustomObjectStatus(
      {
        ...target,
        fieldManager: FIELD_MANAGER,
        force: true,
        body: {
          ...identity,
          status: {
            lastHeartbeatTime: apiTime(deps.clock.now()),
            gpuNodes,
            memberOperatorVersion: OPERATOR_VERSION,
          },
        },
      },
      apply,
    );
    return { requeueAfterMs: deps.heartbeatIntervalMs };
  };
}
