/**
 * Policy evaluation: an ordered chain of pure rules (after cert-manager's certificate policies),
 * each turning facts + AttestationPolicy spec + evaluation time into findings. Unlike
 * cert-manager's "first violation wins", every rule runs and every failure is listed, because an
 * operator fixing a node needs all of them and an auditor must see all of them.
 */
import type { AttestationPolicySpec } from "../crds/types.generated.ts";
import type { DeviceFacts, EvidenceFacts, OcspTarget } from "./facts.ts";
import type { OcspAnswer } from "./ocsp.ts";
import { Reason } from "./reasons.ts";
import {
  canonicalJson,
  type DeviceVerdict,
  type Finding,
  sha256Hex,
  VERDICT_API_VERSION,
  type Verdict,
} from "./verdict.ts";

export interface EvaluationContext {
  /** The time the evidence is judged as of: now for admission, a past instant for audits. */
  at: Date;
  /** Tolerated clock difference between hub and verifier. Default 5 minutes. */
  clockSkewSeconds?: number;
}

type Rule = (
  device: DeviceFacts,
  facts: EvidenceFacts,
  policy: AttestationPolicySpec,
  ctx: Required<EvaluationContext>,
) => Finding[];

const HOUR_MS = 3_600_000;
const PROTECTED_PCIE_ON = 0xaa;

const iso = (d: Date) => d.toISOString();

/** Verification failures that no policy can excuse. */
const evidenceIsAuthentic: Rule = (device) => device.failures;

const evidenceIsFresh: Rule = (device, facts, policy, { at, clockSkewSeconds }) => {
  const collected = Date.parse(facts.collectedAt);
  if (Number.isNaN(collected)) {
    return [
      {
        reason: Reason.EvidenceStale,
        subject: device.deviceId,
        message: `collectedAt "${facts.collectedAt}" is not a time`,
      },
    ];
  }
  const ageSeconds = (at.getTime() - collected) / 1000;
  if (ageSeconds < -clockSkewSeconds) {
    return [
      {
        reason: Reason.EvidenceStale,
        subject: device.deviceId,
        message: `evidence collected at ${facts.collectedAt} is in the future of ${iso(at)}; check the clocks`,
      },
    ];
  }
  if (ageSeconds > policy.maxEvidenceAgeSeconds) {
    return [
      {
        reason: Reason.EvidenceStale,
        subject: device.deviceId,
        message: `evidence is ${Math.round(ageSeconds)} s old, policy allows ${policy.maxEvidenceAgeSeconds} s; re-attest the node`,
      },
    ];
  }
  return [];
};

const architectureAllowed: Rule = (device, _facts, policy) => {
  // NVSwitches are part of a protected-PCIe system, not training GPUs: gpuArchitectures does not list them.
  if (device.kind === "switch") return [];
  return (policy.gpuArchitectures as string[]).includes(device.architecture)
    ? []
    : [
        {
          reason: Reason.ArchitectureNotAllowed,
          subject: device.deviceId,
          message: `architecture ${device.architecture} is not in gpuArchitectures [${policy.gpuArchitectures.join(", ")}]`,
        },
      ];
};

const ccModeMatches: Rule = (device, _facts, policy) => {
  if (device.kind === "switch") return [];
  const problems: string[] = [];
  const ppcie = device.protectedPcieStatus === PROTECTED_PCIE_ON || device.declaredCcMode === "ppcie";
  const debug =
    device.declaredCcMode === "devtools" ||
    (device.debugStatus !== undefined && device.debugStatus !== "disabled");
  if (device.source === "Local" && (device.declaredCcMode === undefined || device.declaredCcMode === "off")) {
    problems.push(
      `the node reports confidential computing ${device.declaredCcMode ?? "unknown"}; enable CC mode on the GPU`,
    );
  }
  if (debug && policy.ccMode !== "DevTools")
    problems.push(`the GPU runs CC in DevTools (debug) mode, policy requires ${policy.ccMode}`);
  if (policy.ccMode === "ProtectedPCIe" && !ppcie)
    problems.push("policy requires ProtectedPCIe but the GPU does not report it");
  if (policy.ccMode === "On" && ppcie)
    problems.push("the GPU runs protected PCIe (multi-GPU CC), policy requires single-GPU CC On");
  return problems.map((message) => ({ reason: Reason.CcModeOff, subject: device.deviceId, message }));
};

const driverAllowed: Rule = (device, _facts, policy) => {
  const allowed = policy.allowedDriverVersions ?? [];
  if (allowed.length === 0 || device.kind === "switch") return [];
  return device.driverVersion !== undefined && allowed.includes(device.driverVersion)
    ? []
    : [
        {
          reason: Reason.DriverNotAllowed,
          subject: device.deviceId,
          message: `driver ${device.driverVersion ?? "(none reported)"} is not in allowedDriverVersions [${allowed.join(", ")}]`,
        },
      ];
};

