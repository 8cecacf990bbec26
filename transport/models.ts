// Global models, hub → regions. The hub puts each round's model once into the run's bucket
// in its own domain; each region placed in the run mirrors that bucket into its domain, and
// its learners read the local copy at their own pace. A region not in the run never gets it.
import { createHash } from "node:crypto";
import { jetstreamManager } from "@nats-io/jetstream";
import type { ObjectInfo } from "@nats-io/obj";
import type { NatsConnection } from "@nats-io/transport-node";
import type { ByteSource } from "../deltas/mod.ts";
import { TransportError } from "./errors.ts";
import {
  MODEL_BUCKET_PREFIX,
  MODEL_DIGEST_METADATA,
  modelMirrorDeliverPrefix,
  modelObjectName,
  runModelBucket,
  runStateBucket,
} from "./names.ts";
import {
  type BucketOptions,
  DEFAULT_CHUNK_BYTES,
  ensureMirror,
  ensureObjectStore,
  isObjectStoreNotFound,
  type MirrorProgress,
  mirrorProgress,
  objectBytes,
  objectChunks,
  objectStoreStream,
  openObjectStore,
  putObject,
  removeStream,
} from "./objects.ts";

export interface RunRef {
  namespace: string;
  run: string;
}

export interface PublishedModel {
  name: string;
  size: number;
  /** `sha256:<hex>`: what learners put in their manifests' baseModel. */
  digest: string;
}

/** Hub: put the global model of a round. Its digest is computed as it streams and recorded with it. */
export async function publishGlobalModel(
  hubNc: NatsConnection,
  ref: RunRef & { round: number },
  source: ByteSource,
  options: BucketOptions = {},
): Promise<PublishedModel> {
  const bucket = runModelBucket(ref.namespace, ref.run);
  await ensureObjectStore(hubNc, bucket, options);
  // The digest travels in the object's meta, which goes out after the last chunk: the put
  // hashes the bytes as they go, and the model is never held whole (it may be streamed as it is
  // computed). Until its meta is stored, the model does not exist for anyone.
  let digest = "";
  const info = await putObject(
    hubNc,
    bucket,
    {
      name: modelObjectName(ref.round),
      chunkBytes: DEFAULT_CHUNK_BYTES,
      metadata: (sha256) => {
        digest = `sha256:${Buffer.from(sha256).toString("hex")}`;
        return { [MODEL_DIGEST_METADATA]: digest };
      },
    },
    source,
  );
  return { name: info.name, size: info.size, digest };
}

/** Member, in its region: mirror the run's model bucket from the hub. */
export async function ensureRunModelMirror(
  regionNc: NatsConnection,
  region: string,
  ref: RunRef,
): Promise<void> {
  await ensureMirror(regionNc, {
    stream: objectStoreStream(runModelBucket(ref.namespace, ref.run)),
    fromDomain: "hub",
    deliverPrefix: modelMirrorDeliverPrefix(region),
  });
}

export async function removeRunModelMirror(regionNc: NatsConnection, ref: RunRef): Promise<boolean> {
  return removeStream(regionNc, objectStoreStream(runModelBucket(ref.namespace, ref.run)));
}

/** JetStream's error code for "stream not found", as a mirror reports its source gone. */
const JS_STREAM_NOT_FOUND = 10059;

/** A mirror whose source has been reported gone at least this long is an orphan, not a bucket the hub is still creating. */
export const ORPHANED_MIRROR_AFTER_MS = 60_000;

/**
 * Member: removes the region's mirrors of runs' model buckets whose bucket at the hub is gone
 * (the run was deleted while no member that mirrored it was running to see it go). Such a
 * mirror keeps asking the hub across the leaf link for its source, for ever. Only the mirror's
 * own report counts: its source answered "stream not found", in every sweep for
 * `orphanedAfterMs` (a run just created may still be making its bucket at the hub). The
 * mirror's `active` age cannot measure that: nats-server resets it to -1 when it retries. So the
 * sweeper remembers since when each mirror has been reporting its source gone; a new sweeper
 * (a restarted member) starts that clock again. The mirrors of `inUse` (the member's current
 * runs) are kept whatever they report.
 */
export class ModelMirrorSweeper {
  readonly #nc: NatsConnection;
  readonly #orphanedAfterMs: number;
  readonly #now: () => number;
  readonly #goneSince = new Map<string, number>();

  constructor(regionNc: NatsConnection, opts: { orphanedAfterMs?: number; now?: () => number } = {}) {
    this.#nc = regionNc;
    this.#orphanedAfterMs = opts.orphanedAfterMs ?? ORPHANED_MIRROR_AFTER_MS;
    this.#now = opts.now ?? Date.now;
  }

