// What the hub concludes about a region from its SovereignNode: the member reports facts
// (heartbeat time, GPU node counts, attestation summary); the hub turns them into
// conditions. Pure, so every combination is a table test.
import type { sovereignNodeConditions } from "../../crds/schema/conditions.ts";
import type { Condition, SovereignNode } from "../../crds/types.generated.ts";

type Reasons<T extends keyof typeof sovereignNodeConditions> =
  keyof (typeof sovereignNodeConditions)[T]["reasons"];

export interface RegionJudgement {
  conditions: Omit<Condition, "lastTransitionTime">[];
  /** When the judgement changes by itself (a heartbeat going stale), in ms from now. */
  recheckAfterMs?: number;
}

export function judgeRegion(
  node: SovereignNode,
  ctx: { now: number; heartbeatTimeoutMs: number; policyExists: boolean },
): RegionJudgement {
  const gen = node.metadata.generation;
  const cond = <T extends keyof typeof sovereignNodeConditions>(
    type: T,
    ok: boolean,
    reason: Reasons<T>,
    message: string,
  ): Omit<Condition, "lastTransitionTime"> => ({
    type,
    status: ok ? "True" : "False",
    reason: String(reason),
    message,
    ...(gen !== undefined ? { observedGeneration: gen } : {}),
  });

  const beat = node.status?.lastHeartbeatTime ? Date.parse(node.status.lastHeartbeatTime) : Number.NaN;
  const joined = Number.isFinite(beat);
  const age = joined ? ctx.now - beat : Number.POSITIVE_INFINITY;
  const fresh = age <= ctx.heartbeatTimeoutMs;
  const gpus = node.status?.gpuNodes ?? {};
  const attested = gpus.attested ?? 0;
  const failing = gpus.failing ?? 0;
  const policy = node.spec.attestationPolicyRef.name;

  const joinedC = joined
    ? cond(
        "Joined",
        true,
        "RegistrationReceived",
        "the member operator reports in (its latest heartbeat: status.lastHeartbeatTime)",
      )
    : cond(
        "Joined",
        false,
        "NeverConnected",
        "no heartbeat yet: is the region's member operator running with its hub credential?",
      );
  const acceptedC = node.spec.accepted
    ? cond("Accepted", true, "AcceptedByHub", "spec.accepted is true")
    : cond("Accepted", false, "AwaitingAcceptance", "a hub administrator must set spec.accepted to true");
  const attestedC = !ctx.policyExists
    ? cond(
        "Attested",
        false,
        "PolicyNotFound",
        `AttestationPolicy ${policy} does not exist; create it or fix spec.attestationPolicyRef`,
      )
    : attested === 0
      ? cond("Attested", false, "EvidenceExpired", `no GPU node has current evidence under ${policy}`)
      : failing > 0
        ? cond(
            "Attested",
            true,
            "SomeNodesFailing",
            `${attested} GPU nodes attested, ${failing} failing under ${policy}`,
          )
        : cond("Attested", true, "AllNodesAttested", `${attested} GPU nodes attested under ${policy}`);

  // No age in a message: a condition that changes every second is rewritten every second,
  // and each write wakes the hub's own watch (bench/regions.ts measured 2 writes per heartbeat).
  const since = joined ? `last heartbeat at ${node.status?.lastHeartbeatTime}` : "never";
  const readyC = !node.spec.accepted
    ? cond("Ready", false, "NotAccepted", "the hub has not accepted this region")
    : !fresh
      ? cond(
          "Ready",
          false,
          "HeartbeatMissed",
          `no heartbeat within ${ctx.heartbeatTimeoutMs / 1000}s; ${since}`,
        )
      : attestedC.status !== "True"
        ? cond("Ready", false, "NotAttested", attestedC.message)
        : cond("Ready", true, "RegionReady", "accepted, attested and heartbeating");
  const degradedC =
    failing > 0
      ? cond(
          "Degraded",
          true,
          "NodesFailingAttestation",
          `${failing} GPU nodes are excluded after failing attestation`,
        )
      : cond("Degraded", false, "AsExpected", "nothing is degraded");

  // Every GPU node failed and none passed: the member has revoked its learners' keys, so the
  // region's deltas would all be refused; runs stop waiting for it (operator/hub/quarantine.ts).
  const quarantinedC =
    failing > 0 && attested === 0
      ? cond(
          "Quarantined",
          true,
          "AttestationRevoked",
          `every GPU node failed attestation under ${policy}${node.status?.attestation?.lastFailureReason ? ` (last: ${node.status.attestation.lastFailureReason})` : ""}; runs exclude this region's deltas until a node attests again`,
        )
      : cond("Quarantined", false, "NotQuarantined", "the region's deltas are accepted");

  return {
    conditions: [acceptedC, attestedC, degradedC, joinedC, quarantinedC, readyC],
    recheckAfterMs: joined && fresh ? Math.max(1, ctx.heartbeatTimeoutMs - age + 1) : undefined,
  };
}