const vbiosAllowed: Rule = (device, _facts, policy) => {
  const allowed = (policy.allowedVbiosVersions ?? []).map((v) => v.toUpperCase());
  if (allowed.length === 0 || device.kind === "switch") return [];
  return device.vbiosVersion !== undefined && allowed.includes(device.vbiosVersion.toUpperCase())
    ? []
    : [
        {
          reason: Reason.VbiosNotAllowed,
          subject: device.deviceId,
          message: `VBIOS ${device.vbiosVersion ?? "(none reported)"} is not in allowedVbiosVersions [${allowed.join(", ")}]`,
        },
      ];
};

const rimsAllowed: Rule = (device, _facts, policy) => {
  const allowed = policy.allowedRimIds ?? [];
  if (allowed.length === 0) return [];
  return device.rimIds
    .filter((id) => !allowed.includes(id))
    .map((id) => ({
      reason: Reason.RimNotAllowed,
      subject: `rim:${id}`,
      message: `RIM ${id} is not in allowedRimIds`,
    }));
};

const certificatesCurrent: Rule = (device, _facts, _policy, { at }) => {
  const out: Finding[] = [];
  const check = (
    certs: DeviceFacts["deviceCerts"],
    subject: (p: number) => string,
    reason: Finding["reason"],
  ) => {
    for (const cert of certs) {
      if (at < new Date(cert.notBefore) || at > new Date(cert.notAfter)) {
        out.push({
          reason,
          subject: subject(cert.position),
          message: `"${cert.subject}" is valid ${cert.notBefore}..${cert.notAfter}, not at ${iso(at)}`,
        });
      }
    }
  };
  check(device.deviceCerts, (p) => `device-chain[${p}]`, Reason.CertExpired);
  for (const { rim, certs } of device.rimCerts) check(certs, (p) => `rim:${rim}[${p}]`, Reason.RimExpired);
  return out;
};

const measurementsMatch: Rule = (device, _facts, policy) => {
  const m = device.measurements;
  if (m === undefined) return [];
  const ignored = new Set(policy.requireAllMeasurementsMatch ? [] : (policy.ignoredMeasurementIndices ?? []));
  const out: Finding[] = m.conflicts.map((index) => ({
    reason: Reason.RimMalformed,
    subject: `measurement[${index}]`,
    message: `index ${index} is active in both the driver and the VBIOS RIM`,
  }));
  for (const o of m.outcomes) {
    if (o.status === "match" || ignored.has(o.index)) continue;
    out.push({
      reason: Reason.MeasurementMismatch,
      subject: `measurement[${o.index}]`,
      message:
        o.status === "missing"
          ? `RIM ${o.rim} expects index ${o.index} but the report has no block ${o.index + 1}`
          : `index ${o.index} is ${o.runtime.slice(0, 16)}…, RIM ${o.rim} allows ${o.expected.map((e) => `${e.slice(0, 16)}…`).join(" or ")}`,
    });
  }
  return out;
};

/** The freshest usable OCSP answer, and whether an older 'good' still covers `at` under the grace. */
function judgeOcsp(target: OcspTarget, policy: AttestationPolicySpec, at: Date, skewMs: number): Finding[] {
  const subject = target.subject;
  const invalid = target.matches.flatMap((m) => (m.kind === "invalid" ? [m.problem] : []));
  const answers = target.matches.flatMap((m) => (m.kind === "answer" ? [m.answer] : []));
  const responderValid = (a: OcspAnswer) =>
    at >= new Date(a.responderNotBefore) && at <= new Date(a.responderNotAfter);
  const usable = answers.filter(responderValid);
  const revoked = usable.find((a) => a.status === "revoked" && new Date(a.revokedAt ?? a.thisUpdate) <= at);
  if (revoked) {
    return [
      {
        reason: Reason.CertRevoked,
        subject,
        message: `"${target.commonName}" (serial ${target.serial}) is revoked since ${revoked.revokedAt} (${revoked.revocationReason ?? "no reason given"})`,
      },
    ];
  }
  const current = usable
    .filter(
      (a) =>
        new Date(a.thisUpdate).getTime() <= at.getTime() + skewMs &&
        (a.nextUpdate === undefined || at <= new Date(a.nextUpdate)),
    )
    .sort((a, b) => b.thisUpdate.localeCompare(a.thisUpdate))[0];
  const graceMs = policy.ocsp.policy === "AllowUnknown" ? (policy.ocsp.unknownGraceHours ?? 0) * HOUR_MS : -1;
  const lastGood = usable
    .filter((a) => a.status === "good" && new Date(a.thisUpdate) <= at)
    .sort((a, b) => b.thisUpdate.localeCompare(a.thisUpdate))[0];
  const withinGrace =
    lastGood !== undefined && at.getTime() - new Date(lastGood.thisUpdate).getTime() <= graceMs;
  if (current?.status === "good") {
    return policy.ocsp.requireNonce && !current.nonceEchoed
      ? [
          {
            reason: Reason.OcspNonceMismatch,
            subject,
            message: `the OCSP answer for "${target.commonName}" does not echo our request nonce; fetch a fresh answer with a nonce or set ocsp.requireNonce: false for cached answers`,
          },
        ]
      : [];
  }
  if (withinGrace) return [];
  if (current?.status === "unknown") {
    return [
      {
        reason: Reason.OcspUnknown,
        subject,
        message: `OCSP does not know "${target.commonName}" (serial ${target.serial})`,
      },
    ];
  }
  if (answers.length > 0) {
    const a = answers[0] as OcspAnswer;
    const why = !responderValid(a)
      ? `its responder "${a.responder}" is valid ${a.responderNotBefore}..${a.responderNotAfter}`
      : `it is valid ${a.thisUpdate}..${a.nextUpdate ?? "(no nextUpdate)"}`;
    return [
      {
        reason: Reason.OcspStale,
        subject,
        message: `no OCSP answer for "${target.commonName}" is current at ${iso(at)}: ${why}; fetch a fresh one`,
      },
    ];
  }
  return [
    {
      reason: Reason.OcspUnavailable,
      subject,
      message: `no valid OCSP answer for "${target.commonName}" (serial ${target.serial})${invalid.length ? `: ${invalid.join("; ")}` : ""}; supply the responder's answer`,
    },
  ];
}

