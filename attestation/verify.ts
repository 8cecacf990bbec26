/**
 * Local verification: turns raw evidence (report, device chain, RIMs, OCSP answers) into facts.
 * Policy-independent and clock-free: validity windows are recorded and judged by policy.ts.
 */
import { createHash, verify as verifySignature, type X509Certificate } from "node:crypto";
import { equalBytes, fromHex, toHex } from "./bytes.ts";
import {
  type ChainCheck,
  commonName,
  extractFwid,
  parseCertificate,
  parsePemChain,
  verifyChain,
} from "./certchain.ts";
import { isAttestationError } from "./errors.ts";
import type { DeclaredCcMode, DeviceFacts, EvidenceFacts, OcspTarget } from "./facts.ts";
import { answerFor, type OcspMatch, type ParsedOcspResponse, parseOcspResponse } from "./ocsp.ts";
import { Reason, type ReasonCode } from "./reasons.ts";
import {
  checkRimSignature,
  compareMeasurements,
  expectedRimIds,
  type ParsedRim,
  parseRim,
  type RimDocument,
} from "./rim.ts";
import { type AttestationReport, parseAttestationReport, parseReportText } from "./spdm.ts";
import type { Finding } from "./verdict.ts";

const DEVICE_CHAIN_LENGTH = 5;

/** Trust anchors are configuration (see docs/attestation.md): PEM text of NVIDIA's two roots. */
export interface TrustAnchors {
  deviceRootPem: string;
  rimRootPem: string;
}

export interface LocalDeviceEvidence {
  /** request ‖ response, raw bytes or hex text. */
  report: Uint8Array | string;
  /** PEM certificates, leaf first. */
  certificateChain: string;
  /** Candidate RIMs (a mirror, or the RIM service's answers); the matching ones are selected. */
  rims: RimDocument[];
  /** OCSP responses (DER, or base64 text) for any certificate of the device or RIM chains. */
  ocspResponses?: (Uint8Array | string)[];
  /** The nonce our OCSP requests carried, if any. */
  ocspRequestNonce?: Uint8Array;
  declaredCcMode?: DeclaredCcMode;
}

export interface LocalVerificationInput {
  devices: LocalDeviceEvidence[];
  /** The nonce we sent in the challenge (hex or bytes); see nonce.ts for how it is derived. */
  expectedNonce: string | Uint8Array;
  /** When the challenge was issued (RFC 3339); evidence age is measured from it. */
  collectedAt: string;
  anchors: TrustAnchors;
}

const finding = (reason: ReasonCode, subject: string, message: string): Finding => ({
  reason,
  subject,
  message,
});

/** The chip and its architecture from a device certificate's common name ("GH100 A01 GSP FMC LF"). */
export function architectureOf(leaf: X509Certificate): {
  architecture: string;
  kind: "gpu" | "switch";
  chip: string;
} {
  const cn = commonName(leaf);
  const chip = cn.split(" ")[0] ?? "";
  if (/^GH1\d\d$/.test(chip)) return { architecture: "Hopper", kind: "gpu", chip };
  if (/^GB\d{3}$/.test(chip)) return { architecture: "Blackwell", kind: "gpu", chip };
  if (chip === "LS_10") return { architecture: "LS10", kind: "switch", chip: "LS10" };
  return { architecture: "unknown", kind: "gpu", chip };
}

/** The device signs SHA-384(request ‖ response-without-signature) with its P-384 attestation key, r‖s encoded. */
export function verifyReportSignature(report: AttestationReport, leaf: X509Certificate): boolean {
  try {
    return verifySignature(
      "sha384",
      report.signedBytes,
      { key: leaf.publicKey, dsaEncoding: "ieee-p1363" },
      report.signature,
    );
  } catch {
    return false;
  }
}

export function evidenceDigest(input: LocalVerificationInput): string {
  const h = createHash("sha256");
  const part = (data: Uint8Array | string) => {
    const bytes = typeof data === "string" ? Buffer.from(data) : data;
    h.update(`${bytes.length}:`).update(bytes);
  };
  for (const device of input.devices) {
    part(device.report);
    part(device.certificateChain);
    for (const rim of device.rims) part(rim.xml);
    for (const ocsp of device.ocspResponses ?? []) part(ocsp);
  }
  return h.digest("hex");
}

/** A certificate OCSP is asked about, with the issuer its CertID is built from. */
export interface RevocationTarget {
  subject: string;
  cert: X509Certificate;
  issuer: X509Certificate;
}

/**
 * Which certificates need an OCSP answer, given the verified paths (presented certificates, then
 * the pinned root) of the device chain and of each selected RIM's signing chain. The one rule for
 * the verifier and for whoever fetches answers on its behalf (operator/member/local-references.ts).
 */
