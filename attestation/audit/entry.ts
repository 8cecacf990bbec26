/**
 * The audit entry: a versioned envelope around one typed record, chained to its predecessor by
 * hash. Writers get the typed union (`AuditRecord`); the verifier reads any entry through the
 * generic shape (`RawAuditEntry`) so that a log written by a newer operator, with kinds this
 * verifier does not know, still has its chain checked.
 */
import { canonicalJson, sha256Hex, type Verdict } from "../verdict.ts";
import type { SignedCheckpoint } from "./checkpoint.ts";
import { AuditReason, type AuditReasonCode } from "./reasons.ts";

export const AUDIT_API_VERSION = "sovereign.ai/audit/v1";

export interface LogOpenedBody {
  logId: string;
  /** Who opened the log (the operator instance), for the auditor's orientation only. */
  openedBy: string;
}

export interface AttestationVerdictBody {
  region: string;
  node: string;
  /** The AttestationPolicy judged against: its name and metadata.generation (the verdict holds its digest). */
  policy: { name: string; generation: number };
  /** The whole verdict: evidence digest, policy digest, nonce, reasons, per-device findings. */
  verdict: Verdict;
}

export interface PodAdmittedBody {
  region: string;
  node: string;
  pod: { namespace: string; name: string; uid: string };
  /** `verdictDigest()` of the verdict that opened the scheduling gate: links the pod to its AttestationVerdict entry. */
  verdictDigest: string;
  /** The attestation nonce the pod's learner key is bound to. */
  nonce: string;
}

export interface NodeQuarantinedBody {
  region: string;
  node: string;
  /** Attestation reason codes that caused the quarantine. */
  reasons: string[];
  message: string;
  verdictDigest?: string;
}

export interface DeltaAcceptedBody {
  run: string;
  round: number;
  region: string;
  learner: string;
  /** `manifestDigest()` of the signed delta manifest. */
  manifestDigest: string;
  /** The learner's Ed25519 key as the manifest names it (`ed25519:…`). */
  learnerKey: string;
}

export interface DeltaRefusedBody {
  run: string;
  round: number;
  region: string;
  learner?: string;
  /** The refusal's reason code (a DeltaReason or an attestation ReasonCode). */
  reason: string;
  message: string;
  manifestDigest?: string;
}

export interface RoundClosedBody {
  run: string;
  round: number;
  outcome: "QuorumMet" | "QuorumMissed";
  quorum: { required: number };
  /** Regions whose deltas went into the aggregate. */
  contributed: string[];
  /** Regions expected in the round that did not contribute. */
  missing: string[];
  /** Digest of the aggregated model, when the quorum was met. */
  modelDigest?: string;
  /** Late deltas of earlier rounds folded into the aggregate (lateDeltas: NextRound), as `region@round`. */
  lateFolded?: string[];
}

/** What callers append. `LogOpened` and `Checkpoint` are written by the log itself. */
export type AuditRecord =
  | { kind: "AttestationVerdict"; subject: string; body: AttestationVerdictBody }
  | { kind: "PodAdmitted"; subject: string; body: PodAdmittedBody }
  | { kind: "NodeQuarantined"; subject: string; body: NodeQuarantinedBody }
  | { kind: "DeltaAccepted"; subject: string; body: DeltaAcceptedBody }
  | { kind: "DeltaRefused"; subject: string; body: DeltaRefusedBody }
  | { kind: "RoundClosed"; subject: string; body: RoundClosedBody };

export type LogRecord =
  | AuditRecord
  | { kind: "LogOpened"; subject: string; body: LogOpenedBody }
  | { kind: "Checkpoint"; subject: string; body: SignedCheckpoint };

export type AuditKind = LogRecord["kind"];

export interface AuditEnvelope {
  apiVersion: typeof AUDIT_API_VERSION;
  /** Position in the log, from 0 (the LogOpened entry), without gaps. */
  seq: number;
  /** When the writer appended the entry (RFC 3339, UTC, milliseconds); never earlier than the entry before. */
  time: string;
  /** `hash` of the entry before, or `genesisHash(logId)` for seq 0. */
  prev: string;
  /** SHA-256 (hex) of the canonical JSON of the entry without `hash`. */
  hash: string;
}

export type AuditEntry = AuditEnvelope & LogRecord;

/** Any well-formed entry, its body unchecked: what the verifier works on. */
export interface RawAuditEntry {
  apiVersion: typeof AUDIT_API_VERSION;
  seq: number;
  time: string;
  kind: string;
  subject: string;
  body: Record<string, unknown>;
  prev: string;
  hash: string;
}

export const subjectOfLog = (logId: string): string => `log/${logId}`;

/** The `prev` of entry 0: binds the chain to its log id, so entries cannot move between logs. */
export const genesisHash = (logId: string): string =>
  sha256Hex(canonicalJson({ apiVersion: AUDIT_API_VERSION, genesis: logId }));

/** What `sealEntry` takes: any body object (typed bodies are interfaces, which are not Records). */
interface Unsealed {
  apiVersion: typeof AUDIT_API_VERSION;
  seq: number;
  time: string;
  kind: string;
  subject: string;
  body: object;
  prev: string;
}

/**
 * The canonical JSON of an entry, with or without its hash. Equal to `canonicalJson(entry)`
 * (the envelope's keys are fixed and listed here in sorted order), built so that the body,
 * the only part of any size, is serialised once for both the hash and the line check.
 */
