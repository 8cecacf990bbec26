// How the hub judges a placed region for a run's open round. A quarantine is about one
// region, never the run: the round goes on with the others within quorum, and the region
// counts again as soon as a GPU node of it attests again.
import type { SovereignNode } from "../../crds/types.generated.ts";

export interface RegionJudgement {
  /** Excluded from the round: the round does not wait for it. */
  quarantined: boolean;
  reason: "RegionQuarantined" | "DeltaRefused";
  message: string;
}

/** A delta the hub refused for the open round (round-coordinator.ts). */
export interface RoundRefusal {
  reason: string;
  message: string;
  learner?: string;
}

/**
 * What the run's status says about `region` for the open round, or undefined when nothing is wrong:
 * - RegionQuarantined: its member reports GPU nodes that failed attestation and none that
 *   passed. Its learners' keys are revoked, so nothing it sends could be accepted: waiting
 *   for it would only delay the round, so the round goes on without it.
 * - DeltaRefused: a delta it delivered for the round was refused and none was accepted since.
 *   It stays in the round: a valid delta may still follow before the round closes (a refused
 *   object is never aggregated either way).
 */
export function judgeRegionForRound(
  region: string,
  node: SovereignNode | undefined,
  refusal: RoundRefusal | undefined,
  round: number,
): RegionJudgement | undefined {
  const gpu = node?.status?.gpuNodes;
  if (gpu && (gpu.failing ?? 0) > 0 && (gpu.attested ?? 0) === 0) {
    const last = node?.status?.attestation?.lastFailureReason;
    const why = last ? ` (last failure: ${last})` : "";
    return {
      quarantined: true,
      reason: "RegionQuarantined",
      message: `every GPU node of ${region} failed attestation${why}; rounds go on without it until a node attests again`,
    };
  }
  if (refusal) {
    const who = refusal.learner ? ` from ${refusal.learner}` : "";
    return {
      quarantined: false,
      reason: "DeltaRefused",
      message: `round ${round}: the delta${who} was refused (${refusal.reason}: ${refusal.message}); a valid delta may still follow before the round closes`,
    };
  }
  return undefined;
}
