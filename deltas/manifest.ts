// The signed manifest of a delta: who produced it, from what, how, and the SHA-256 of every
// tensor's stored bytes. The hub verifies the signature before reading any data and every
// digest while the bytes stream in, trusting no digest the transport computed.
import { createHash, createPublicKey, type KeyObject, sign, verify } from "node:crypto";
import { DELTA_FORMAT, METADATA_ENCODING, METADATA_FORMAT } from "./delta.ts";
import { type DeltaEncoding, isDeltaEncoding } from "./encodings.ts";
import { DeltaError } from "./errors.ts";
import { JsonSyntaxError, type JsonValue, parseJson, plainUnsignedInteger } from "./json.ts";
import {
  type ByteSource,
  type Dtype,
  isDtype,
  openSafetensors,
  type ReadOptions,
  type SafetensorsHeader,
  type SafetensorsStream,
  type TensorChunk,
} from "./safetensors.ts";

export const MANIFEST_VERSION = 1;
/** Prepended to the canonical JSON before signing, so a manifest signature can never be replayed as any other signed message of the learner's key. */
export const SIGNING_CONTEXT = "sovereign-delta-manifest/1\n";

export interface ManifestTensor {
  name: string;
  dtype: Dtype;
  shape: number[];
  /** Lower-case hex SHA-256 of the tensor's bytes as stored in the file. */
  sha256: string;
}

export interface DeltaManifest {
  version: 1;
  /** The FederatedRun's namespace: with `run`, names the run the delta belongs to. */
  namespace: string;
  run: string;
  round: number;
  region: string;
  learner: string;
  /** The learner's Ed25519 public key: `ed25519:` + base64url of the 32 raw bytes. */
  learnerKey: string;
  /** `sha256:<hex>` of the global model the learner started from. */
  baseModel: string;
  encoding: DeltaEncoding;
  tokens: number;
  innerSteps: number;
  /** RFC 3339, UTC (`Z`). */
  createdAt: string;
  /** Size in bytes of the whole safetensors file. */
  size: number;
  /** In file order. */
  tensors: ManifestTensor[];
  /**
   * Optional, as the learner measured them since its previous delta: milliseconds spent on the
   * training steps, and waiting (for a global model, or stalled ahead of it). The hub counts
   * them per region for the goodput panel; they weigh nothing in the aggregation.
   */
  trainMs?: number;
  waitMs?: number;
}

export interface SignedManifest {
  manifest: DeltaManifest;
  /** base64url (no padding) Ed25519 signature over SIGNING_CONTEXT + canonicalJson(manifest). */
  signature: string;
}

// ---------------------------------------------------------------------------------------------
// Canonical JSON

/**
 * The one serialisation that is signed: UTF-8 JSON without whitespace, object keys sorted
 * by UTF-16 code units, strings escaped as JSON.stringify does (RFC 8785, JCS), and numbers
 * restricted to safe integers so that no float formatting question arises.
 */
export function canonicalJson(value: unknown): string {
  if (typeof value === "string") {
    if (!value.isWellFormed()) throw fieldInvalid("a string holds a lone surrogate");
    return JSON.stringify(value);
  }
  if (typeof value === "number") {
    if (!Number.isSafeInteger(value) || Object.is(value, -0))
      throw fieldInvalid(`${value} is not a safe integer`);
    return String(value);
  }
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (typeof value === "object" && value !== null) {
    const keys = Object.keys(value).sort();
    return `{${keys
      .map((k) => `${canonicalJson(k)}:${canonicalJson((value as Record<string, unknown>)[k])}`)
      .join(",")}}`;
  }
  throw fieldInvalid(`${typeof value} cannot appear in a manifest`);
}

function fieldInvalid(message: string): DeltaError {
  return new DeltaError("ManifestFieldInvalid", `${message}; the learner must send a valid manifest`);
}

/** SHA-256 of the canonical manifest: the identity used to ignore duplicate deliveries. */
export function manifestDigest(manifest: DeltaManifest): string {
  return `sha256:${createHash("sha256").update(canonicalJson(manifest)).digest("hex")}`;
}

// ---------------------------------------------------------------------------------------------
// Field validation

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const SHA256_HEX = /^[0-9a-f]{64}$/;
const RFC3339_UTC = /^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(\.\d{1,9})?Z$/;
const KEY_PREFIX = "ed25519:";
const MAX_TENSORS = 1_000_000;

const MANIFEST_FIELDS = [
  "version",
  "namespace",
  "run",
  "round",
  "region",
  "learner",
  "learnerKey",
  "baseModel",
  "encoding",
  "tokens",
  "innerSteps",
  "createdAt",
  "size",
  "tensors",
] as const;
const OPTIONAL_MANIFEST_FIELDS = ["trainMs", "waitMs"] as const;
const TENSOR_FIELDS = ["name", "dtype", "shape", "sha256"] as const;