function canonicalParts(entry: Unsealed): { head: string; tail: string } {
  return {
    head: `{"apiVersion":${JSON.stringify(entry.apiVersion)},"body":${canonicalJson(entry.body)}`,
    tail: `,"kind":${JSON.stringify(entry.kind)},"prev":${JSON.stringify(entry.prev)},"seq":${entry.seq},"subject":${JSON.stringify(entry.subject)},"time":${JSON.stringify(entry.time)}}`,
  };
}

const join = (parts: { head: string; tail: string }, hash: string): string =>
  `${parts.head},"hash":${JSON.stringify(hash)}${parts.tail}`;

/** Lines of sealed entries, so a store writes the bytes that were hashed without serialising twice. */
const sealedLines = new WeakMap<object, string>();

/** Computes the hash and returns the entry with it. */
export function sealEntry<E extends Unsealed>(entry: E): E & { hash: string } {
  const parts = canonicalParts(entry);
  const hash = sha256Hex(parts.head + parts.tail);
  const sealed = { ...entry, hash };
  sealedLines.set(sealed, join(parts, hash));
  return sealed;
}

/** The one serialisation of an entry: its canonical JSON, one line, no newline. */
export const serializeEntry = (entry: AuditEntry | RawAuditEntry): string =>
  sealedLines.get(entry) ?? canonicalJson(entry);

export type LineCheck =
  | { ok: true; entry: RawAuditEntry }
  | { ok: false; reason: AuditReasonCode; message: string; entry?: RawAuditEntry };

const ENVELOPE_KEYS = ["apiVersion", "body", "hash", "kind", "prev", "seq", "subject", "time"];
const HEX64 = /^[0-9a-f]{64}$/;
const KIND = /^[A-Z][A-Za-z0-9]{0,63}$/;
const RFC3339_MILLIS_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
const MAX_SUBJECT = 1024;

export const isPlainObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);

/** Entries of one batch share their time: the last one found valid is not checked again. */
let lastValidTime = "";

/** True for the exact time format the writer produces (Date#toISOString of a valid date). */
export function isEntryTime(value: unknown): value is string {
  if (value === lastValidTime) return true;
  if (typeof value !== "string" || !RFC3339_MILLIS_UTC.test(value)) return false;
  const ms = Date.parse(value);
  if (!Number.isFinite(ms) || new Date(ms).toISOString() !== value) return false;
  lastValidTime = value;
  return true;
}

const malformed = (message: string): LineCheck => ({
  ok: false,
  reason: AuditReason.AuditMalformedLine,
  message,
});

/**
 * Parses one line and checks what the line alone can show: the envelope's shape, that the line
 * is the entry's canonical JSON (so the bytes shown are the bytes hashed, and duplicate keys
 * cannot hide a second value), and that the hash matches. Position checks are the caller's.
 * Never throws.
 */
export function checkEntryLine(line: string): LineCheck {
  if (line.endsWith("\r")) {
    return malformed(
      "the line ends in a carriage return: the export was converted to CRLF line endings; verify the original file",
    );
  }
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return malformed("the line is not JSON");
  }
  if (!isPlainObject(value)) return malformed("the line is not a JSON object");
  const keys = Object.keys(value).sort();
  if (keys.length !== ENVELOPE_KEYS.length || keys.some((k, i) => k !== ENVELOPE_KEYS[i])) {
    return malformed(`the envelope must have exactly the fields ${ENVELOPE_KEYS.join(", ")}`);
  }
  const { apiVersion, seq, time, kind, subject, body, prev, hash } = value;
  if (apiVersion !== AUDIT_API_VERSION) {
    return malformed(
      `apiVersion ${JSON.stringify(apiVersion)} is not ${AUDIT_API_VERSION}; use a verifier that reads it`,
    );
  }
  if (typeof seq !== "number" || !Number.isSafeInteger(seq) || seq < 0)
    return malformed("seq is not a non-negative integer");
  if (!isEntryTime(time)) return malformed("time is not an RFC 3339 UTC time with milliseconds");
  if (typeof kind !== "string" || !KIND.test(kind)) return malformed("kind is not a PascalCase name");
  if (typeof subject !== "string" || subject.length === 0 || subject.length > MAX_SUBJECT)
    return malformed(`subject is not a string of 1..${MAX_SUBJECT} characters`);
  if (!isPlainObject(body)) return malformed("body is not an object");
  if (typeof prev !== "string" || !HEX64.test(prev)) return malformed("prev is not a lower-case SHA-256 hex");
  if (typeof hash !== "string" || !HEX64.test(hash)) return malformed("hash is not a lower-case SHA-256 hex");
  const entry: RawAuditEntry = { apiVersion, seq, time, kind, subject, body, prev, hash };
  const parts = canonicalParts(entry);
  if (join(parts, hash) !== line) {
    return malformed(
      "the line is not the entry's canonical JSON (key order, whitespace, escapes or a duplicate key differ)",
    );
  }
  if (sha256Hex(parts.head + parts.tail) !== hash) {
    return {
      ok: false,
      reason: AuditReason.AuditHashMismatch,
      message: `entry seq ${seq} does not hash to its recorded hash ${hash.slice(0, 12)}…: it was altered after it was written`,
      entry,
    };
  }
  return { ok: true, entry };
}
