// Deltas, region → hub. A learner puts its delta into its own region's bucket; the hub
// holds a mirror of that bucket in its own domain, which JetStream keeps up to date over the
// leaf link the region dialled. The hub reads and verifies from its local copy.
import type { KeyObject } from "node:crypto";
import { DeliverPolicy, jetstream, jetstreamManager } from "@nats-io/jetstream";
import type { ObjectInfo, ObjectWatchInfo } from "@nats-io/obj";
import type { NatsConnection } from "@nats-io/transport-node";
import {
  type ByteSource,
  type DeltaManifest,
  openVerifiedDelta,
  parseSignedManifest,
  type SignedManifest,
  serializeSignedManifest,
  type VerifiedDeltaStream,
} from "../deltas/mod.ts";
import { TransportError } from "./errors.ts";
import {
  type DeltaAddress,
  deltaMirrorDeliverPrefix,
  deltaObjectName,
  MANIFEST_METADATA,
  parseDeltaObjectName,
  regionDeltaBucket,
} from "./names.ts";
import {
  type BucketOptions,
  DEFAULT_CHUNK_BYTES,
  ensureMirror,
  ensureObjectStore,
  isObjectStoreNotFound,
  isStreamNotFound,
  listObjects,
  type MirrorNudger,
  type MirrorProgress,
  mirrorNudger,
  mirrorProgress,
  objectChunks,
  objectMetaSubjects,
  objectStoreStream,
  openObjectStore,
  putObject,
} from "./objects.ts";

/** Member, in its region: the bucket its learners publish into. */
export async function ensureRegionDeltaBucket(
  regionNc: NatsConnection,
  region: string,
  options?: BucketOptions,
): Promise<void> {
  await ensureObjectStore(regionNc, regionDeltaBucket(region), options);
}

/**
 * Hub: keep a mirror of the region's delta bucket in the hub's domain. `domain` is the
 * region's JetStream domain (SovereignNode spec.jetStreamDomain), by default its name; the
 * leaf link's permissions are granted per domain.
 */
export async function ensureRegionDeltaMirror(
  hubNc: NatsConnection,
  region: string,
  domain = region,
): Promise<void> {
  await ensureMirror(hubNc, {
    stream: objectStoreStream(regionDeltaBucket(region)),
    fromDomain: domain,
    deliverPrefix: deltaMirrorDeliverPrefix(domain),
  });
}

/**
 * Hub: sends a region's delta mirror's lost consumer request again once the region is back,
 * instead of waiting out nats-server's retry (mirrorNudger). Create it with the mirror.
 */
export function regionDeltaMirrorNudger(
  hubNc: NatsConnection,
  region: string,
  domain = region,
): MirrorNudger {
  return mirrorNudger(hubNc, { stream: objectStoreStream(regionDeltaBucket(region)), fromDomain: domain });
}

export async function regionDeltaMirrorProgress(
  hubNc: NatsConnection,
  region: string,
): Promise<MirrorProgress> {
  return mirrorProgress(await jetstreamManager(hubNc), objectStoreStream(regionDeltaBucket(region)));
}

export interface PublishDeltaInput {
  /** Where it goes: the learner's own region. The run is `namespace/run`; the manifest names the run only. */
  region: string;
  namespace: string;
  signed: SignedManifest;
  /** The delta file's bytes, the same ones the manifest's digests were computed over. */
  source: ByteSource;
  chunkBytes?: number;
  /** Unacknowledged chunks at most; bounds what the learner holds in flight (window × chunk). */
  window?: number;
}

export interface PublishedDelta {
  name: string;
  size: number;
  chunks: number;
}

/**
 * Learner: put a delta into its region's bucket under its place (run, round, learner), with
 * its signed manifest in the object's metadata. The object becomes visible (to the hub, too)
 * only when its last chunk is stored; re-publishing the same place replaces it.
 */