function exactFields(
  where: string,
  value: unknown,
  fields: readonly string[],
  optional: readonly string[] = [],
): Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value))
    throw fieldInvalid(`${where} is not an object`);
  const keys = Object.keys(value);
  for (const key of keys)
    if (!fields.includes(key) && !optional.includes(key))
      throw fieldInvalid(`${where} has an unknown field '${key}'`);
  for (const field of fields)
    if (!Object.hasOwn(value, field)) throw fieldInvalid(`${where} lacks '${field}'`);
  return value as Record<string, unknown>;
}

function integer(where: string, value: unknown, min: number): number {
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < min) {
    throw fieldInvalid(`${where} must be an integer ≥ ${min}, got ${JSON.stringify(value)}`);
  }
  return value;
}

function matching(where: string, value: unknown, pattern: RegExp, maxLength: number): string {
  if (typeof value !== "string" || value.length > maxLength || !pattern.test(value)) {
    throw fieldInvalid(`${where} is malformed: ${JSON.stringify(value)?.slice(0, 80)}`);
  }
  return value;
}

/** Throws ManifestFieldInvalid unless `value` is a well-formed manifest; returns it typed. */
export function checkManifest(value: unknown): DeltaManifest {
  const m = exactFields("manifest", value, MANIFEST_FIELDS, OPTIONAL_MANIFEST_FIELDS);
  if (m.version !== MANIFEST_VERSION) throw fieldInvalid(`version must be ${MANIFEST_VERSION}`);
  matching("namespace", m.namespace, DNS_LABEL, 63);
  matching("run", m.run, DNS_LABEL, 63);
  integer("round", m.round, 0);
  matching("region", m.region, DNS_LABEL, 63);
  matching("learner", m.learner, DNS_SUBDOMAIN, 253);
  publicKeyFromField(m.learnerKey);
  if (typeof m.baseModel !== "string" || !m.baseModel.startsWith("sha256:")) {
    throw fieldInvalid("baseModel must be sha256:<64 hex>");
  }
  matching("baseModel", m.baseModel.slice(7), SHA256_HEX, 64);
  if (typeof m.encoding !== "string" || !isDeltaEncoding(m.encoding)) {
    throw fieldInvalid(`encoding ${JSON.stringify(m.encoding)} is unknown`);
  }
  integer("tokens", m.tokens, 1);
  integer("innerSteps", m.innerSteps, 1);
  const created = matching("createdAt", m.createdAt, RFC3339_UTC, 40);
  const parsed = new Date(created);
  if (Number.isNaN(parsed.getTime()) || parsed.toISOString().slice(0, 19) !== created.slice(0, 19)) {
    throw fieldInvalid(`createdAt ${created} is not a real UTC time`);
  }
  integer("size", m.size, 8);
  for (const field of OPTIONAL_MANIFEST_FIELDS) if (Object.hasOwn(m, field)) integer(field, m[field], 0);
  if (!Array.isArray(m.tensors) || m.tensors.length > MAX_TENSORS)
    throw fieldInvalid("tensors must be a list");
  const names = new Set<string>();
  m.tensors.forEach((entry, i) => {
    const t = exactFields(`tensors[${i}]`, entry, TENSOR_FIELDS);
    if (typeof t.name !== "string" || t.name.length === 0 || !t.name.isWellFormed()) {
      throw fieldInvalid(`tensors[${i}].name is not a valid name`);
    }
    if (names.has(t.name)) throw fieldInvalid(`tensor '${t.name}' is listed twice`);
    names.add(t.name);
    if (typeof t.dtype !== "string" || !isDtype(t.dtype))
      throw fieldInvalid(`tensors[${i}].dtype is unknown`);
    if (!Array.isArray(t.shape)) throw fieldInvalid(`tensors[${i}].shape must be a list`);
    for (const dim of t.shape) integer(`tensors[${i}].shape`, dim, 0);
    matching(`tensors[${i}].sha256`, t.sha256, SHA256_HEX, 64);
  });
  return m as unknown as DeltaManifest;
}

// ---------------------------------------------------------------------------------------------
// Keys and signatures

export function publicKeyField(key: KeyObject): string {
  const jwk = key.export({ format: "jwk" });
  if (jwk.kty !== "OKP" || jwk.crv !== "Ed25519" || typeof jwk.x !== "string") {
    throw new DeltaError(
      "ManifestKeyMismatch",
      "the learner key is not an Ed25519 key; learners sign with Ed25519",
    );
  }
  return `${KEY_PREFIX}${jwk.x}`;
}

