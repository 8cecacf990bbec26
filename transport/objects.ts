// Shared plumbing for the two directions: object stores, mirrors across a leaf link, and
// reading an object as a stream of bytes.
import { createHash } from "node:crypto";
import {
  type JetStreamManager,
  JsHeaders,
  jetstream,
  jetstreamManager,
  type StreamConfig,
} from "@nats-io/jetstream";
import {
  Base64UrlPaddedCodec,
  type ObjectInfo,
  type ObjectResult,
  type ObjectStore,
  Objm,
  setSha256Backend,
} from "@nats-io/obj";
import { headers, type Msg, type MsgHdrs, type NatsConnection, nuid } from "@nats-io/transport-node";
import { TransportError } from "./errors.ts";

// The object store hashes every chunk; its default pure-JS SHA-256 caps a put or get near
// 40 MiB/s on this class of machine, Node's native one runs at several hundred.
setSha256Backend("native");

/** The largest chunk we ask for; the client clamps it to the server's max_payload. */
export const DEFAULT_CHUNK_BYTES = 1024 * 1024;

export function objectStoreStream(bucket: string): string {
  return `OBJ_${bucket}`;
}

export async function openObjectStore(nc: NatsConnection, bucket: string): Promise<ObjectStore> {
  return new Objm(nc).open(bucket);
}

export interface BucketOptions {
  /** Upper bound on what the bucket stores; JetStream refuses puts beyond it (discard new). */
  maxBytes?: number;
  /** Objects older than this are removed by the server (0: kept until deleted). */
  maxAgeMs?: number;
}

export async function ensureObjectStore(
  nc: NatsConnection,
  bucket: string,
  options: BucketOptions = {},
): Promise<ObjectStore> {
  return new Objm(nc).create(bucket, {
    storage: "file",
    ...(options.maxBytes ? { max_bytes: options.maxBytes } : {}),
    ...(options.maxAgeMs ? { ttl: options.maxAgeMs * 1_000_000 } : {}),
  } as Parameters<Objm["create"]>[1]);
}

export interface MirrorSpec {
  /** The object-store stream mirrored; the mirror has the same name in its own domain. */
  stream: string;
  /** JetStream domain the origin lives in. */
  fromDomain: string;
  /** Subject prefix the origin delivers to, admitted by the leaf link's permissions. */
  deliverPrefix: string;
}

/**
 * Creates (or checks) a mirror of a stream in another JetStream domain. The mirror is the
 * store-and-forward: JetStream copies each message once, in order, resumes after a cut link
 * from the last sequence it holds, and the origin keeps what it has not delivered yet.
 */
export async function ensureMirror(nc: NatsConnection, spec: MirrorSpec): Promise<void> {
  const jsm = await jetstreamManager(nc);
  const api = `$JS.${spec.fromDomain}.API`;
  const existing = await jsm.streams.info(spec.stream).catch((err: unknown) => {
    if (isStreamNotFound(err)) return undefined;
    throw err;
  });
  if (existing) {
    const m = existing.config.mirror;
    if (m?.name !== spec.stream || m.external?.api !== api || m.external?.deliver !== spec.deliverPrefix) {
      throw new TransportError(
        "MirrorMisconfigured",
        `stream ${spec.stream} exists but does not mirror ${spec.stream} from domain ${spec.fromDomain} via ${spec.deliverPrefix}; delete it and let the operator recreate it`,
      );
    }
    return;
  }
  const config: Partial<StreamConfig> & { name: string } = {
    name: spec.stream,
    mirror: { name: spec.stream, external: { api, deliver: spec.deliverPrefix } },
    allow_direct: true,
    storage: "file" as StreamConfig["storage"],
  };
  await jsm.streams.add(config);
}

/**
 * The objects a bucket holds as they stand: the last meta of every name, read with one stream
 * info and one message get per name. Unlike the object store client's list(), this leaves no
 * consumer behind: list() creates an ordered push consumer per call that the server keeps
 * until its inactivity threshold (a hub listing every mirror every two seconds kept hundreds),
 * and whose first delivery it waits on. `names` filters before any message is read.
 */
/**
 * Every object name a bucket's stream holds a meta for (deleted ones too), with that meta's
 * subject: one stream info, no consumer. A missing bucket throws the server's "stream not
 * found" (isObjectStoreNotFound).
 */
