// Hub: keeps each SovereignNode's conditions true to what its member reports. Fetch the
// node, judge it (region-status.ts), write the conditions if they changed, record an
// Event when Ready flips, and look again when the heartbeat would go stale.
import { CustomObjectsApi, type KubeConfig, PatchStrategy, setHeaderOptions } from "@kubernetes/client-node";
import type { AttestationPolicy, SovereignNode } from "../../crds/types.generated.ts";
import { HUB_FIELD_MANAGER, SOVEREIGN_API } from "../names.ts";
import type { Clock } from "../runtime/clock.ts";
import { findCondition, sameConditions, setCondition } from "../runtime/conditions.ts";
import type { ReconcileResult } from "../runtime/controller.ts";
import type { EventRecorder } from "../runtime/events.ts";
import type { OperatorMetrics } from "../runtime/metrics.ts";
import { judgeRegion } from "./region-status.ts";
import { DELTA_REFUSAL_REASONS } from "./round-coordinator.ts";

export const CONTROLLER_NAME = "sovereignnode";
export const FIELD_MANAGER = HUB_FIELD_MANAGER;

export interface SovereignNodeReconcilerDeps {
  kc: KubeConfig;
  getNode: (name: string) => SovereignNode | undefined;
  getPolicy: (name: string) => AttestationPolicy | undefined;
  events: EventRecorder;
  clock: Clock;
  heartbeatTimeoutMs: number;
  metrics?: OperatorMetrics;
}

function regionCounters(metrics: OperatorMetrics | undefined) {
  return metrics
    ? [
        metrics.deltasAccepted,
        metrics.deltaBytes,
        metrics.learnerSteps,
        metrics.learnerTrainSeconds,
        metrics.learnerWaitSeconds,
      ]
    : [];
}

export function sovereignNodeReconciler(
  deps: SovereignNodeReconcilerDeps,
): (key: string) => Promise<ReconcileResult | undefined> {
  const api = deps.kc.makeApiClient(CustomObjectsApi);
  const apply = setHeaderOptions("Content-Type", PatchStrategy.ServerSideApply);
  /** Regions whose counters were started at 0 by this process. */
  const counted = new Set<string>();
  return async (key) => {
    const node = deps.getNode(key);
    if (!node) {
      deps.metrics?.regionReady.remove({ region: key });
      deps.metrics?.regionAttestedGpus.remove({ region: key });
      // Its counters stay: a cache that briefly misses the node (an informer relisting after
      // an API server restart) must not reset what the region delivered.
      return undefined; // deleted: nothing to keep true
    }
    const now = deps.clock.now();
    const judgement = judgeRegion(node, {
      now,
      heartbeatTimeoutMs: deps.heartbeatTimeoutMs,
      policyExists: deps.getPolicy(node.spec.attestationPolicyRef.name) !== undefined,
    });
    deps.metrics?.regionReady.set(
      { region: key },
      judgement.conditions.some((c) => c.type === "Ready" && c.status === "True") ? 1 : 0,
    );
    deps.metrics?.regionAttestedGpus.set({ region: key }, node.status?.gpuNodes?.attestedGpus ?? 0);
    // A region's counters start at 0 when it is known, so its first delta shows in increase()
    // and rate() (a series that appears at 1 has no increase to show).
    // Once per region and process: a region reconciled every heartbeat need not touch ~35 series each time.
    if (deps.metrics && !counted.has(key)) {
      for (const c of regionCounters(deps.metrics)) c.inc({ region: key }, 0);
      for (const reason of DELTA_REFUSAL_REASONS) deps.metrics.deltasRefused.inc({ region: key, reason }, 0);
      counted.add(key);
    }
    const before = node.status?.conditions;
    const after = judgement.conditions.reduce((acc, c) => setCondition(acc, c, new Date(now)), before);
    if (!sameConditions(before, after)) {
      await api.patchClusterCustomObjectStatus(
        {
          ...SOVEREIGN_API,
          plural: "sovereignnodes",
          name: key,
          fieldManager: FIELD_MANAGER,
          force: true,
          body: {
            apiVersion: "sovereign.ai/v1alpha1",
            kind: "SovereignNode",
            metadata: { name: key },
            status: { conditions: after, observedGeneration: node.metadata.generation },
          },
        },
        apply,
      );
      const wasReady = findCondition(before, "Ready");
      const ready = findCondition(after, "Ready");
      if (ready && wasReady?.status !== ready.status) {
        await deps.events.record(
          node,
          ready.status === "True" ? "Normal" : "Warning",
          ready.reason,
          ready.message,
        );
      }
    }
    return judgement.recheckAfterMs ? { requeueAfterMs: judgement.recheckAfterMs } : undefined;
  };
}
