/**
 * Signed checkpoints, after a transparency log's signed tree head: the log's key states "log L
 * had `size` entries, the last one hashing to `head`, at `time`". Whoever holds a checkpoint
 * can later prove that an export drops, alters or reorders any of those entries.
 */
import { type KeyObject, sign, verify } from "node:crypto";
import { canonicalJson } from "../verdict.ts";
import { isEntryTime, isPlainObject } from "./entry.ts";
import { keyFromField, type TrustedKey, trustedKey } from "./keys.ts";
import { AuditReason, type AuditReasonCode } from "./reasons.ts";

export const CHECKPOINT_API_VERSION = "sovereign.ai/audit-checkpoint/v1";
/** Prepended to what is signed, so a checkpoint signature is never valid as any other message of the key. */
export const CHECKPOINT_SIGNING_CONTEXT = "sovereign.ai/audit-checkpoint/v1\n";

export interface CheckpointStatement {
  logId: string;
  /** Entries 0..size-1 are covered; the checkpoint entry itself is written at seq `size`. */
  size: number;
  /** Hash of entry size-1. */
  head: string;
  time: string;
}

export interface SignedCheckpoint extends CheckpointStatement {
  apiVersion: typeof CHECKPOINT_API_VERSION;
  /** RFC 7638 thumbprint of the signing key. */
  keyId: string;
  /** `ed25519:` + base64url of the raw public key: lets an auditor see which key to ask about. */
  publicKey: string;
  /** base64url Ed25519 signature over CHECKPOINT_SIGNING_CONTEXT + canonical JSON of the statement. */
  signature: string;
}

/** Signs checkpoints. An HSM- or KMS-backed signer implements the same three members. */
export interface CheckpointSigner {
  readonly keyId: string;
  readonly publicKey: string;
  sign(message: Uint8Array): Uint8Array | Promise<Uint8Array>;
}

export function ed25519CheckpointSigner(privateKey: KeyObject): CheckpointSigner {
  const { keyId, publicKey } = trustedKey(privateKey);
  return { keyId, publicKey, sign: (message) => sign(null, message, privateKey) };
}

export const checkpointMessage = (s: CheckpointStatement): Buffer =>
  Buffer.from(
    CHECKPOINT_SIGNING_CONTEXT +
      canonicalJson({
        apiVersion: CHECKPOINT_API_VERSION,
        logId: s.logId,
        size: s.size,
        head: s.head,
        time: s.time,
      }),
    "utf8",
  );

export async function signCheckpoint(
  statement: CheckpointStatement,
  signer: CheckpointSigner,
): Promise<SignedCheckpoint> {
  const signature = Buffer.from(await signer.sign(checkpointMessage(statement))).toString("base64url");
  return {
    apiVersion: CHECKPOINT_API_VERSION,
    logId: statement.logId,
    size: statement.size,
    head: statement.head,
    time: statement.time,
    keyId: signer.keyId,
    publicKey: signer.publicKey,
    signature,
  };
}

export type CheckpointCheck =
  | { ok: true; checkpoint: SignedCheckpoint; key: TrustedKey }
  | { ok: false; reason: AuditReasonCode; message: string };

const CHECKPOINT_KEYS = ["apiVersion", "head", "keyId", "logId", "publicKey", "signature", "size", "time"];

/**
 * Checks a checkpoint on its own: its shape, that its key is trusted, and its signature (always
 * with the trusted key, never the one the checkpoint carries). Where it stands in a log is the
 * caller's to check. Never throws.
 */
export function checkCheckpoint(value: unknown, trustedKeys: readonly TrustedKey[]): CheckpointCheck {
  const invalid = (message: string): CheckpointCheck => ({
    ok: false,
    reason: AuditReason.AuditCheckpointInvalid,
    message,
  });
  if (!isPlainObject(value)) return invalid("the checkpoint is not an object");
  const keys = Object.keys(value).sort();
  if (keys.length !== CHECKPOINT_KEYS.length || keys.some((k, i) => k !== CHECKPOINT_KEYS[i])) {
    return invalid(`a checkpoint has exactly the fields ${CHECKPOINT_KEYS.join(", ")}`);
  }
  const { apiVersion, logId, size, head, time, keyId, publicKey, signature } = value;
  if (apiVersion !== CHECKPOINT_API_VERSION) return invalid(`apiVersion is not ${CHECKPOINT_API_VERSION}`);
  if (typeof logId !== "string" || logId.length === 0) return invalid("logId is not a non-empty string");
  if (typeof size !== "number" || !Number.isSafeInteger(size) || size < 1)
    return invalid("size is not a positive integer");
  if (typeof head !== "string" || !/^[0-9a-f]{64}$/.test(head)) return invalid("head is not a SHA-256 hex");
  if (!isEntryTime(time)) return invalid("time is not an RFC 3339 UTC time with milliseconds");
  if (typeof keyId !== "string" || typeof publicKey !== "string" || typeof signature !== "string")
    return invalid("keyId, publicKey and signature must be strings");
  const key = trustedKeys.find((k) => k.keyId === keyId);
  if (key === undefined || key.publicKey !== publicKey) {
    const named = keyFromField(publicKey) === undefined ? "an unreadable key" : publicKey;
    return {
      ok: false,
      reason: AuditReason.AuditCheckpointUnknownKey,
      message: `checkpoint of ${size} entries is signed by key ${keyId} (${named}), which is not among the ${trustedKeys.length} trusted key(s); ask the log's operator for that key's public half through a channel you trust, or treat the log as unsigned`,
    };
  }
  const checkpoint: SignedCheckpoint = { apiVersion, logId, size, head, time, keyId, publicKey, signature };
  if (!verifiesWith(key.key, checkpointMessage(checkpoint), signature)) {
    return invalid(
      `the signature of the checkpoint of ${size} entries does not verify with trusted key ${keyId}: the checkpoint was altered or forged`,
    );
  }
  return { ok: true, checkpoint, key };
}

function verifiesWith(key: KeyObject, message: Buffer, signature: string): boolean {
  const bytes = Buffer.from(signature, "base64url");
  // Only the one encoding of the 64 bytes: spare bits set in the last character would give the
  // same signature two spellings.
  if (bytes.length !== 64 || bytes.toString("base64url") !== signature) return false;
  try {
    return verify(null, message, key, bytes);
  } catch {
    return false;
  }
}