export async function publishDelta(
  regionNc: NatsConnection,
  input: PublishDeltaInput,
): Promise<PublishedDelta> {
  const { manifest } = input.signed;
  if (manifest.region !== input.region || manifest.namespace !== input.namespace) {
    throw new TransportError(
      "DeltaAddressMismatch",
      `the manifest is for ${manifest.namespace}/${manifest.run} in region ${manifest.region} but this learner publishes for ${input.namespace}/${manifest.run} in ${input.region}`,
    );
  }
  const name = deltaObjectName(addressOf(input.namespace, manifest));
  const info = await putObject(
    regionNc,
    regionDeltaBucket(input.region),
    {
      name,
      metadata: { [MANIFEST_METADATA]: new TextDecoder().decode(serializeSignedManifest(input.signed)) },
      chunkBytes: input.chunkBytes ?? DEFAULT_CHUNK_BYTES,
      ...(input.window ? { window: input.window } : {}),
    },
    input.source,
  );
  if (info.size !== manifest.size) {
    throw new TransportError(
      "DeltaSizeMismatch",
      `put ${info.size} bytes but the manifest signs ${manifest.size}; sign the manifest over the exact file you publish`,
    );
  }
  return { name, size: info.size, chunks: info.chunks };
}

function addressOf(namespace: string, manifest: DeltaManifest): DeltaAddress {
  return { namespace, run: manifest.run, round: manifest.round, learner: manifest.learner };
}

export interface ArrivedDelta {
  region: string;
  name: string;
  address: DeltaAddress;
  size: number;
  /** The object revision (stream sequence of its metadata): a re-published delta has a new one. */
  revision: number;
  signed: SignedManifest;
}

/**
 * Hub: what an object in a region's mirror claims to be, checked against where it sits.
 * Throws with a reason code for anything not written by publishDelta for that region.
 */
export function describeArrival(region: string, info: ObjectInfo): ArrivedDelta {
  const address = parseDeltaObjectName(info.name);
  if (!address) {
    throw new TransportError(
      "DeltaAddressMismatch",
      `object '${info.name}' is not named <namespace>/<run>/round-<n>/<learner>`,
    );
  }
  const text = info.metadata?.[MANIFEST_METADATA];
  if (text === undefined) {
    throw new TransportError(
      "DeltaManifestMissing",
      `object '${info.name}' in ${region} carries no signed manifest; publish deltas with publishDelta`,
    );
  }
  const signed = parseSignedManifest(new TextEncoder().encode(text));
  const m = signed.manifest;
  const claimed = {
    region: m.region,
    namespace: m.namespace,
    run: m.run,
    round: m.round,
    learner: m.learner,
  };
  const actual = {
    region,
    namespace: address.namespace,
    run: address.run,
    round: address.round,
    learner: address.learner,
  };
  if (JSON.stringify(claimed) !== JSON.stringify(actual)) {
    throw new TransportError(
      "DeltaAddressMismatch",
      `object '${info.name}' in ${region} carries a manifest for ${JSON.stringify(claimed)}; a delta is only accepted where its manifest says it belongs`,
    );
  }
  if (info.size !== m.size) {
    throw new TransportError(
      "DeltaSizeMismatch",
      `object '${info.name}' holds ${info.size} bytes, its manifest signs ${m.size}`,
    );
  }
  return { region, name: info.name, address, size: info.size, revision: info.revision, signed };
}

export interface WatchedArrival {
  /** Set when the object is a well-formed delta; `error` otherwise (refuse it, count it, go on). */
  delta?: ArrivedDelta;
  error?: unknown;
  name: string;
}

/**
 * Hub: every delta in a region's mirror, those already there first, then each as it
 * arrives. A malformed object is reported, never thrown, so one bad learner cannot stop the
 * hub from seeing the others.
 */
export async function* watchRegionDeltas(
  hubNc: NatsConnection,
  region: string,
  signal?: AbortSignal,
): AsyncGenerator<WatchedArrival> {
  const store = await openObjectStore(hubNc, regionDeltaBucket(region));
  const watcher = await store.watch({ ignoreDeletes: true, includeHistory: true });
  const stop = () => watcher.stop();
  signal?.addEventListener("abort", stop, { once: true });
  try {
    for await (const info of watcher as AsyncIterable<ObjectWatchInfo | null>) {
      if (info === null) continue; // the end of the history already in the bucket
      if (info.deleted) continue;
      try {
        yield { name: info.name, delta: describeArrival(region, info) };
      } catch (error) {
        yield { name: info.name, error };
      }
    }
  } finally {
    signal?.removeEventListener("abort", stop);
    watcher.stop();
  }
}