export async function objectMetaSubjects(
  jsm: JetStreamManager,
  bucket: string,
): Promise<{ name: string; subject: string }[]> {
  const metaPrefix = `$O.${bucket}.M.`;
  const info = await jsm.streams.info(objectStoreStream(bucket), { subjects_filter: `${metaPrefix}>` });
  return Object.keys(info.state.subjects ?? {}).map((subject) => ({
    subject,
    name: Buffer.from(subject.slice(metaPrefix.length), "base64url").toString("utf8"),
  }));
}

export async function listObjects(
  nc: NatsConnection,
  bucket: string,
  options: { names?: (name: string) => boolean; includeDeleted?: boolean } = {},
): Promise<ObjectInfo[]> {
  const jsm = await jetstreamManager(nc);
  const stream = objectStoreStream(bucket);
  const out: ObjectInfo[] = [];
  for (const { name, subject } of await objectMetaSubjects(jsm, bucket)) {
    if (options.names && !options.names(name)) continue;
    const m = await jsm.streams.getMessage(stream, { last_by_subj: subject });
    if (!m) continue; // purged between the two reads
    let meta: Omit<ObjectInfo, "revision" | "mtime">;
    try {
      meta = m.json();
    } catch {
      // A meta that is not JSON: reported as an object with no metadata, refused by the reader.
      meta = { name, bucket, nuid: "", size: -1, chunks: 0, digest: "", deleted: false } as typeof meta;
    }
    const entry = { ...meta, deleted: meta.deleted === true, revision: m.seq, mtime: m.time.toISOString() };
    if (entry.deleted && !options.includeDeleted) continue;
    out.push(entry);
  }
  return out.sort((a, b) => a.revision - b.revision);
}

export async function removeStream(nc: NatsConnection, stream: string): Promise<boolean> {
  const jsm = await jetstreamManager(nc);
  return jsm.streams.delete(stream).catch((err: unknown) => {
    if (isStreamNotFound(err)) return false;
    throw err;
  });
}

export function isObjectStoreNotFound(err: unknown): boolean {
  return err instanceof Error && /object store not found|stream not found/i.test(err.message);
}

export function isStreamNotFound(err: unknown): boolean {
  return err instanceof Error && /stream not found/i.test(err.message);
}

export interface MirrorProgress {
  /** Messages the mirror holds. */
  messages: number;
  bytes: number;
  /** Messages the origin has that the mirror does not, as last reported; -1 when unknown. */
  lag: number;
  /** Milliseconds since the mirror last heard from its origin; -1 when it never has. */
  activeAgoMs: number;
}

export async function mirrorProgress(jsm: JetStreamManager, stream: string): Promise<MirrorProgress> {
  const info = await jsm.streams.info(stream);
  const mirror = info.mirror;
  return {
    messages: info.state.messages,
    bytes: info.state.bytes,
    lag: mirror ? Number(mirror.lag) : -1,
    activeAgoMs: mirror && mirror.active >= 0 ? Number(mirror.active) / 1_000_000 : -1,
  };
}

/** What `MirrorNudger.nudge` found and did. */
export type MirrorNudge =
  /** Nothing to do: no request of the mirror's is waiting unanswered (the server's own retries apply). */
  | "nothing-lost"
  /** A request is waiting unanswered, but the origin's API does not answer yet: call again. */
  | "origin-down"
  /** The waiting request was sent again and the origin answered it: the mirror resumes now. */
  | "resumed"
  /** The waiting request was sent again but no answer came within the wait: call again. */
  | "unanswered";

export interface MirrorNudger {
  /**
   * If the mirror's server is waiting on a consumer request that was lost while the origin
   * was unreachable, and the origin's JetStream API answers now, sends that same request
   * again so the mirror resumes at once. Cheap and idempotent: safe to call whenever the
   * mirror looks silent.
   */
  nudge(): Promise<MirrorNudge>;
  /** Stops watching the mirror's requests. */
  close(): void;
}

/** How long nats-server (v2.14.9, `srcConsumerWaitTime`) waits for the answer to its request. */
const MIRROR_REQUEST_WAIT_MS = 30_000;
/** A request this old is not sent again: its answer might land after the server gave up on it. */
const MIRROR_REQUEST_REPLAY_MAX_AGE_MS = MIRROR_REQUEST_WAIT_MS - 2_000;
/** A copying mirror hears its origin's heartbeat every second; this long without is silence. */
const MIRROR_HEARTBEAT_GAP_MS = 3_000;
/** The servers' replies (`$JSC.R.<random>`) remembered, to tell an answered request from a lost one. */
const REMEMBERED_ANSWERS = 256;