export function publicKeyFromField(value: unknown): KeyObject {
  if (typeof value !== "string" || !/^ed25519:[A-Za-z0-9_-]{43}$/.test(value)) {
    throw fieldInvalid("learnerKey must be ed25519:<base64url of 32 bytes>");
  }
  try {
    return createPublicKey({
      key: { kty: "OKP", crv: "Ed25519", x: value.slice(KEY_PREFIX.length) },
      format: "jwk",
    });
  } catch (err) {
    throw new DeltaError("ManifestFieldInvalid", "learnerKey is not an Ed25519 public key", { cause: err });
  }
}

function signedBytes(manifest: DeltaManifest): Buffer {
  return Buffer.from(SIGNING_CONTEXT + canonicalJson(manifest), "utf8");
}

export function signManifest(manifest: DeltaManifest, privateKey: KeyObject): SignedManifest {
  checkManifest(manifest);
  const signature = sign(null, signedBytes(manifest), privateKey).toString("base64url");
  return { manifest, signature };
}

/**
 * Checks the fields, that the manifest names `trustedKey` (the key the hub bound to the
 * learner's attestation, never one taken from the manifest itself) and the signature.
 */
export function verifyManifestSignature(signed: SignedManifest, trustedKey: KeyObject): DeltaManifest {
  exactFields("signed manifest", signed, ["manifest", "signature"]);
  const manifest = checkManifest(signed.manifest);
  if (manifest.learnerKey !== publicKeyField(trustedKey)) {
    throw new DeltaError(
      "ManifestKeyMismatch",
      `the manifest names key ${manifest.learnerKey}, not the key bound to learner '${manifest.learner}'; refuse the delta`,
    );
  }
  const signature = signed.signature;
  // 86 characters carry 516 bits: the last one's 4 spare bits must be zero, so that one signature
  // has one spelling (a decoder ignores them, and a changed character would still verify).
  if (
    typeof signature !== "string" ||
    !/^[A-Za-z0-9_-]{86}$/.test(signature) ||
    Buffer.from(signature, "base64url").toString("base64url") !== signature
  ) {
    throw new DeltaError(
      "ManifestSignatureInvalid",
      "the signature is not 64 bytes of canonical base64url; refuse the delta",
    );
  }
  if (!verify(null, signedBytes(manifest), trustedKey, Buffer.from(signature, "base64url"))) {
    throw new DeltaError(
      "ManifestSignatureInvalid",
      `the signature does not match the manifest of ${manifest.namespace}/${manifest.run}/${manifest.round}/${manifest.region}/${manifest.learner}; it was altered or signed by another key — refuse the delta`,
    );
  }
  return manifest;
}

// ---------------------------------------------------------------------------------------------
// Wire form

/** The signed manifest as sent: canonical JSON of {manifest, signature}. */
export function serializeSignedManifest(signed: SignedManifest): Uint8Array {
  return new TextEncoder().encode(canonicalJson(signed));
}

function toPlain(value: JsonValue): unknown {
  switch (value.kind) {
    case "object": {
      const out: Record<string, unknown> = Object.create(null);
      for (const [k, v] of value.entries) out[k] = toPlain(v);
      return out;
    }
    case "array":
      return value.items.map(toPlain);
    case "string":
      return value.value;
    case "number": {
      const n = plainUnsignedInteger(value);
      if (n === undefined || n > BigInt(Number.MAX_SAFE_INTEGER)) {
        throw fieldInvalid(`number ${value.text} is not a non-negative safe integer`);
      }
      return Number(n);
    }
    default:
      throw fieldInvalid(`${value.kind} cannot appear in a manifest`);
  }
}

/** Parses a signed manifest strictly (duplicate keys, floats, unknown fields are refused). */
export function parseSignedManifest(bytes: Uint8Array): SignedManifest {
  let root: JsonValue;
  try {
    root = parseJson(bytes);
  } catch (err) {
    if (err instanceof JsonSyntaxError) {
      throw new DeltaError("ManifestFieldInvalid", `the manifest is not strict JSON (${err.message})`, {
        cause: err,
      });
    }
    throw err;
  }
  const plain = toPlain(root);
  const signed = exactFields("signed manifest", plain, ["manifest", "signature"]);
  return { manifest: checkManifest(signed.manifest), signature: signed.signature as string };
}

// ---------------------------------------------------------------------------------------------
// Producing and verifying a delta against its manifest

