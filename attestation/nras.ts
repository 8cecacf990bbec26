/**
 * NRAS mode: NVIDIA's Remote Attestation Service appraises the evidence and returns a detached EAT:
 * [["JWT", <overall JWS>], { "GPU-0": <per-device JWS>, … }]. Signatures are checked with jose
 * against a JWKS the policy supplies (never fetched here); claims become the same facts as local
 * verification, so one policy evaluator judges both.
 */
import { createHash } from "node:crypto";
import { compactVerify, createLocalJWKSet, decodeProtectedHeader, type JSONWebKeySet } from "jose";
import { fromHex, toHex } from "./bytes.ts";
import type { DeviceFacts, EvidenceFacts } from "./facts.ts";
import { Reason, type ReasonCode } from "./reasons.ts";
import type { Finding } from "./verdict.ts";

export interface NrasVerificationInput {
  /** The detached EAT as NRAS returns it (JSON text or parsed). */
  token: string | unknown;
  jwks: JSONWebKeySet;
  expectedNonce: string | Uint8Array;
  collectedAt: string;
}

type Claims = Record<string, unknown>;

const decoder = new TextDecoder();

function architectureFromHwmodel(hwmodel: unknown): { architecture: string; kind: "gpu" | "switch" } {
  const chip = typeof hwmodel === "string" ? (hwmodel.split(" ")[0] ?? "") : "";
  if (/^GH1\d\d$/.test(chip)) return { architecture: "Hopper", kind: "gpu" };
  if (/^GB\d{3}$/.test(chip)) return { architecture: "Blackwell", kind: "gpu" };
  if (chip === "LS_10") return { architecture: "LS10", kind: "switch" };
  return { architecture: "unknown", kind: "gpu" };
}

async function verifyJws(
  jws: string,
  keys: ReturnType<typeof createLocalJWKSet>,
): Promise<{ claims?: Claims; problem?: string }> {
  try {
    const header = decodeProtectedHeader(jws);
    if (header.alg !== "ES384") return { problem: `alg ${header.alg} is not ES384` };
    const { payload } = await compactVerify(jws, keys, { algorithms: ["ES384"] });
    return { claims: JSON.parse(decoder.decode(payload)) as Claims };
  } catch (e) {
    return { problem: (e as Error).message };
  }
}

/** Decodes a JWS payload without checking it: for reporting what a refused token claimed. */
function peekClaims(jws: string): Claims | undefined {
  try {
    return JSON.parse(Buffer.from(jws.split(".")[1] ?? "", "base64url").toString("utf8")) as Claims;
  } catch {
    return undefined;
  }
}

export async function verifyNrasToken(input: NrasVerificationInput): Promise<EvidenceFacts> {
  const expectedNonce = toHex(
    typeof input.expectedNonce === "string"
      ? fromHex(input.expectedNonce, "expected nonce")
      : input.expectedNonce,
  );
  const raw = typeof input.token === "string" ? input.token : JSON.stringify(input.token);
  const facts: EvidenceFacts = {
    mode: "NRAS",
    expectedNonce,
    collectedAt: input.collectedAt,
    evidenceDigest: createHash("sha256").update(raw).digest("hex"),
    devices: [],
    token: { issuer: "" },
  };
  const tokenFailures: Finding[] = [];
  const fail = (reason: ReasonCode, subject: string, message: string) =>
    tokenFailures.push({ reason, subject, message });

  let parsed: unknown;
  try {
    parsed = typeof input.token === "string" ? JSON.parse(input.token) : input.token;
  } catch {
    parsed = undefined;
  }
  const overallJws =
    Array.isArray(parsed) && Array.isArray(parsed[0]) && parsed[0][0] === "JWT" ? parsed[0][1] : undefined;
  const detached = Array.isArray(parsed) ? (parsed[1] as Record<string, unknown> | undefined) : undefined;
  if (typeof overallJws !== "string" || detached === null || typeof detached !== "object") {
    facts.devices.push(
      emptyDevice("token", [
        {
          reason: Reason.TokenInvalid,
          subject: "token",
          message: 'not a detached EAT [["JWT", jws], {device: jws}]',
        },
      ]),
    );
    return facts;
  }
  const keys = createLocalJWKSet(input.jwks);
  const overall = await verifyJws(overallJws, keys);
  const overallClaims = overall.claims ?? peekClaims(overallJws) ?? {};
  if (overall.problem)
    fail(
      Reason.TokenInvalid,
      "token",
      `overall token: ${overall.problem}; is the policy's JWKS the issuer's current one?`,
    );
  facts.token = {
    issuer: String(overallClaims.iss ?? ""),
    ...(typeof overallClaims.nbf === "number"
      ? { notBefore: new Date(overallClaims.nbf * 1000).toISOString() }
      : {}),
    ...(typeof overallClaims.exp === "number"
      ? { expires: new Date(overallClaims.exp * 1000).toISOString() }
      : {}),
  };
  if (overallClaims.eat_nonce !== expectedNonce) {
    fail(
      Reason.NonceMismatch,
      "token",
      `token nonce ${String(overallClaims.eat_nonce)} is not ours (${expectedNonce})`,
    );
  }
  if (overallClaims["x-nvidia-overall-att-result"] !== true) {
    fail(Reason.TokenClaimFailed, "token", "x-nvidia-overall-att-result is not true");
  }
  const submods = (overallClaims.submods ?? {}) as Record<string, unknown>;
  const names = new Set([...Object.keys(submods), ...Object.keys(detached)]);
  for (const name of [...names].sort()) {
    const jws = (detached as Record<string, unknown>)[name];
    const failures: Finding[] = [];
    const digest = submods[name];
    const expected =
      Array.isArray(digest) && digest[0] === "DIGEST" && Array.isArray(digest[1]) ? digest[1] : undefined;
    if (typeof jws !== "string") {
      failures.push({
        reason: Reason.TokenInvalid,
        subject: name,
        message: `overall token lists ${name} but no detached token is attached`,
      });
      facts.devices.push(emptyDevice(name, failures));
      continue;
    }
    if (expected?.[0] !== "SHA-256" || expected[1] !== createHash("sha256").update(jws).digest("hex")) {
      failures.push({
        reason: Reason.TokenInvalid,
        subject: name,
        message: `the overall token's submods digest does not match ${name}'s token`,
      });
    }
    const device = await verifyJws(jws, keys);
    if (device.problem)
      failures.push({
        reason: Reason.TokenInvalid,
        subject: name,
        message: `${name} token: ${device.problem}`,
      });
    facts.devices.push(
      deviceFromClaims(name, device.claims ?? peekClaims(jws) ?? {}, expectedNonce, failures),
    );
  }
  if (facts.devices.length === 0) facts.devices.push(emptyDevice("token", []));
  (facts.devices[0] as DeviceFacts).failures.unshift(...tokenFailures);
  return facts;
}