interface MirrorRequest {
  subject: string;
  reply: string;
  headers?: MsgHdrs;
  data: Uint8Array;
  at: number;
}

/**
 * Watches the consumer requests the mirror `spec.stream`'s server sends to the origin, so that
 * one lost while the origin was down can be sent again once it is back (`nudge`). Start it
 * when the mirror is created and keep it for the mirror's life: it can only replay a request
 * it saw being sent.
 *
 * Why: nats-server (v2.14.9, the testbed's pin; server/stream.go) copies a mirror through a
 * consumer it creates on the origin by a request over the leaf link, then waits up to 30 s for
 * the answer. A mirror that hears nothing for 10 s asks again; while the origin's server is
 * down that request is dropped (nobody listens), and the mirror waits out the 30 s, then backs
 * off 10 s more per failed attempt (up to 2 min). The server does retry when the leaf link
 * reconnects, but not while a request is still waiting, so a region back within that window
 * resumes only after the wait and the backoff: 28-40 s measured on the testbed, against
 * 0.1-0.2 s with the request sent again. Updating the mirror stream's config does not help
 * (the server leaves the mirror's consumer alone on an update; measured 39 s), and deleting
 * and recreating the mirror would copy the whole origin again.
 *
 * The replayed request is the server's own, byte for byte, with its own reply subject: the
 * origin creates (or finds) the consumer it names and answers the server, which goes on as if
 * the first request had arrived. Only a request with no answer seen, younger than the server's
 * wait, for a mirror that has stopped hearing from its origin, is replayed. The connection must
 * be in the mirror's account and may publish and subscribe to
 * `$JS.<domain>.API.CONSUMER.CREATE.<stream>` and `$JSC.R.>`, and read the mirror's info.
 * Not covered: an origin back in the last 2 s of the server's wait, or after the wait ran out
 * while the link was already up; the server's own retry (10 s per failure so far) applies.
 */
export function mirrorNudger(nc: NatsConnection, spec: { stream: string; fromDomain: string }): MirrorNudger {
  const api = `$JS.${spec.fromDomain}.API`;
  let pending: MirrorRequest | undefined;
  // Answers are watched from the start: one can cross the link before a subscription made on
  // seeing its request would be in place.
  const answered = new Set<string>();
  const seenRequest = (m: Msg): void => {
    if (!m.reply || m.reply === pending?.reply) return; // none, or our own replay coming back
    let config: { name?: unknown; metadata?: Record<string, unknown> } | undefined;
    try {
      config = (m.json() as { config?: typeof config }).config;
    } catch {
      return;
    }
    if (typeof config?.name !== "string" || !config.name.startsWith("JS_MIRROR_")) return;
    const mirrorOf = config.metadata?.["_nats.mirror.stream"];
    if (mirrorOf !== undefined && mirrorOf !== spec.stream) return;
    pending = { subject: m.subject, reply: m.reply, headers: m.headers, data: m.data, at: Date.now() };
  };
  const seenAnswer = (m: Msg): void => {
    answered.add(m.subject);
    if (answered.size > REMEMBERED_ANSWERS) answered.delete(answered.values().next().value as string);
  };
  const subs = [
    // Without a filter the server asks on CONSUMER.CREATE.<stream>; with one, on .<stream>.<name>.<filter>.
    nc.subscribe(`${api}.CONSUMER.CREATE.${spec.stream}`, { callback: (_err, m) => seenRequest(m) }),
    nc.subscribe(`${api}.CONSUMER.CREATE.${spec.stream}.>`, { callback: (_err, m) => seenRequest(m) }),
    nc.subscribe("$JSC.R.>", { callback: (_err, m) => seenAnswer(m) }),
  ];
  const lost = (): MirrorRequest | undefined => {
    const p = pending;
    return p && !answered.has(p.reply) && Date.now() - p.at < MIRROR_REQUEST_REPLAY_MAX_AGE_MS
      ? p
      : undefined;
  };
  const mirrorSilent = async (): Promise<boolean> => {
    const m = await nc.request(`$JS.API.STREAM.INFO.${spec.stream}`, undefined, { timeout: 2_000 });
    const active = (m.json() as { mirror?: { active?: number } }).mirror?.active;
    return active !== undefined && (active < 0 || active / 1_000_000 > MIRROR_HEARTBEAT_GAP_MS);
  };
  const originAnswers = (): Promise<boolean> =>
    nc
      .request(`${api}.STREAM.INFO.${spec.stream}`, undefined, { timeout: 2_000 })
      .then((m) => (m.json() as { error?: unknown }).error === undefined)
      .catch(() => false);
  return {
    async nudge() {
      if (!lost() || !(await mirrorSilent())) return "nothing-lost";
      if (!(await originAnswers())) return "origin-down";
      const p = lost();
      if (!p) return "nothing-lost";
      nc.publish(p.subject, p.data, { reply: p.reply, ...(p.headers ? { headers: p.headers } : {}) });
      const deadline = Date.now() + 2_000;
      while (!answered.has(p.reply) && Date.now() < deadline) await new Promise((res) => setTimeout(res, 50));
      return answered.has(p.reply) ? "resumed" : "unanswered";
    },
    close() {
      for (const sub of subs) sub.unsubscribe();
      pending = undefined;
    },
  };
}