/** Digests of a delta file as it streams past, for the learner to put in its manifest. */
export async function describeDelta(
  source: ByteSource,
  options?: ReadOptions,
): Promise<Pick<DeltaManifest, "size" | "tensors" | "encoding">> {
  const stream = await openSafetensors(source, options);
  const encoding = stream.header.metadata?.[METADATA_ENCODING];
  if (encoding === undefined || !isDeltaEncoding(encoding)) {
    throw new DeltaError("DeltaLayoutInvalid", "the file names no known encoding; write it with writeDelta");
  }
  const tensors: ManifestTensor[] = [];
  let hash = createHash("sha256");
  for await (const chunk of stream.chunks()) {
    hash.update(chunk.bytes);
    if (chunk.last) {
      const { name, dtype, shape } = chunk.tensor;
      tensors.push({ name, dtype, shape, sha256: hash.digest("hex") });
      hash = createHash("sha256");
    }
  }
  return { size: stream.header.totalBytes, tensors, encoding };
}

function headerMismatch(manifest: DeltaManifest, what: string): DeltaError {
  return new DeltaError(
    "ManifestHeaderMismatch",
    `${what} in the delta of ${manifest.namespace}/${manifest.run}/${manifest.round}/${manifest.region}/${manifest.learner} differs from its signed manifest; refuse the delta`,
  );
}

function checkHeaderAgainst(manifest: DeltaManifest, header: SafetensorsHeader) {
  const metadata = header.metadata ?? {};
  const keys = Object.keys(metadata).sort();
  if (
    keys.join(",") !== [METADATA_ENCODING, METADATA_FORMAT].sort().join(",") ||
    metadata[METADATA_FORMAT] !== DELTA_FORMAT ||
    metadata[METADATA_ENCODING] !== manifest.encoding
  ) {
    throw headerMismatch(manifest, "the __metadata__ (format, encoding, nothing else)");
  }
  if (header.totalBytes !== manifest.size) throw headerMismatch(manifest, `the size (${header.totalBytes})`);
  if (header.tensors.length !== manifest.tensors.length) throw headerMismatch(manifest, "the tensor count");
  header.tensors.forEach((tensor, i) => {
    const expected = manifest.tensors[i] as ManifestTensor;
    if (
      tensor.name !== expected.name ||
      tensor.dtype !== expected.dtype ||
      tensor.shape.length !== expected.shape.length ||
      tensor.shape.some((d, j) => d !== expected.shape[j])
    ) {
      throw headerMismatch(
        manifest,
        `tensor #${i} ('${tensor.name}' ${tensor.dtype} [${tensor.shape.join(", ")}])`,
      );
    }
  });
}

export interface VerifiedDeltaStream extends SafetensorsStream {
  manifest: DeltaManifest;
}

/**
 * Opens a delta for the hub: verifies the manifest before reading a byte of data, checks the
 * header against it, and re-hashes every tensor as its chunks pass. A tensor's final chunk is
 * handed on only after its digest matched, and the delta counts as verified only when
 * iteration ends without throwing: stage what you accumulate until then.
 */
export async function openVerifiedDelta(
  signed: SignedManifest,
  trustedKey: KeyObject,
  source: ByteSource,
  options: ReadOptions = {},
): Promise<VerifiedDeltaStream> {
  const manifest = verifyManifestSignature(signed, trustedKey);
  // The size is compared with the header below, so that a mismatch names the manifest.
  const stream = await openSafetensors(source, options);
  checkHeaderAgainst(manifest, stream.header);
  return {
    manifest,
    header: stream.header,
    chunks: () => verifiedChunks(manifest, stream),
  };
}

async function* verifiedChunks(
  manifest: DeltaManifest,
  stream: SafetensorsStream,
): AsyncGenerator<TensorChunk> {
  let hash = createHash("sha256");
  let index = 0;
  for await (const chunk of stream.chunks()) {
    hash.update(chunk.bytes);
    if (chunk.last) {
      const expected = manifest.tensors[index] as ManifestTensor;
      const actual = hash.digest("hex");
      if (actual !== expected.sha256) {
        throw new DeltaError(
          "ManifestDigestMismatch",
          `tensor '${expected.name}' hashes to ${actual}, not the signed ${expected.sha256}; the bytes were altered in transit or storage — refuse the delta and re-fetch`,
        );
      }
      hash = createHash("sha256");
      index++;
    }
    yield chunk;
  }
}

/** Verifies a whole delta without keeping its data; resolves to the manifest when it is intact. */
export async function verifyDelta(
  signed: SignedManifest,
  trustedKey: KeyObject,
  source: ByteSource,
  options?: ReadOptions,
): Promise<DeltaManifest> {
  const stream = await openVerifiedDelta(signed, trustedKey, source, options);
  for await (const _chunk of stream.chunks()) {
    // draining is the check
  }
  return stream.manifest;
}
