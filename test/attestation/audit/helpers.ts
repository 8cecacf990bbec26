// Builders for audit tests: fixed keys, a fake clock, records of every kind, and whole logs.
import { createPrivateKey, type KeyObject } from "node:crypto";
import {
  AuditLog,
  type AuditLogOptions,
  type AuditRecord,
  attestationVerdictRecord,
  deltaAcceptedRecord,
  deltaRefusedRecord,
  ed25519CheckpointSigner,
  exportAuditLog,
  MemoryAuditStore,
  nodeQuarantinedRecord,
  podAdmittedRecord,
  roundClosedRecord,
  type TrustedKey,
  trustedKey,
} from "../../../attestation/audit/mod.ts";
import type { Verdict } from "../../../attestation/mod.ts";

/** An Ed25519 key from a one-byte seed pattern, so every run signs with the same keys. */
export function seededKey(seed: number): KeyObject {
  const pkcs8 = Buffer.concat([
    Buffer.from("302e020100300506032b657004220420", "hex"),
    Buffer.alloc(32, seed),
  ]);
  return createPrivateKey({ key: pkcs8, format: "der", type: "pkcs8" });
}

export const logKey = seededKey(1);
export const otherKey = seededKey(2);
export const trusted: TrustedKey[] = [trustedKey(logKey)];

export function fakeClock(start = "2026-03-01T10:00:00.000Z"): {
  now: () => Date;
  advance: (ms: number) => void;
} {
  let ms = Date.parse(start);
  return { now: () => new Date(ms), advance: (by) => (ms += by) };
}

export function verdict(i: number, passed = i % 4 !== 3): Verdict {
  const hex = (n: number) => n.toString(16).padStart(2, "0").repeat(32);
  return {
    apiVersion: "sovereign.ai/attestation-verdict/v1",
    passed,
    mode: "Local",
    evaluatedAt: "2026-03-01T09:59:00Z",
    evidenceCollectedAt: "2026-03-01T09:58:00Z",
    nonce: hex(i),
    evidenceDigest: `sha256:${hex(i + 1)}`,
    policyDigest: `sha256:${hex(200)}`,
    reasons: passed ? [] : ["MeasurementMismatch"],
    devices: [
      {
        deviceId: `GPU-${i}`,
        kind: "gpu",
        architecture: "HOPPER",
        driverVersion: "550.90.07",
        passed,
        failures: passed
          ? []
          : [{ reason: "MeasurementMismatch", message: "index 9 differs", subject: "measurement[9]" }],
      },
    ],
  };
}

/** The i-th record of a log that cycles through every kind callers append. */
export function record(i: number): AuditRecord {
  const region = ["region-a", "region-b", "region-c"][i % 3] as string;
  const node = `gpu-node-${i % 5}`;
  switch (i % 6) {
    case 0:
      return attestationVerdictRecord({
        region,
        node,
        policy: { name: "strict", generation: 3 },
        verdict: verdict(i),
      });
    case 1:
      return podAdmittedRecord({
        region,
        node,
        pod: { namespace: "training", name: `learner-${i}`, uid: `uid-${i}` },
        verdictDigest: `sha256:${"ab".repeat(32)}`,
        nonce: "cd".repeat(32),
      });
    case 2:
      return nodeQuarantinedRecord({ region, node, reasons: ["CertRevoked"], message: "OCSP says revoked" });
    case 3:
      return deltaAcceptedRecord({
        run: "run-1",
        round: i,
        region,
        learner: `learner-${i}`,
        manifestDigest: `sha256:${"ef".repeat(32)}`,
        learnerKey: `ed25519:${"A".repeat(43)}`,
      });
    case 4:
      return deltaRefusedRecord({
        run: "run-1",
        round: i,
        region,
        learner: `learner-${i}`,
        reason: "ManifestSignatureInvalid",
        message: "signature does not verify",
      });
    default:
      return roundClosedRecord({
        run: "run-1",
        round: i,
        outcome: i % 4 === 1 ? "QuorumMet" : "QuorumMissed",
        quorum: { required: 2 },
        contributed: i % 4 === 1 ? ["region-a", "region-b"] : ["region-a"],
        missing: i % 4 === 1 ? ["region-c"] : ["region-b", "region-c"],
        modelDigest: i % 4 === 1 ? `sha256:${"12".repeat(32)}` : undefined,
      });
  }
}

export function logOptions(clock = fakeClock(), overrides: Partial<AuditLogOptions> = {}): AuditLogOptions {
  return {
    logId: "hub-eu",
    signer: ed25519CheckpointSigner(logKey),
    clock: clock.now,
    checkpointEveryEntries: 5,
    checkpointEverySeconds: 3600,
    ...overrides,
  };
}

export async function collectLines(store: MemoryAuditStore): Promise<string[]> {
  const lines: string[] = [];
  for await (const line of exportAuditLog(store)) lines.push(line.slice(0, -1));
  return lines;
}

/** A log of `records` records appended one by one, a second apart, as export lines. */
export async function buildLog(
  records: number,
  overrides: Partial<AuditLogOptions> = {},
): Promise<{ lines: string[]; log: AuditLog; store: MemoryAuditStore }> {
  const clock = fakeClock();
  const store = new MemoryAuditStore();
  const log = await AuditLog.open(store, logOptions(clock, overrides));
  for (let i = 0; i < records; i++) {
    clock.advance(1000);
    await log.append(record(i));
  }
  return { lines: await collectLines(store), log, store };
}

export const verifyAt = new Date("2026-03-02T00:00:00.000Z");