/**
 * An object's bytes as an async iterable. The client's own digest check still runs (its
 * failure ends the iteration with an error), but nothing relies on it: deltas are checked
 * against their signed manifest, models against the digest the hub recorded.
 */
export async function* objectBytes(result: ObjectResult): AsyncGenerator<Uint8Array> {
  const reader = result.data.getReader();
  let finished = false;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (value && value.byteLength > 0) yield value;
    }
    finished = true;
    const error = await result.error;
    if (error) throw error;
  } finally {
    if (!finished) await reader.cancel().catch(() => undefined);
  }
}

/**
 * Chunks a pipelined put keeps unacknowledged. With 1 MiB chunks the learner holds at most
 * this many MiB beyond the piece its source is producing. Measured (docs/deltas.md, transport):
 * 8 reaches the throughput of 32 on the testbed, 1 (the library's put) about half of it.
 */
export const DEFAULT_PUT_WINDOW = 8;

export interface PutObjectInput {
  name: string;
  /**
   * String metadata stored in the object's meta, as the object store's own `metadata`; or a
   * function of the object's SHA-256, called once every chunk is acknowledged, for metadata
   * known only at the end (a model's digest).
   */
  metadata?: Record<string, string> | ((sha256: Uint8Array) => Record<string, string>);
  /** Largest chunk; clamped to the server's max_payload. */
  chunkBytes?: number;
  /** Unacknowledged chunks at most (≥ 1). */
  window?: number;
  /** Per-publish ack timeout (ms); the connection's JetStream default when unset. */
  timeoutMs?: number;
}

export interface PutObjectResult {
  name: string;
  size: number;
  chunks: number;
  nuid: string;
  /** Stream sequence of the object's meta, the object store's `revision`. */
  revision: number;
}

/**
 * Puts an object into an object store, writing exactly what `@nats-io/obj`'s put writes
 * (chunks on `$O.<bucket>.C.<nuid>`, then the JSON meta on `$O.<bucket>.M.<name>` with a
 * subject rollup, the SHA-256 of the whole object in `digest`), so `nats object get`, the
 * library's `get` and the Python SDK read it unchanged.
 *
 * Why not the library's put: it awaits each chunk's ack before sending the next, so one
 * round trip per chunk plus a copy of every chunk in its buffer. Here up to `window` chunks
 * are in flight (each still a JetStream publish with an ack, all acks checked), and chunks
 * are slices of the source's pieces where they line up. Measured on the testbed
 * (docs/deltas.md): about 2× the library's put; its fast-ingest mode (undocumented, needs
 * `allow_batched` on the bucket's stream) reached about 1.3×.
 *
 * The meta is written only after every chunk is acknowledged: a put that fails leaves no
 * visible object. Its chunks are purged when the caller may purge (learners may not; the
 * member's purge of old rounds and the bucket's max age collect them).
 */