function emptyDevice(deviceId: string, failures: Finding[]): DeviceFacts {
  return {
    source: "NRAS",
    deviceId,
    kind: "gpu",
    architecture: "unknown",
    deviceCerts: [],
    rimCerts: [],
    rimIds: [],
    ocspTargets: [],
    failures,
  };
}

function deviceFromClaims(
  name: string,
  claims: Claims,
  expectedNonce: string,
  failures: Finding[],
): DeviceFacts {
  const { architecture, kind } = architectureFromHwmodel(claims.hwmodel);
  const prefix = kind === "switch" ? "x-nvidia-switch" : "x-nvidia-gpu";
  const fail = (reason: ReasonCode, message: string) => failures.push({ reason, subject: name, message });
  if (claims.eat_nonce !== expectedNonce)
    fail(Reason.NonceMismatch, `${name} answers nonce ${String(claims.eat_nonce)}, not ours`);
  // NRAS signs the request's nonce as eat_nonce whatever the report says; whether the report
  // itself answered that nonce is this claim (a replayed report fails only here).
  if (claims[`${prefix}-attestation-report-nonce-match`] === false)
    fail(Reason.NonceMismatch, `NRAS reports that ${name}'s attestation report answers another nonce`);
  if (claims.measres !== "success")
    fail(Reason.MeasurementMismatch, `NRAS measres is ${String(claims.measres)}`);
  if (claims[`${prefix}-attestation-report-signature-verified`] !== true)
    fail(Reason.SignatureInvalid, "NRAS could not verify the report signature");
  if (claims[`${prefix}-attestation-report-cert-chain-fwid-match`] === false)
    fail(Reason.FwidMismatch, "NRAS reports a FWID mismatch");
  for (const [key, value] of Object.entries(claims)) {
    if (!key.endsWith("-cert-chain") || value === null || typeof value !== "object") continue;
    const chain = value as Record<string, unknown>;
    const isRim = key.includes("rim");
    if (chain["x-nvidia-cert-status"] !== "valid") {
      fail(
        isRim
          ? chain["x-nvidia-cert-status"] === "expired"
            ? Reason.RimExpired
            : Reason.RimChainInvalid
          : Reason.CertChainInvalid,
        `${key}: status ${String(chain["x-nvidia-cert-status"])}`,
      );
    }
    const ocsp = chain["x-nvidia-cert-ocsp-status"];
    if (ocsp === "revoked")
      fail(Reason.CertRevoked, `${key}: revoked (${String(chain["x-nvidia-cert-revocation-reason"])})`);
    else if (ocsp !== "good") fail(Reason.OcspUnknown, `${key}: OCSP status ${String(ocsp)}`);
  }
  const driver = claims[`${prefix}-driver-version`];
  const vbios = claims[`${prefix}-vbios-version`] ?? claims[`${prefix}-bios-version`];
  return {
    source: "NRAS",
    // ueid is a decimal string; anything else (a forged or damaged token's) cannot name the device.
    deviceId:
      typeof claims.ueid === "string" && /^[0-9]{1,100}$/.test(claims.ueid)
        ? `${architecture}-${BigInt(claims.ueid).toString(16).toUpperCase()}`
        : name,
    kind,
    architecture,
    ...(typeof driver === "string" ? { driverVersion: driver } : {}),
    ...(typeof vbios === "string" ? { vbiosVersion: vbios.toUpperCase() } : {}),
    ...(typeof claims.dbgstat === "string" ? { debugStatus: claims.dbgstat } : {}),
    deviceCerts: [],
    rimCerts: [],
    rimIds: [],
    ocspTargets: [],
    failures,
  };
}