  /** One sweep; returns the streams removed. */
  async sweep(inUse: readonly RunRef[]): Promise<string[]> {
    const jsm = await jetstreamManager(this.#nc);
    const prefix = objectStoreStream(MODEL_BUCKET_PREFIX);
    const kept = new Set(inUse.map((r) => objectStoreStream(runModelBucket(r.namespace, r.run))));
    const now = this.#now();
    const reporting = new Set<string>();
    const removed: string[] = [];
    for await (const info of jsm.streams.list()) {
      const name = info.config.name;
      const m = info.mirror;
      if (!name.startsWith(prefix) || !m || kept.has(name)) continue;
      const sourceGone =
        m.error?.err_code === JS_STREAM_NOT_FOUND || /stream not found/i.test(m.error?.description ?? "");
      if (!sourceGone) continue;
      reporting.add(name);
      const since = this.#goneSince.get(name) ?? now;
      this.#goneSince.set(name, since);
      if (now - since < this.#orphanedAfterMs) continue;
      if (await removeStream(this.#nc, name)) removed.push(name);
    }
    // A mirror that stopped reporting its source gone (or went) starts its clock again.
    for (const name of this.#goneSince.keys()) if (!reporting.has(name)) this.#goneSince.delete(name);
    for (const name of removed) this.#goneSince.delete(name);
    return removed;
  }
}

export async function runModelMirrorProgress(regionNc: NatsConnection, ref: RunRef): Promise<MirrorProgress> {
  return mirrorProgress(
    await jetstreamManager(regionNc),
    objectStoreStream(runModelBucket(ref.namespace, ref.run)),
  );
}

export interface FetchedModel {
  info: ObjectInfo;
  digest: string;
  /** The model's bytes. Check them against `digest` (verifyModelBytes does) before training on them. */
  data: AsyncGenerator<Uint8Array>;
}

/**
 * Learner: the round's global model from its region's mirror. Resolves only once the model
 * and its digest are both there (the digest is written just after the bytes).
 */
export async function fetchGlobalModel(
  regionNc: NatsConnection,
  ref: RunRef & { round: number },
): Promise<FetchedModel> {
  const store = await openObjectStore(regionNc, runModelBucket(ref.namespace, ref.run)).catch(
    (err: unknown) => {
      if (isObjectStoreNotFound(err)) {
        throw new TransportError(
          "ModelObjectMissing",
          `this region holds no models of ${ref.namespace}/${ref.run}: the member mirrors a run's models only once the region is placed in it`,
        );
      }
      throw err;
    },
  );
  const name = modelObjectName(ref.round);
  const info = await store.info(name);
  const digest = info?.metadata?.[MODEL_DIGEST_METADATA];
  if (!info || info.deleted || digest === undefined) {
    throw new TransportError(
      "ModelObjectMissing",
      `no global model for round ${ref.round} of ${ref.namespace}/${ref.run} in this region yet; wait for the hub to publish it`,
    );
  }
  // Our chunk reader (a bounded window ahead, no second hash): the library's get buffers ahead
  // of a slow reader without bound, up to the whole model (bench/hub-aggregate.ts).
  const bucket = runModelBucket(ref.namespace, ref.run);
  return { info, digest, data: verifyModelBytes(objectChunks(regionNc, bucket, info), digest) };
}

/** Passes the bytes through and throws at the end unless they hash to `digest`. */
export async function* verifyModelBytes(
  source: AsyncIterable<Uint8Array>,
  digest: string,
): AsyncGenerator<Uint8Array> {
  const hash = createHash("sha256");
  for await (const chunk of source) {
    hash.update(chunk);
    yield chunk;
  }
  const actual = `sha256:${hash.digest("hex")}`;
  if (actual !== digest) {
    throw new TransportError(
      "ModelDigestMismatch",
      `the global model's bytes hash to ${actual}, not the recorded ${digest}; it was altered in storage — refetch it`,
    );
  }
}

/** Hub: whether the model of `round` (the base of round + 1) is published, with its digest. */
export async function globalModelDigest(
  hubNc: NatsConnection,
  ref: RunRef & { round: number },
): Promise<string | undefined> {
  const store = await openObjectStore(hubNc, runModelBucket(ref.namespace, ref.run)).catch((err: unknown) => {
    if (isObjectStoreNotFound(err)) return undefined;
    throw err;
  });
  const info = await store?.info(modelObjectName(ref.round));
  return info && !info.deleted ? info.metadata?.[MODEL_DIGEST_METADATA] : undefined;
}

/**
 * Hub-only state of a run (the outer optimiser's momentum): a bucket of its own in the hub's
 * domain, never mirrored to a region.
 */
export async function saveRunState(
  hubNc: NatsConnection,
  ref: RunRef,
  name: string,
  source: ByteSource,
): Promise<void> {
  const bucket = runStateBucket(ref.namespace, ref.run);
  await ensureObjectStore(hubNc, bucket);
  // Our pipelined put, which slices the state's pieces instead of copying them (putObject).
  await putObject(hubNc, bucket, { name, chunkBytes: DEFAULT_CHUNK_BYTES }, source);
}

export async function loadRunState(
  hubNc: NatsConnection,
  ref: RunRef,
  name: string,
): Promise<AsyncGenerator<Uint8Array> | undefined> {
  const store = await openObjectStore(hubNc, runStateBucket(ref.namespace, ref.run)).catch((err: unknown) => {
    if (isObjectStoreNotFound(err)) return undefined;
    throw err;
  });
  const result = await store?.get(name);
  return result ? objectBytes(result) : undefined;
}

export async function removeRunBuckets(hubNc: NatsConnection, ref: RunRef): Promise<void> {
  await removeStream(hubNc, objectStoreStream(runModelBucket(ref.namespace, ref.run)));
  await removeStream(hubNc, objectStoreStream(runStateBucket(ref.namespace, ref.run)));
}