export async function putObject(
  nc: NatsConnection,
  bucket: string,
  input: PutObjectInput,
  source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
): Promise<PutObjectResult> {
  if (input.name.length === 0) throw new RangeError("an object needs a name");
  const maxPayload = nc.info?.max_payload ?? 1024 * 1024;
  const chunkBytes = Math.max(1, Math.min(input.chunkBytes ?? DEFAULT_CHUNK_BYTES, maxPayload));
  const window = Math.max(1, Math.floor(input.window ?? DEFAULT_PUT_WINDOW));
  const js = jetstream(nc);
  const store = await openObjectStore(nc, bucket);
  const old = await store.info(input.name);
  const id = nuid.next();
  const chunkSubject = `$O.${bucket}.C.${id}`;
  const publishOptions = input.timeoutMs ? { timeout: input.timeoutMs } : {};
  const sha = createHash("sha256");
  const inflight = new Set<Promise<void>>();
  let failure: unknown;
  let size = 0;
  let chunks = 0;

  const send = async (chunk: Uint8Array): Promise<void> => {
    sha.update(chunk);
    size += chunk.byteLength;
    chunks++;
    const acked: Promise<void> = js.publish(chunkSubject, chunk, publishOptions).then(
      () => {
        inflight.delete(acked);
      },
      (err: unknown) => {
        inflight.delete(acked);
        failure ??= err;
      },
    );
    inflight.add(acked);
    while (inflight.size >= window && failure === undefined) await Promise.race(inflight);
    if (failure !== undefined) throw failure;
  };

  try {
    // Pieces are sent as they are when they are chunk-sized; smaller or straddling pieces
    // are gathered into a fresh buffer (never reused: a chunk may still be in flight).
    let partial: Uint8Array | undefined;
    let filled = 0;
    for await (const piece of source as AsyncIterable<Uint8Array>) {
      if (!(piece instanceof Uint8Array))
        throw new TypeError("an object's source must yield Uint8Array pieces");
      let at = 0;
      while (at < piece.byteLength) {
        if (filled === 0 && piece.byteLength - at >= chunkBytes) {
          await send(piece.subarray(at, at + chunkBytes));
          at += chunkBytes;
          continue;
        }
        partial ??= new Uint8Array(chunkBytes);
        const n = Math.min(chunkBytes - filled, piece.byteLength - at);
        partial.set(piece.subarray(at, at + n), filled);
        filled += n;
        at += n;
        if (filled === chunkBytes) {
          await send(partial);
          partial = undefined;
          filled = 0;
        }
      }
    }
    if (partial && filled > 0) await send(partial.subarray(0, filled));
    while (inflight.size > 0) await Promise.race(inflight);
    if (failure !== undefined) throw failure;
  } catch (err) {
    await Promise.allSettled(inflight);
    await purgeSubject(nc, bucket, chunkSubject);
    throw new TransportError(
      "ObjectPutFailed",
      `putting '${input.name}' into ${bucket} failed after ${size} bytes: ${err instanceof Error ? err.message : String(err)}`,
      { cause: err },
    );
  }

  // The same meta, field for field, as the library's put.
  const sha256 = new Uint8Array(sha.digest());
  const meta = {
    bucket,
    nuid: id,
    size,
    chunks,
    name: input.name,
    description: "",
    options: { max_chunk_size: chunkBytes },
    metadata: typeof input.metadata === "function" ? input.metadata(sha256) : (input.metadata ?? {}),
    mtime: new Date().toISOString(),
    digest: `SHA-256=${Base64UrlPaddedCodec.encode(sha256)}`,
    deleted: false,
  };
  const h = headers();
  h.set(JsHeaders.RollupHdr, JsHeaders.RollupValueSubject);
  let revision: number;
  try {
    const ack = await js.publish(
      `$O.${bucket}.M.${Base64UrlPaddedCodec.encode(input.name)}`,
      JSON.stringify(meta),
      {
        ...publishOptions,
        headers: h,
      },
    );
    revision = ack.seq;
  } catch (err) {
    await purgeSubject(nc, bucket, chunkSubject);
    throw new TransportError(
      "ObjectPutFailed",
      `putting '${input.name}' into ${bucket}: its ${chunks} chunks are stored but its meta was not: ${err instanceof Error ? err.message : String(err)}`,
      { cause: err },
    );
  }
  // The replaced object's chunks, as the library does; a learner may not purge, then the
  // member's purge of old rounds collects them.
  if (old && !old.deleted && old.nuid !== id) await purgeSubject(nc, bucket, `$O.${bucket}.C.${old.nuid}`);
  return { name: input.name, size, chunks, nuid: id, revision };
}

