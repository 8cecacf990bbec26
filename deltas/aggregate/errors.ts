/**
 * Reason codes for every delta or request the aggregation refuses. Errors raised while a
 * delta streams in (a DeltaError such as ManifestDigestMismatch, or a transport error) are
 * passed on unchanged after the accumulator has rolled back; the codes below are the
 * aggregation's own. docs/deltas.md, section "Aggregation", lists them with what to do next.
 */
export type AggregationReason =
  /** The model layout itself is unusable: duplicate or empty names, invalid dimensions. */
  | "AggregateLayoutInvalid"
  /** A delta tensor's shape differs from the model's. */
  | "AggregateShapeMismatch"
  /** A model tensor is absent from the delta (or only partly present when the stream ended). */
  | "AggregateTensorMissing"
  /** The delta holds a tensor the model does not have. */
  | "AggregateTensorUnexpected"
  /** Chunks out of order, overlapping, leaving a gap, overrunning the tensor, or a tensor sent twice. */
  | "AggregateChunkInvalid"
  /** The delta (same manifest digest, or same run/round/region[/learner] slot) was already accepted. */
  | "AggregateDuplicateDelta"
  /** The weight is not a finite number > 0. */
  | "AggregateWeightInvalid"
  /** Adding the delta would make a sum NaN or ±Inf. */
  | "AggregateNonFinite"
  /** Nothing was accepted, so there is nothing to average. */
  | "AggregateEmpty"
  /** The accumulator was finished or closed. */
  | "AggregateClosed"
  /** Holding the deltas a robust rule needs would exceed the caller's maxBytes. */
  | "AggregateMemoryLimit"
  /** Too few deltas for the robust rule's parameters (Krum needs n ≥ 2f + 3, trimming 2k < n). */
  | "AggregateTooFewDeltas"
  /** A robust rule's or the outer optimiser's parameters are out of range. */
  | "AggregateConfigInvalid"
  /** A late delta is staler than the policy accepts. */
  | "AggregateTooStale"
  /** A delta claims a round after the one being aggregated. */
  | "AggregateRoundInvalid"
  /** A saved outer-optimiser state does not match the model or the run's configuration. */
  | "AggregateStateInvalid"
  /** The caller aborted the delta while it streamed. */
  | "AggregateAborted"
  /** Deltas added in one pass (addAll) list their tensors in different orders. */
  | "AggregateOrderMismatch";

export class AggregationError extends Error {
  override name = "AggregationError";
  readonly reason: AggregationReason;

  constructor(reason: AggregationReason, message: string, options?: { cause?: unknown }) {
    super(`${reason}: ${message}`, options);
    this.reason = reason;
  }
}

export function isAggregationError(err: unknown, reason?: AggregationReason): err is AggregationError {
  return err instanceof AggregationError && (reason === undefined || err.reason === reason);
}