export function revocationTargets(
  devicePath: readonly X509Certificate[],
  rimPaths: readonly { label: string; path: readonly X509Certificate[] }[],
): RevocationTarget[] {
  const targets: RevocationTarget[] = [];
  // The leaf is a per-boot attestation key NVIDIA's responders do not serve; its issuer (the
  // per-device BROM identity) and every CA above are checked. Roots are pinned, not revocable.
  for (let i = 1; i < devicePath.length - 1; i++) {
    targets.push({
      subject: `device-chain[${i}]`,
      cert: devicePath[i] as X509Certificate,
      issuer: devicePath[i + 1] as X509Certificate,
    });
  }
  const seen = new Set<string>();
  for (const { label, path } of rimPaths) {
    for (let i = 0; i < path.length - 1; i++) {
      const cert = path[i] as X509Certificate;
      if (seen.has(cert.fingerprint256)) continue;
      seen.add(cert.fingerprint256);
      targets.push({ subject: `rim:${label}[${i}]`, cert, issuer: path[i + 1] as X509Certificate });
    }
  }
  return targets;
}

/**
 * The RIM the verifier uses for a report's driver or VBIOS: the one supplied under that id, else
 * (a plain file, no id) one declaring the version for this chip.
 */
export function selectRim(
  parsed: readonly (ParsedRim | undefined)[],
  role: { id: string; version: string },
  chip: string,
): ParsedRim | undefined {
  return (
    parsed.find((rim) => rim?.id === role.id) ??
    parsed.find(
      (r) =>
        r?.id === undefined && r?.version.toUpperCase() === role.version.toUpperCase() && r?.name === chip,
    )
  );
}

/** The RIMs a report needs: its driver and VBIOS ids with the versions the report states. */
export function rimRoles(report: AttestationReport, chip: string): { id: string; version: string }[] {
  const wanted = expectedRimIds(report, chip);
  const { driverVersion, vbiosVersion } = report.response.opaque;
  const roles: { id: string; version: string }[] = [];
  if (wanted.driver && driverVersion) roles.push({ id: wanted.driver, version: driverVersion });
  if (wanted.vbios && vbiosVersion) roles.push({ id: wanted.vbios, version: vbiosVersion });
  return roles;
}

export async function verifyLocalEvidence(input: LocalVerificationInput): Promise<EvidenceFacts> {
  const expectedNonce =
    typeof input.expectedNonce === "string"
      ? fromHex(input.expectedNonce, "expected nonce")
      : input.expectedNonce;
  const deviceRoot = parseCertificate(input.anchors.deviceRootPem, "pinned device root");
  const rimRoot = parseCertificate(input.anchors.rimRootPem, "pinned RIM root");
  const devices: DeviceFacts[] = [];
  for (const [i, device] of input.devices.entries()) {
    devices.push(await verifyDevice(device, i, expectedNonce, deviceRoot, rimRoot));
  }
  return {
    mode: "Local",
    expectedNonce: toHex(expectedNonce),
    collectedAt: input.collectedAt,
    evidenceDigest: evidenceDigest(input),
    devices,
  };
}