/** Best effort: a connection without purge rights (a learner) leaves the subject as it is. */
async function purgeSubject(nc: NatsConnection, bucket: string, subject: string): Promise<number> {
  try {
    const jsm = await jetstreamManager(nc);
    return (await jsm.streams.purge(objectStoreStream(bucket), { filter: subject })).purged;
  } catch {
    return 0;
  }
}

/**
 * Client-side buffer of a chunk read: a few chunks ahead of the reader, not the object. The
 * server sends at most this much ahead, and what it has sent but the client has not read
 * counts against the connection's max_pending (64 MiB by default): past it the server drops
 * messages as to a slow consumer, and the read stalls. The hub reads up to four deltas at once
 * on one connection when a round closes (addVerifiedDeltas), so 4 × 8 MiB stays well under; 32
 * MiB each stalled it (bench/hub-aggregate.ts).
 */
const READ_BUFFER_BYTES = 8 * 1024 * 1024;
/** A read that receives nothing for this long has lost its object (replaced or removed). */
const READ_STALL_MS = 30_000;

/**
 * An object's bytes, chunk by chunk, through an ordered consumer on its chunk subject,
 * without the object store client's SHA-256 over the whole object. For readers that verify
 * every byte themselves (deltas against their signed manifest): the library's `get` hashes
 * again and reads through a push consumer with flow control; measured on the testbed
 * (docs/deltas.md) this read is faster by about the cost of that hash.
 *
 * Ends with a `DeltaObjectMissing` TransportError when the object's chunks stop short of
 * its meta (the object was replaced or removed while being read).
 */
export async function* objectChunks(
  nc: NatsConnection,
  bucket: string,
  info: Pick<ObjectInfo, "name" | "nuid" | "size" | "chunks">,
): AsyncGenerator<Uint8Array> {
  if (info.chunks === 0) return;
  const js = jetstream(nc);
  const chunkSubject = `$O.${bucket}.C.${info.nuid}`;
  // Chunks already gone (the object was replaced or removed since its meta was read) fail
  // now, not after the stall timeout.
  const stored = await (await jetstreamManager(nc)).streams.info(objectStoreStream(bucket), {
    subjects_filter: chunkSubject,
  });
  if ((stored.state.subjects?.[chunkSubject] ?? 0) < info.chunks) {
    throw new TransportError(
      "DeltaObjectMissing",
      `object '${info.name}' in ${bucket} has ${stored.state.subjects?.[chunkSubject] ?? 0} of its ${info.chunks} chunks; it was replaced or removed`,
    );
  }
  const consumer = await js.consumers.get(objectStoreStream(bucket), { filter_subjects: chunkSubject });
  // At least four of this object's chunks (not of the server's max_payload, which may be far
  // larger than the chunks: 4 × 8 MB per reader overran max_pending with three readers).
  const chunkBytes = Math.ceil(info.size / info.chunks);
  const messages = await consumer.consume({ max_bytes: Math.max(READ_BUFFER_BYTES, 4 * chunkBytes) });
  let stalled = false;
  let timer = setTimeout(() => {
    stalled = true;
    messages.stop();
  }, READ_STALL_MS);
  let chunks = 0;
  let bytes = 0;
  const missing = (why: string) =>
    new TransportError(
      "DeltaObjectMissing",
      `object '${info.name}' in ${bucket} ${why} after ${chunks} of ${info.chunks} chunks; it was replaced or removed while being read`,
    );
  try {
    for await (const m of messages) {
      clearTimeout(timer);
      chunks++;
      bytes += m.data.byteLength;
      if (bytes > info.size) throw missing(`holds more than its ${info.size} bytes`);
      if (m.data.byteLength > 0) yield m.data;
      if (chunks === info.chunks) break;
      if (m.info.pending === 0) throw missing("ends");
      timer = setTimeout(() => {
        stalled = true;
        messages.stop();
      }, READ_STALL_MS);
    }
    if (stalled) throw missing(`sent nothing for ${READ_STALL_MS / 1000} s`);
    if (chunks !== info.chunks || bytes !== info.size)
      throw missing(`ended at ${bytes} of ${info.size} bytes`);
  } finally {
    clearTimeout(timer);
    messages.stop();
  }
}