const revocationChecked: Rule = (device, _facts, policy, { at, clockSkewSeconds }) =>
  device.ocspTargets.flatMap((target) => judgeOcsp(target, policy, at, clockSkewSeconds * 1000));

const tokenCurrent: Rule = (device, facts, policy, { at }) => {
  const token = facts.token;
  if (token === undefined || device !== facts.devices[0]) return [];
  const out: Finding[] = [];
  const issuers = policy.verification.nras?.acceptedIssuers ?? [];
  if (!issuers.includes(token.issuer)) {
    out.push({
      reason: Reason.TokenIssuerNotAccepted,
      subject: "token",
      message: `issuer ${token.issuer} is not in acceptedIssuers [${issuers.join(", ")}]`,
    });
  }
  if (
    (token.notBefore && at < new Date(token.notBefore)) ||
    (token.expires && at > new Date(token.expires))
  ) {
    out.push({
      reason: Reason.TokenExpired,
      subject: "token",
      message: `token is valid ${token.notBefore}..${token.expires}, not at ${iso(at)}; request a new one`,
    });
  }
  return out;
};

/** Order matters only for presentation: authenticity first, then freshness, identity, content, revocation. */
export const RULES: readonly { name: string; rule: Rule }[] = [
  { name: "EvidenceIsAuthentic", rule: evidenceIsAuthentic },
  { name: "TokenCurrent", rule: tokenCurrent },
  { name: "EvidenceIsFresh", rule: evidenceIsFresh },
  { name: "ArchitectureAllowed", rule: architectureAllowed },
  { name: "CcModeMatches", rule: ccModeMatches },
  { name: "DriverAllowed", rule: driverAllowed },
  { name: "VbiosAllowed", rule: vbiosAllowed },
  { name: "RimsAllowed", rule: rimsAllowed },
  { name: "CertificatesCurrent", rule: certificatesCurrent },
  { name: "MeasurementsMatch", rule: measurementsMatch },
  { name: "RevocationChecked", rule: revocationChecked },
];

export function evaluatePolicy(
  facts: EvidenceFacts,
  policy: AttestationPolicySpec,
  context: EvaluationContext,
): Verdict {
  const ctx = { clockSkewSeconds: 300, ...context };
  const devices: DeviceVerdict[] = facts.devices.map((device) => {
    const failures = RULES.flatMap(({ rule }) => rule(device, facts, policy, ctx));
    return {
      deviceId: device.deviceId,
      kind: device.kind,
      architecture: device.architecture,
      ...(device.driverVersion ? { driverVersion: device.driverVersion } : {}),
      ...(device.vbiosVersion ? { vbiosVersion: device.vbiosVersion } : {}),
      passed: failures.length === 0,
      failures,
    };
  });
  const reasons = [...new Set(devices.flatMap((d) => d.failures.map((f) => f.reason)))].sort();
  return {
    apiVersion: VERDICT_API_VERSION,
    // No device means nothing was attested: that never passes.
    passed: devices.length > 0 && devices.every((d) => d.passed),
    mode: facts.mode,
    evaluatedAt: iso(ctx.at),
    evidenceCollectedAt: facts.collectedAt,
    nonce: facts.expectedNonce,
    evidenceDigest: facts.evidenceDigest,
    policyDigest: sha256Hex(canonicalJson(policy)),
    reasons,
    devices,
  };
}
