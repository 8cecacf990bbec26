/** Public API of the delta and model transport over NATS JetStream. */
export {
  type ArrivedDelta,
  arrivedDeltaBytes,
  describeArrival,
  ensureRegionDeltaBucket,
  ensureRegionDeltaMirror,
  listRegionDeltas,
  type OpenArrivedDeltaOptions,
  openArrivedDelta,
  type PublishDeltaInput,
  type PublishedDelta,
  type PurgeDeltasRef,
  type PurgedDeltas,
  publishDelta,
  purgeMirroredDeltas,
  purgeRegionDeltas,
  regionDeltaMirrorProgress,
  type WatchedArrival,
  watchRegionDeltas,
} from "./deltas.ts";
export { isTransportError, TransportError, type TransportReason } from "./errors.ts";
export {
  ensureRunModelMirror,
  type FetchedModel,
  fetchGlobalModel,
  globalModelDigest,
  loadRunState,
  ModelMirrorSweeper,
  ORPHANED_MIRROR_AFTER_MS,
  type PublishedModel,
  publishGlobalModel,
  type RunRef,
  removeRunBuckets,
  removeRunModelMirror,
  runModelMirrorProgress,
  saveRunState,
  verifyModelBytes,
} from "./models.ts";
export * from "./names.ts";
export {
  type BucketOptions,
  DEFAULT_PUT_WINDOW,
  type MirrorProgress,
  objectChunks,
  type PutObjectInput,
  type PutObjectResult,
  putObject,
} from "./objects.ts";
