// Where deltas and global models live in NATS. One place for every name, so the servers'
// permissions (see test/testbed/nats.ts and the Helm chart) and the code that moves bytes
// cannot drift apart.
//
//   region domain  bucket deltas-<region>          learners put their deltas here
//   hub domain     OBJ_deltas-<region> (mirror)    the hub's copy, fed over the leaf link
//   hub domain     bucket model-<ns>_<run>         the hub publishes each round's global model
//   region domain  OBJ_model-<ns>_<run> (mirror)   the region's copy, fetched by its learners

/** Everything a region emits is under `sovereign.<region>.`. */
export function regionSubjects(region: string): string {
  return `sovereign.${region}.>`;
}

/** Broadcasts from the hub to every region. */
export const GLOBAL_SUBJECTS = "sovereign.global.>";

/**
 * Replies to the requests a server itself makes when it sets up a mirror across a leaf
 * link (`$JSC.R.<random>`). The tokens are random and short-lived: a region could only
 * interfere with another region's mirror set-up by guessing one.
 */
export const JETSTREAM_SERVER_REPLIES = "$JSC.R.>";

/**
 * Where the hub's mirror of a region's deltas takes delivery: inside the region's own
 * subjects, so the leaf link's permissions admit it and no region can feed another's mirror.
 */
export function deltaMirrorDeliverPrefix(region: string): string {
  return `sovereign.${region}.mirror`;
}

/** Where a region's mirror of a run's global models takes delivery (the hub sends, the region's leaf admits its own subjects). */
export function modelMirrorDeliverPrefix(region: string): string {
  return `sovereign.${region}.models`;
}

const K8S_NAME = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;

function checkName(kind: string, value: string): string {
  if (!K8S_NAME.test(value) || value.length > 253) {
    throw new RangeError(`${kind} '${value}' is not a Kubernetes object name`);
  }
  return value;
}

export function regionDeltaBucket(region: string): string {
  return `deltas-${checkName("region", region)}`;
}

/** Every run's model bucket is named with this prefix (and nothing else is). */
export const MODEL_BUCKET_PREFIX = "model-";

/** Run names may hold dots, bucket names may not; `_` never occurs in a Kubernetes name, so the mapping is one-to-one. */
export function runModelBucket(namespace: string, run: string): string {
  return `${MODEL_BUCKET_PREFIX}${checkName("namespace", namespace)}_${checkName("run", run).replaceAll(".", "_")}`;
}

/** Hub-only per-run state (outer optimiser), never mirrored. */
export function runStateBucket(namespace: string, run: string): string {
  return `state-${checkName("namespace", namespace)}_${checkName("run", run).replaceAll(".", "_")}`;
}

export interface DeltaAddress {
  namespace: string;
  run: string;
  round: number;
  learner: string;
}

/** One object per learner per round: a re-sent delta replaces itself instead of adding a second. */
export function deltaObjectName(a: DeltaAddress): string {
  if (!Number.isSafeInteger(a.round) || a.round < 0) throw new RangeError(`round ${a.round} is not a count`);
  return `${checkName("namespace", a.namespace)}/${checkName("run", a.run)}/round-${a.round}/${checkName("learner", a.learner)}`;
}

export function parseDeltaObjectName(name: string): DeltaAddress | undefined {
  const m = /^([^/]+)\/([^/]+)\/round-(\d{1,15})\/([^/]+)$/.exec(name);
  if (!m) return undefined;
  const [, namespace, run, round, learner] = m as unknown as [string, string, string, string, string];
  if (![namespace, run, learner].every((v) => K8S_NAME.test(v))) return undefined;
  return { namespace, run, round: Number(round), learner };
}

export function modelObjectName(round: number): string {
  if (!Number.isSafeInteger(round) || round < 0) throw new RangeError(`round ${round} is not a count`);
  return `round-${round}`;
}

/** Object metadata key holding the delta's signed manifest (its serialized JSON). */
export const MANIFEST_METADATA = "sovereign.manifest";
/** Object metadata key holding a global model's `sha256:<hex>` digest, the deltas' baseModel. */
export const MODEL_DIGEST_METADATA = "sovereign.model-digest";