/**
 * Hub: the name of each object whose meta arrives in the hub's mirror of a region's bucket
 * from now on (nothing already there). A hint to look sooner, not a delivery: the hub still
 * lists and verifies what is there (listRegionDeltas), so a hint lost to a reconnect costs
 * only time. One ordered pull consumer for as long as the hub watches, not one per look.
 */
export async function* deltaArrivals(
  hubNc: NatsConnection,
  region: string,
  signal?: AbortSignal,
): AsyncGenerator<string> {
  const bucket = regionDeltaBucket(region);
  const metaPrefix = `$O.${bucket}.M.`;
  const consumer = await jetstream(hubNc).consumers.get(objectStoreStream(bucket), {
    filter_subjects: `${metaPrefix}>`,
    deliver_policy: DeliverPolicy.New,
  });
  const messages = await consumer.consume();
  const stop = () => messages.stop();
  signal?.addEventListener("abort", stop, { once: true });
  try {
    for await (const m of messages) {
      yield Buffer.from(m.subject.slice(metaPrefix.length), "base64url").toString("utf8");
    }
  } finally {
    signal?.removeEventListener("abort", stop);
    messages.stop();
  }
}

export interface OpenArrivedDeltaOptions {
  /** Objects larger than this are refused before a byte is read. */
  maxBytes: number;
}

/**
 * Hub: stream a delta from the local mirror through manifest verification. The returned
 * stream's chunks throw on the first byte that does not match what the learner signed;
 * treat the delta as accepted only when iteration completes.
 */
export async function openArrivedDelta(
  hubNc: NatsConnection,
  arrival: ArrivedDelta,
  trustedKey: KeyObject,
  options: OpenArrivedDeltaOptions,
): Promise<VerifiedDeltaStream> {
  return openVerifiedDelta(arrival.signed, trustedKey, await arrivedDeltaBytes(hubNc, arrival, options), {
    maxDataBytes: options.maxBytes,
    expectedTotalBytes: arrival.size,
  });
}

/**
 * Hub: a delta's raw bytes from the local mirror, for a reader that verifies them itself
 * (addVerifiedDelta). Refused before a byte is read when the object is over the limit.
 */
export async function arrivedDeltaBytes(
  hubNc: NatsConnection,
  arrival: ArrivedDelta,
  options: OpenArrivedDeltaOptions,
): Promise<AsyncGenerator<Uint8Array>> {
  if (arrival.size > options.maxBytes) {
    throw new TransportError(
      "DeltaObjectTooLarge",
      `delta '${arrival.name}' from ${arrival.region} is ${arrival.size} bytes, over the limit of ${options.maxBytes}; raise the run's delta size limit or publish a smaller encoding`,
    );
  }
  const bucket = regionDeltaBucket(arrival.region);
  const store = await openObjectStore(hubNc, bucket);
  const info = await store.info(arrival.name);
  if (!info || info.deleted) {
    throw new TransportError(
      "DeltaObjectMissing",
      `delta '${arrival.name}' is not (or no longer) in ${arrival.region}'s mirror`,
    );
  }
  // Every byte is checked against the signed manifest by the caller, so the read skips the
  // object store client's own hash of the whole object (objectChunks says why and how much).
  return objectChunks(hubNc, bucket, info);
}

/**
 * Hub: the deltas of one run and round in a region's mirror, as they stand. Malformed
 * objects are reported (with their error), not thrown.
 */
export async function listRegionDeltas(
  hubNc: NatsConnection,
  region: string,
  ref: { namespace: string; run: string; round: number },
): Promise<WatchedArrival[]> {
  const prefix = `${ref.namespace}/${ref.run}/round-${ref.round}/`;
  const infos = await listObjects(hubNc, regionDeltaBucket(region), {
    names: (name) => name.startsWith(prefix),
  }).catch((err: unknown) => {
    if (isObjectStoreNotFound(err)) return [];
    throw err;
  });
  const out: WatchedArrival[] = [];
  for (const info of infos) {
    try {
      out.push({ name: info.name, delta: describeArrival(region, info) });
    } catch (error) {
      out.push({ name: info.name, error });
    }
  }
  return out; // in revision order: the first version of an object first
}

