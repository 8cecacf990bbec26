// Late deltas under `quorum.lateDeltas: NextRound`: a delta trained from the global model of
// round r that arrives after r closed is folded into the round open when it arrives, r + s,
// with its token weight multiplied by a staleness factor.
//
// The default factor is 1/(1 + s): FedAsync's polynomial staleness function (1 + s)^−a with
// a = 1 (Xie et al. 2019, "Asynchronous Federated Optimization"). It halves a delta one round
// late and keeps decaying without a cliff, needs no tuning knob, and for s = 1 equals the
// exponential rule with factor ½; exponential decay (factor^s) is available for runs that
// want later deltas to fade faster. Beyond `maxRounds` (default 3) a delta is refused with
// AggregateTooStale: it was measured against a model the run has since moved away from, and
// the hub need not keep older global models to check it against. The window of 3 is a
// judgement, not a measured optimum: DiLoCo's dropped-worker runs (a worker that missed a sync
// keeps training from its own parameters, so its next delta spans several rounds) lost little,
// but nobody published a sweep of outer-round staleness. A delta from a future round is
// refused with AggregateRoundInvalid.
//
// The late delta keeps its own keys (deltaKeys uses its own round), so it can never collide
// with the same learner's delta for the open round, and it is still counted at most once.
import type { DeltaManifest } from "../manifest.ts";
import { AggregationError } from "./errors.ts";

export type StalenessPolicy =
  /** factor = (1 + s)^−exponent */
  | { kind: "polynomial"; exponent: number; maxRounds: number }
  /** factor = base^s, 0 < base ≤ 1 */
  | { kind: "exponential"; base: number; maxRounds: number };

export const DEFAULT_STALENESS: StalenessPolicy = { kind: "polynomial", exponent: 1, maxRounds: 3 };

/** The weight multiplier for a delta `roundsLate` rounds late (0 = on time → 1). */
export function stalenessFactor(roundsLate: number, policy: StalenessPolicy = DEFAULT_STALENESS): number {
  if (!Number.isSafeInteger(roundsLate) || roundsLate < 0) {
    throw new AggregationError(
      "AggregateRoundInvalid",
      `a delta cannot be ${roundsLate} rounds late; it claims a round after the open one — refuse it`,
    );
  }
  if (!(Number.isSafeInteger(policy.maxRounds) && policy.maxRounds >= 0)) {
    throw new AggregationError(
      "AggregateConfigInvalid",
      `maxRounds ${policy.maxRounds} must be an integer ≥ 0`,
    );
  }
  if (roundsLate > policy.maxRounds) {
    throw new AggregationError(
      "AggregateTooStale",
      `the delta is ${roundsLate} rounds late, more than the ${policy.maxRounds} the run folds in; drop it and let the region restart from the current global model`,
    );
  }
  if (policy.kind === "polynomial") {
    if (!(Number.isFinite(policy.exponent) && policy.exponent >= 0)) {
      throw new AggregationError("AggregateConfigInvalid", `exponent ${policy.exponent} must be ≥ 0`);
    }
    return (1 + roundsLate) ** -policy.exponent;
  }
  if (!(policy.base > 0 && policy.base <= 1)) {
    throw new AggregationError("AggregateConfigInvalid", `base ${policy.base} must be in (0, 1]`);
  }
  return policy.base ** roundsLate;
}

/** The FedAvg weight of a (possibly late) delta folded into `openRound`: tokens × staleness factor. */
export function lateDeltaWeight(
  manifest: Pick<DeltaManifest, "round" | "tokens">,
  openRound: number,
  policy: StalenessPolicy = DEFAULT_STALENESS,
): number {
  return manifest.tokens * stalenessFactor(openRound - manifest.round, policy);
}
