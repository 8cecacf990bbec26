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
  type V1Node,
} from "@kubernetes/client-node";
import type { AttestationSummary, SovereignNodeSpec } from "../../crds/types.generated.ts";
import { MEMBER_FIELD_MANAGER, SOVEREIGN_API } from "../names.ts";
import type { Clock } from "../runtime/clock.ts";
import { apiTime } from "../runtime/conditions.ts";
import type { ReconcileResult } from "../runtime/controller.ts";
import { GPU_NODE_SELECTOR } from "./attestation-rules.ts";

export const FIELD_MANAGER = MEMBER_FIELD_MANAGER;
export const OPERATOR_VERSION = "0.1.0";
/** Set by the attestation controller: "true" on GPU nodes whose latest verdict passed and is fresh, "false" on quarantined ones. */
export const ATTESTED_LABEL = "sovereign.ai/attested";
/** Node annotations the attestation controller writes (attestation-rules.ts NODE_ANNOTATIONS). */
const VERDICT_TIME_ANNOTATION = "sovereign.ai/attestation-time";
const EVIDENCE_TIME_ANNOTATION = "sovereign.ai/attestation-evidence-time";
const VERDICT_REASON_ANNOTATION = "sovereign.ai/attestation-reason";

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
  /**
   * The region's GPU nodes from a synced informer, when the member keeps one (the gate does);
   * undefined means list them from the API server, once a beat. With hundreds of nodes that
   * list is most of a beat's cost.
   */
  gpuNodes?: () => readonly V1Node[] | undefined;
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
  return inventoryOf(await listGpuNodes(regionKc));
}

const listGpuNodes = async (regionKc: KubeConfig): Promise<V1Node[]> =>
  (await regionKc.makeApiClient(CoreV1Api).listNode({ labelSelector: GPU_NODE_SELECTOR })).items;

function inventoryOf(nodes: readonly V1Node[]) {
  const inv = { total: 0, attested: 0, failing: 0, totalGpus: 0, attestedGpus: 0 };
  for (const n of nodes) {
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

/**
 * The region's attestation summary from its nodes' verdict annotations, so the SovereignNode
 * shows why nodes fail (lastFailureReason) and how old the evidence is. Undefined while no node
 * carries a verdict (attestation disabled or not yet run).
 */
export function attestationSummaryOf(
  nodes: readonly V1Node[],
  policy: string,
  now: number,
): AttestationSummary | undefined {
  let lastVerified = Number.NEGATIVE_INFINITY;
  let lastFailure: { at: number; reason: string } | undefined;
  let oldest: number | undefined;
  for (const n of nodes) {
    const a = n.metadata?.annotations ?? {};
    const at = Date.parse(a[VERDICT_TIME_ANNOTATION] ?? "");
    if (Number.isNaN(at)) continue;
    lastVerified = Math.max(lastVerified, at);
    const reason = a[VERDICT_REASON_ANNOTATION] ?? "";
    if (n.metadata?.labels?.[ATTESTED_LABEL] === "false" && (!lastFailure || at > lastFailure.at)) {
      lastFailure = { at, reason: reason.split(",")[0] ?? "" };
    }
    const evidence = Date.parse(a[EVIDENCE_TIME_ANNOTATION] ?? "");
    if (n.metadata?.labels?.[ATTESTED_LABEL] === "true" && !Number.isNaN(evidence)) {
      const age = Math.max(0, Math.floor((now - evidence) / 1000));
      oldest = Math.max(oldest ?? 0, age);
    }
  }
  if (!Number.isFinite(lastVerified)) return undefined;
  return {
    policy,
    lastVerifiedTime: apiTime(lastVerified),
    ...(oldest !== undefined ? { oldestEvidenceAgeSeconds: oldest } : {}),
    lastFailureReason: lastFailure?.reason.slice(0, 128) ?? "",
  };
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
    const nodes = deps.gpuNodes?.() ?? (await listGpuNodes(deps.regionKc));
    const gpuNodes = inventoryOf(nodes);
    const attestation = attestationSummaryOf(
      nodes,
      deps.registration.attestationPolicyRef.name,
      deps.clock.now(),
    );
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
            ...(attestation ? { attestation } : {}),
            memberOperatorVersion: OPERATOR_VERSION,
          },
        },
      },
      apply,
    );
    return { requeueAfterMs: deps.heartbeatIntervalMs };
  };
}