export interface PurgeDeltasRef {
  namespace: string;
  run: string;
  /** Deltas of rounds strictly before this one are removed. */
  beforeRound: number;
}

export interface PurgedDeltas {
  /** Object names removed. */
  objects: string[];
  /** Stream messages (chunks and metas) removed. */
  messages: number;
}

function purgeable(ref: PurgeDeltasRef): (name: string) => boolean {
  if (!Number.isSafeInteger(ref.beforeRound) || ref.beforeRound < 0) {
    throw new RangeError(`round ${ref.beforeRound} is not a count`);
  }
  return (name) => {
    const a = parseDeltaObjectName(name);
    return a !== undefined && a.namespace === ref.namespace && a.run === ref.run && a.round < ref.beforeRound;
  };
}

/**
 * Member, in its region: removes a run's deltas of rounds before `beforeRound` from the
 * region's bucket. Each object is deleted the object store's way (a `deleted` meta, then its
 * chunks purged), so standard clients see it gone, and the delete marker crosses to the hub.
 *
 * The hub's mirror does NOT follow: a mirror applies neither the origin's purges nor the
 * marker's rollup (checked on nats-server 2.14: after the delete the mirror still held the
 * object's chunks and its old meta, plus the marker). It reports the object as deleted, but
 * keeps its bytes until the hub runs purgeMirroredDeltas.
 */
export async function purgeRegionDeltas(
  regionNc: NatsConnection,
  region: string,
  ref: PurgeDeltasRef,
): Promise<PurgedDeltas> {
  const match = purgeable(ref);
  const bucket = regionDeltaBucket(region);
  const infos = await listObjects(regionNc, bucket, { names: match }).catch((err: unknown) => {
    if (isObjectStoreNotFound(err)) return undefined;
    throw err;
  });
  if (!infos) return { objects: [], messages: 0 };
  const store = await openObjectStore(regionNc, bucket);
  const out: PurgedDeltas = { objects: [], messages: 0 };
  for (const info of infos) {
    const purged = await store.delete(info.name);
    out.objects.push(info.name);
    out.messages += purged.purged;
  }
  return out;
}

/**
 * Hub: removes a run's deltas of rounds before `beforeRound` from its mirror of a region's
 * bucket, deleted at the origin or not: every chunk of every version the mirror holds (a
 * mirror keeps replaced versions too, see purgeRegionDeltas) and the object's metas, so the
 * hub no longer lists it. A delete marker that crosses later is a `deleted` meta, which
 * watchRegionDeltas and listRegionDeltas skip.
 */
export async function purgeMirroredDeltas(
  hubNc: NatsConnection,
  region: string,
  ref: PurgeDeltasRef,
): Promise<PurgedDeltas> {
  const match = purgeable(ref);
  const bucket = regionDeltaBucket(region);
  const stream = objectStoreStream(bucket);
  const jsm = await jetstreamManager(hubNc);
  // Every object the mirror has a meta for, deleted ones included (the store's list skips
  // those, and an object deleted at the origin is exactly what is left to purge here).
  const metas = await objectMetaSubjects(jsm, bucket).catch((err: unknown) => {
    if (isStreamNotFound(err)) return undefined;
    throw err;
  });
  if (!metas) return { objects: [], messages: 0 };
  const out: PurgedDeltas = { objects: [], messages: 0 };
  for (const { name, subject: metaSubject } of metas) {
    if (!match(name)) continue;
    // Every version's chunks: the nuids of all metas the mirror holds for the name.
    const nuids = new Set<string>();
    for (let seq = 1; ; ) {
      const m = await jsm.direct.getMessage(stream, { seq, next_by_subj: metaSubject });
      if (!m) break;
      const nuid = (m.json() as { nuid?: unknown }).nuid;
      if (typeof nuid === "string" && nuid.length > 0) nuids.add(nuid);
      seq = m.seq + 1;
    }
    for (const nuid of nuids) {
      out.messages += (await jsm.streams.purge(stream, { filter: `$O.${bucket}.C.${nuid}` })).purged;
    }
    out.messages += (await jsm.streams.purge(stream, { filter: metaSubject })).purged;
    out.objects.push(name);
  }
  return out;
}
