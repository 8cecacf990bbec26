// What the transport tests share: NATS connections as each party of the testbed, and
// signed deltas built the way a learner builds them.
import { generateKeyPairSync, type KeyObject } from "node:crypto";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import type { ExecutionContext } from "ava";
import {
  type ByteSource,
  collectBytes,
  type DeltaEncoding,
  type DeltaManifest,
  type DeltaTensor,
  describeDelta,
  isDeltaError,
  publicKeyField,
  type SignedManifest,
  signManifest,
  writeDelta,
} from "../../deltas/mod.ts";
import {
  isTransportError,
  type TransportReason,
  type WatchedArrival,
  watchRegionDeltas,
} from "../../transport/mod.ts";
import type { Testbed } from "../testbed/harness.ts";

export interface Parties {
  hub: NatsConnection;
  member: NatsConnection;
  learner: NatsConnection;
}

/** The hub operator, and a region's member operator and learner pod, each on its own server with its own credential. */
export async function connectParties(t: ExecutionContext, tb: Testbed, region: string): Promise<Parties> {
  const { hub, regions } = tb.description.nats;
  const r = regions[region];
  if (!r) throw new Error(`no NATS description for ${region}`);
  const as = (url: string, u: { user: string; password: string }, name: string) =>
    connect({ servers: url, user: u.user, pass: u.password, name });
  const parties = {
    hub: await as(hub.url, hub.admin, "test-hub-operator"),
    member: await as(r.url, r.member, `test-${region}-member`),
    learner: await as(r.url, r.learner, `test-${region}-learner`),
  };
  t.teardown(() => Promise.all(Object.values(parties).map((nc) => nc.close())).then(() => undefined));
  return parties;
}

export const learnerKeys = generateKeyPairSync("ed25519");

export interface SignedDelta {
  file: Uint8Array;
  signed: SignedManifest;
}

export interface DeltaSpec {
  /** The run's namespace; "default" when not given. */
  namespace?: string;
  run: string;
  round: number;
  region: string;
  learner: string;
  tensors: DeltaTensor[];
  encoding?: DeltaEncoding;
  key?: KeyObject;
  publicKey?: KeyObject;
}

export function manifestFor(
  spec: DeltaSpec,
  described: Pick<DeltaManifest, "size" | "tensors" | "encoding">,
): DeltaManifest {
  return {
    version: 1,
    namespace: spec.namespace ?? "default",
    run: spec.run,
    round: spec.round,
    region: spec.region,
    learner: spec.learner,
    learnerKey: publicKeyField(spec.publicKey ?? learnerKeys.publicKey),
    baseModel: `sha256:${"cd".repeat(32)}`,
    encoding: described.encoding,
    tokens: 4096,
    innerSteps: 50,
    createdAt: "2026-11-24T06:00:00Z",
    size: described.size,
    tensors: described.tensors,
  };
}

export async function signedDelta(spec: DeltaSpec): Promise<SignedDelta> {
  const file = await collectBytes(writeDelta(spec.tensors, spec.encoding ?? "fp32"));
  const described = await describeDelta([file]);
  return { file, signed: signManifest(manifestFor(spec, described), spec.key ?? learnerKeys.privateKey) };
}

/** Signs a delta that is only ever streamed (too big to hold): `source()` must yield the same bytes each call. */
export async function signedStreamedDelta(
  spec: Omit<DeltaSpec, "tensors">,
  source: () => ByteSource,
): Promise<SignedManifest> {
  const described = await describeDelta(source());
  return signManifest(manifestFor({ ...spec, tensors: [] }, described), spec.key ?? learnerKeys.privateKey);
}

export async function refusal(promise: Promise<unknown>): Promise<string> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (isTransportError(err) || isDeltaError(err)) return err.reason;
  return err === undefined ? "accepted" : `unexpected: ${err instanceof Error ? err.message : String(err)}`;
}

export type Reason = TransportReason | string;

/** Drains a verified delta stream; resolves to the bytes seen. */
export async function drain(chunks: AsyncIterable<{ bytes: Uint8Array }>): Promise<number> {
  let bytes = 0;
  for await (const chunk of chunks) bytes += chunk.bytes.byteLength;
  return bytes;
}

/** The first arrival at the hub under `name` (well-formed or not), or a timeout error. */
export async function arrivalOf(
  hub: NatsConnection,
  region: string,
  name: string,
  timeoutMs = 60_000,
): Promise<WatchedArrival> {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), timeoutMs);
  try {
    for await (const arrival of watchRegionDeltas(hub, region, abort.signal)) {
      if (arrival.name === name) return arrival;
    }
    throw new Error(`no object '${name}' arrived in ${region}'s mirror at the hub within ${timeoutMs} ms`);
  } finally {
    clearTimeout(timer);
    abort.abort();
  }
}

export const TENSOR_MIB = 64;

/** Tensors of 64 MiB generated on demand, the same values on every pass: a large delta is written twice (hash, then publish) and never stored whole. */
export function generatedTensors(sizeMiB: number): DeltaTensor[] {
  const count = Math.max(1, Math.round(sizeMiB / TENSOR_MIB));
  const elements = (TENSOR_MIB * 1024 * 1024) / 4;
  return Array.from({ length: count }, (_, i) => ({
    name: `layers.${i}.weight`,
    shape: [elements / 1024, 1024],
    values: () => {
      const values = new Float32Array(elements);
      for (let j = 0; j < elements; j++) values[j] = ((j * 2654435761 + i) % 2001) * 1e-6 - 1e-3;
      return values;
    },
  }));
}