async function verifyDevice(
  evidence: LocalDeviceEvidence,
  position: number,
  expectedNonce: Uint8Array,
  deviceRoot: X509Certificate,
  rimRoot: X509Certificate,
): Promise<DeviceFacts> {
  const facts: DeviceFacts = {
    source: "Local",
    deviceId: `device-${position}`,
    kind: "gpu",
    architecture: "unknown",
    ...(evidence.declaredCcMode ? { declaredCcMode: evidence.declaredCcMode } : {}),
    deviceCerts: [],
    rimCerts: [],
    rimIds: [],
    ocspTargets: [],
    failures: [],
  };
  const fail = (reason: ReasonCode, subject: string, message: string) =>
    facts.failures.push(finding(reason, subject, message));

  let report: AttestationReport;
  try {
    report =
      typeof evidence.report === "string"
        ? parseReportText(evidence.report)
        : parseAttestationReport(evidence.report);
  } catch (e) {
    fail(Reason.EvidenceMalformed, facts.deviceId, `${(e as Error).message}; re-collect the evidence`);
    return facts;
  }
  const opaque = report.response.opaque;
  if (opaque.driverVersion !== undefined) facts.driverVersion = opaque.driverVersion;
  if (opaque.vbiosVersion !== undefined) facts.vbiosVersion = opaque.vbiosVersion;
  if (opaque.protectedPcieStatus !== undefined) facts.protectedPcieStatus = opaque.protectedPcieStatus;
  if (!equalBytes(report.request.nonce, expectedNonce)) {
    fail(
      Reason.NonceMismatch,
      facts.deviceId,
      `report answers nonce ${toHex(report.request.nonce)}, we asked for ${toHex(expectedNonce)}; the evidence is replayed or for another challenge: challenge the node again`,
    );
  }

  let presented: X509Certificate[];
  try {
    presented = parsePemChain(evidence.certificateChain, "device certificate chain");
  } catch (e) {
    fail(Reason.CertChainInvalid, facts.deviceId, (e as Error).message);
    return facts;
  }
  const leaf = presented[0] as X509Certificate;
  const { architecture, kind, chip } = architectureOf(leaf);
  facts.architecture = architecture;
  facts.kind = kind;
  facts.deviceId = `${facts.architecture}-${leaf.serialNumber.toUpperCase()}`;
  const chain = verifyChain(presented, deviceRoot, {
    label: "device-chain",
    exactLength: DEVICE_CHAIN_LENGTH,
    ignorePresentedRoot: false,
  });
  facts.deviceCerts = chain.certs;
  for (const problem of chain.problems) {
    fail(
      Reason.CertChainInvalid,
      "device-chain",
      `${problem}; the GPU's identity cannot be traced to NVIDIA's root`,
    );
  }

  if (!verifyReportSignature(report, leaf)) {
    fail(
      Reason.SignatureInvalid,
      facts.deviceId,
      `report signature does not verify with the key of "${commonName(leaf)}" (serial ${leaf.serialNumber}); the report was altered or paired with another device's chain`,
    );
  }
  if (opaque.fwid !== undefined) {
    const certFwid = extractFwid(leaf);
    if (certFwid === undefined || !equalBytes(certFwid, opaque.fwid)) {
      fail(
        Reason.FwidMismatch,
        facts.deviceId,
        certFwid === undefined
          ? "the report carries a FWID but the leaf certificate has no FWID extension; the chain does not start at the attestation key"
          : "the report's FWID differs from the leaf certificate's; the report and chain come from different firmware",
      );
    }
  }

  const selected = await selectAndVerifyRims(evidence.rims, report, chip, rimRoot, facts, fail);
  if (selected.length > 0)
    facts.measurements = compareMeasurements(
      report,
      selected.map(({ label, rim }) => ({ label, rim })),
    );

  const responses: ParsedOcspResponse[] = [];
  for (const [i, raw] of (evidence.ocspResponses ?? []).entries()) {
    try {
      responses.push(parseOcspResponse(raw));
    } catch (e) {
      fail(
        Reason.EvidenceMalformed,
        `ocsp[${i}]`,
        `${(e as Error).message}; supply the responder's DER answer`,
      );
    }
  }
  const targets = revocationTargets(
    chain.path,
    selected.map(({ label, chain: rimChain }) => ({ label, path: rimChain.path })),
  );
  facts.ocspTargets = targets.map(({ subject, cert, issuer }): OcspTarget => {
    const matches = responses
      .map((r) => answerFor(r, cert, issuer, evidence.ocspRequestNonce))
      .filter((m): m is OcspMatch => m !== undefined);
    return { subject, commonName: commonName(cert), serial: cert.serialNumber.toUpperCase(), matches };
  });
  return facts;
}

async function selectAndVerifyRims(
  documents: RimDocument[],
  report: AttestationReport,
  chip: string,
  rimRoot: X509Certificate,
  facts: DeviceFacts,
  fail: (reason: ReasonCode, subject: string, message: string) => void,
): Promise<{ label: string; rim: ParsedRim; chain: ChainCheck }[]> {
  const roles = rimRoles(report, chip);
  const parsed: (ParsedRim | undefined)[] = documents.map((doc) => {
    try {
      return parseRim(doc);
    } catch (e) {
      if (doc.id === undefined || roles.some((r) => r.id === doc.id)) {
        fail(
          isAttestationError(e) ? e.reason : Reason.RimMalformed,
          `rim:${doc.id ?? "(unnamed)"}`,
          (e as Error).message,
        );
      }
      return undefined;
    }
  });
  const out: { label: string; rim: ParsedRim; chain: ChainCheck }[] = [];
  for (const role of roles) {
    const rim = selectRim(parsed, role, chip);
    const subject = `rim:${role.id}`;
    if (rim === undefined) {
      fail(
        Reason.RimNotFound,
        subject,
        `no RIM ${role.id} (version ${role.version}) was supplied; add it to the RIM mirror`,
      );
      continue;
    }
    if (rim.version.toUpperCase() !== role.version.toUpperCase()) {
      fail(
        Reason.RimNotFound,
        subject,
        `RIM supplied as ${role.id} declares version ${rim.version}, the report has ${role.version}`,
      );
      continue;
    }
    facts.rimIds.push(role.id);
    const signatureProblem = await checkRimSignature(rim);
    if (signatureProblem !== undefined) {
      fail(
        Reason.RimSignatureInvalid,
        subject,
        `${signatureProblem}; the RIM was altered after NVIDIA signed it: fetch it again`,
      );
    }
    const chain = verifyChain(rim.signerChain, rimRoot, { label: subject, ignorePresentedRoot: true });
    for (const problem of chain.problems) {
      fail(
        Reason.RimChainInvalid,
        subject,
        `${problem}; the RIM is not signed under the pinned NVIDIA RIM root`,
      );
    }
    facts.rimCerts.push({ rim: role.id, certs: chain.certs });
    out.push({ label: role.id, rim, chain });
  }
  return out;
}
