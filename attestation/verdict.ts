/**
 * The verdict: what a verifier concluded, in a shape an audit log can store as is (stable JSON
 * with sorted keys, reason codes, digests of the evidence and policy it was judged against).
 */
import { createHash } from "node:crypto";
import type { ReasonCode } from "./reasons.ts";

export const VERDICT_API_VERSION = "sovereign.ai/attestation-verdict/v1";

export interface Finding {
  reason: ReasonCode;
  /** What failed and what to do about it. */
  message: string;
  /** What the finding is about: a device id, "device-chain[2]", "rim:NV_GPU_DRIVER_GH100_550.90.07", "measurement[23]". */
  subject: string;
}

export interface DeviceVerdict {
  deviceId: string;
  kind: "gpu" | "switch";
  architecture: string;
  driverVersion?: string;
  vbiosVersion?: string;
  passed: boolean;
  failures: Finding[];
}

export interface Verdict {
  apiVersion: typeof VERDICT_API_VERSION;
  passed: boolean;
  mode: "Local" | "NRAS";
  /** The time the evidence was judged as of (RFC 3339). */
  evaluatedAt: string;
  /** When the challenge was issued, from which evidence age is measured. */
  evidenceCollectedAt: string;
  /** The nonce we asked the devices to sign, hex. */
  nonce: string;
  /** sha256 over the raw evidence inputs, so an auditor can match the verdict to stored evidence. */
  evidenceDigest: string;
  /** sha256 of the canonical JSON of the AttestationPolicy spec applied. */
  policyDigest: string;
  /** Sorted, de-duplicated reason codes of all failures (empty when passed). */
  reasons: ReasonCode[];
  devices: DeviceVerdict[];
}

/** JSON with object keys sorted at every level: the same verdict always serialises to the same bytes. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(sortKeys(value));
}

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(
      Object.entries(value as Record<string, unknown>)
        .filter(([, v]) => v !== undefined)
        .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
        .map(([k, v]) => [k, sortKeys(v)]),
    );
  }
  return value;
}

export const sha256Hex = (data: string | Uint8Array): string =>
  createHash("sha256").update(data).digest("hex");

/** Digest of the verdict's canonical form: what an audit entry or a checkpoint signs. */
export const verdictDigest = (verdict: Verdict): string => sha256Hex(canonicalJson(verdict));
