// Public API of hub-side aggregation: streaming token-weighted FedAvg with all-or-nothing
// deltas, the DiLoCo outer optimiser with a restorable state, robust rules and the staleness
// weight of late deltas. See docs/deltas.md, section "Aggregation".

export {
  Accumulator,
  type AccumulatorOptions,
  type AddOptions,
  type AddReport,
  type AggregateResult,
  addVerifiedDelta,
  addVerifiedDeltas,
  type DeltaToAdd,
  deltaKeys,
  type VerifiedAddOptions,
  type VerifiedDelivery,
} from "./accumulator.ts";
export { AggregationError, type AggregationReason, isAggregationError } from "./errors.ts";
export type { JournalOptions } from "./journal.ts";
export {
  axpyJs,
  type KernelKind,
  MAX_FUSED,
  SCRATCH_ELEMENTS,
  SumStorage,
  wasmKernelAvailable,
} from "./kernel.ts";
export {
  checkDeltaTensors,
  elementCount,
  type ModelLayout,
  modelBytes,
  type TensorLayout,
} from "./layout.ts";
export {
  DILOCO_OUTER,
  FEDAVG_OUTER,
  OUTER_STATE_FORMAT,
  type OuterConfig,
  OuterOptimizer,
  outerConfig,
} from "./outer.ts";
export {
  type CollectorOptions,
  coordinateMedian,
  type DeltaArrays,
  DeltaCollector,
  type KrumOptions,
  type KrumResult,
  krum,
  type RobustOptions,
  trimCount,
  trimmedMean,
} from "./robust.ts";
export {
  DEFAULT_STALENESS,
  lateDeltaWeight,
  type StalenessPolicy,
  stalenessFactor,
} from "./staleness.ts";
export type { ChunkSource } from "./stream.ts";
