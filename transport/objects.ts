// Shared plumbing for the two directions: object stores, mirrors across a leaf link, and
// reading an object as a stream of bytes.
import { type JetStreamManager, jetstreamManager, type StreamConfig } from "@nats-io/jetstream";
import { type ObjectResult, type ObjectStore, Objm, setSha256Backend } from "@nats-io/obj";
import type { NatsConnection } from "@nats-io/transport-node";
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

/** A ReadableStream over any byte source, as the object store's put wants one. */
export function readableFrom(
  source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
): ReadableStream<Uint8Array> {
  const iterator =
    Symbol.asyncIterator in source
      ? (source as AsyncIterable<Uint8Array>)[Symbol.asyncIterator]()
      : (source as Iterable<Uint8Array>)[Symbol.iterator]();
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      const { done, value } = await iterator.next();
      if (done) controller.close();
      else controller.enqueue(value);
    },
    async cancel() {
      await iterator.return?.();
    },
  });
}
