/** Public API of the delta and model transport over NATS JetStream. */
export {
  type ArrivedDelta,
  describeArrival,
  ensureRegionDeltaBucket,
  ensureRegionDeltaMirror,
  type OpenArrivedDeltaOptions,
  openArrivedDelta,
  type PublishDeltaInput,
  type PublishedDelta,
  publishDelta,
  regionDeltaMirrorProgress,
  type WatchedArrival,
  watchRegionDeltas,
} from "./deltas.ts";
export { isTransportError, TransportError, type TransportReason } from "./errors.ts";
export {
  ensureRunModelMirror,
  type FetchedModel,
  fetchGlobalModel,
  type PublishedModel,
  publishGlobalModel,
  type RunRef,
  removeRunModelMirror,
  runModelMirrorProgress,
  verifyModelBytes,
} from "./models.ts";
export * from "./names.ts";
export type { BucketOptions, MirrorProgress } from "./objects.ts";
