// Issue 10's "bad input and attack suite" figures: for each input path, bad inputs generated with
// fast-check (fixed seeds, so any failure reproduces) are fed to the entry point production uses
// for that input, and each outcome is classified:
//
// - refused: the entry point said no with one of our reason codes (an error class carrying a
//   `reason` whose message starts with it, a verdict whose reasons are all known codes, an HTTP
//   answer naming its reason, a rejection by the API server's schema or CEL);
// - crashed: anything else — another exception, an error without a code, an answer in no known
//   shape, or no answer within INPUT_TIMEOUT_MS;
// - accepted: the entry point took the input as good. Every input here is bad by construction
//   (bytes under a signature changed, a required part removed, a value outside its schema...),
//   so an acceptance is a real failure; mutations that could be harmless (padding bits of
//   base64, whitespace the format ignores, a truncation at a point where the input is still
//   complete) are not generated, or are excluded where noted.
//
// Reduced form (make test): a few hundred inputs per path. Under `make reliability`
// (SOVEREIGN_RELIABILITY=full) each path runs ten times as many. The counts go to
// bench/results/chaos-bad-input.json, from which test/chaos/report.ts writes docs/reliability.md.
import { createHash, generateKeyPairSync, type KeyObject, sign } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { createServer, request, type Server } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CoreV1Api, PatchStrategy, setHeaderOptions } from "@kubernetes/client-node";
import test, { type ExecutionContext } from "ava";
import fc from "fast-check";
import { exportJWK, generateKeyPair, type JSONWebKeySet, SignJWT } from "jose";
import { agentHandler } from "../../attestation/agent/handler.ts";
import { AGENT_API_VERSION, EVIDENCE_PATH, isAgentError } from "../../attestation/agent/protocol.ts";
import { ALL_AUDIT_REASONS, verifyAuditExport } from "../../attestation/audit/mod.ts";
import {
  ALL_REASONS,
  evaluatePolicy,
  isAttestationError,
  type LocalDeviceEvidence,
  Reason,
  type ReasonCode,
  verifyLocalEvidence,
  verifyNrasToken,
} from "../../attestation/mod.ts";
import { parseOcspResponse } from "../../attestation/ocsp.ts";
import {
  mintTestbedEvidence,
  TESTBED_GPU_DEFAULTS,
  TESTBED_POLICY_SPEC,
  testbedRimIds,
  testbedTrustAnchors,
} from "../../attestation/testbed/mod.ts";
import { installCrds } from "../../crds/install.ts";
import { resourceDefinitions, type Schema } from "../../crds/schema/index.ts";
import type { AttestationPolicySpec } from "../../crds/types.generated.ts";
import {
  Accumulator,
  addVerifiedDeltas,
  isAggregationError,
  type VerifiedDelivery,
} from "../../deltas/aggregate/mod.ts";
import {
  canonicalJson,
  collectBytes,
  type DeltaManifest,
  decodeDeltaToArrays,
  describeDelta,
  isDeltaError,
  openDelta,
  parseSignedManifest,
  publicKeyField,
  SIGNING_CONTEXT,
  type SignedManifest,
  serializeSignedManifest,
  signManifest,
  verifyManifestSignature,
  writeDelta,
  writeSafetensors,
} from "../../deltas/mod.ts";
import {
  EVIDENCE_FAULT_ANNOTATION,
  TESTBED_NODE_FAULTS,
  TestbedEvidenceSource,
} from "../../operator/member/attestation-testbed-source.ts";
import { isEvidenceError } from "../../operator/member/evidence-source.ts";
import { httpsRequest } from "../../operator/member/https-client.ts";
import { ReferenceFetcher } from "../../operator/member/local-references.ts";
import { NrasAppraiser, nrasRequest } from "../../operator/member/nras-appraiser.ts";
import { describeArrival } from "../../transport/deltas.ts";
import { isTransportError } from "../../transport/errors.ts";
import { MANIFEST_METADATA } from "../../transport/names.ts";
import { buildLog, trusted, verifyAt } from "../attestation/audit/helpers.ts";
import { submit } from "../crds/api-client.ts";
import { type ExampleObject, exampleFiles, loadExample, specParsers } from "../crds/fixtures.ts";
import { invalidCases } from "../crds/invalid-cases.ts";
import { createNamespace, HUB } from "../crds/testbed-helpers.ts";
import { uniqueName, useTestbed } from "../testbed/harness.ts";
import { TestbedNras } from "../testbed/nras-appraiser.ts";
import { ensureServingPki, serveHttps } from "../testbed/pki.ts";
import { TestbedReferenceServices } from "../testbed/reference-services.ts";
import { fullReliabilityRun, writeChaosResult } from "./results.ts";

/** Every path's generator is seeded from this (plus the path's index), so a failure reproduces. */
const SEED = 20261124;
const FULL = fullReliabilityRun();
/** Inputs per path: `n` in the reduced form, ten times as many under `make reliability`. */
const runs = (n: number): number => (FULL ? n * 10 : n);
const INPUT_TIMEOUT_MS = 20_000;

// ---------------------------------------------------------------------------------------------
// Outcomes and their tally

type Outcome =
  | { kind: "refused"; reasons: string[] }
  | { kind: "crashed"; detail: string }
  | { kind: "accepted"; detail: string };

const refused = (...reasons: string[]): Outcome => ({ kind: "refused", reasons });
const crashed = (detail: string): Outcome => ({ kind: "crashed", detail });
const accepted = (detail = "accepted"): Outcome => ({ kind: "accepted", detail });

/** The reason code of one of our errors (its class carries it and its message starts with it). */
function reasonOf(err: unknown): string | undefined {
  if (
    !(
      isAttestationError(err) ||
      isDeltaError(err) ||
      isAggregationError(err) ||
      isTransportError(err) ||
      isAgentError(err) ||
      isEvidenceError(err)
    )
  )
    return undefined;
  const reason = String(err.reason);
  if (!/^[A-Z][A-Za-z0-9]+$/.test(reason) || !err.message.startsWith(`${reason}:`)) return undefined;
  // The testbed's fault refusal is an EvidenceMalformed naming its own code first.
  const specific = /^EvidenceMalformed: (EvidenceFaultUnknown):/.exec(err.message)?.[1];
  return specific ?? reason;
}

const describeError = (err: unknown): string =>
  err instanceof Error ? `${err.name}: ${err.message}`.slice(0, 400) : String(err).slice(0, 400);

class Tally {
  tried = 0;
  refused = 0;
  crashed = 0;
  accepted = 0;
  readonly reasons = new Map<string, number>();
  readonly failures: string[] = [];
  readonly path: string;
  readonly entry: string;
  constructor(path: string, entry: string) {
    this.path = path;
    this.entry = entry;
  }

  record(outcome: Outcome, input: string): void {
    this.tried++;
    if (outcome.kind === "refused") {
      this.refused++;
      for (const r of new Set(outcome.reasons)) this.reasons.set(r, (this.reasons.get(r) ?? 0) + 1);
      return;
    }
    if (outcome.kind === "crashed") this.crashed++;
    else this.accepted++;
    if (this.failures.length < 5)
      this.failures.push(`${outcome.kind}: ${outcome.detail}\n  input: ${input.slice(0, 600)}`);
  }

  topReasons(n = 4): string {
    return [...this.reasons]
      .sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))
      .slice(0, n)
      .map(([r, c]) => `${r} (${c})`)
      .join(", ");
  }
}

const tallies: Tally[] = [];

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T | "timeout"> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise,
    new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/**
 * Feeds every input to `feed` one at a time. What `feed` throws is classified here: one of our
 * coded errors is a refusal, anything else a crash.
 */
async function runPath<T>(
  t: ExecutionContext,
  tally: Tally,
  inputs: readonly T[],
  show: (input: T) => string,
  feed: (input: T) => Promise<Outcome>,
): Promise<void> {
  tallies.push(tally);
  for (const input of inputs) {
    let outcome: Outcome;
    try {
      const result = await withTimeout(feed(input), INPUT_TIMEOUT_MS);
      outcome = result === "timeout" ? crashed(`no answer within ${INPUT_TIMEOUT_MS} ms`) : result;
    } catch (err) {
      const reason = reasonOf(err);
      outcome = reason ? refused(reason) : crashed(describeError(err));
    }
    tally.record(outcome, show(input));
  }
  t.log(`${tally.path}: ${tally.tried} tried, ${tally.refused} refused (${tally.topReasons()})`);
  t.true(tally.tried > 0);
  t.is(tally.crashed, 0, `${tally.path}: crashed on\n${tally.failures.join("\n")}`);
  t.is(tally.accepted, 0, `${tally.path}: accepted\n${tally.failures.join("\n")}`);
}

const sample = <T>(arb: fc.Arbitrary<T>, path: number, n: number): T[] =>
  fc.sample(arb, { seed: SEED + path, numRuns: runs(n) });

const hexOf = (bytes: Uint8Array, max = 200): string => Buffer.from(bytes.subarray(0, max)).toString("hex");

/** One byte changed (XOR with a non-zero value): the result always differs from the original. */
const flipAt = (bytes: Uint8Array, at: number, xor: number): Uint8Array => {
  const out = bytes.slice();
  out[at] = (out[at] as number) ^ xor;
  return out;
};

const byteFlip = (length: number) =>
  fc.record({ at: fc.nat({ max: length - 1 }), xor: fc.integer({ min: 1, max: 255 }) });

// ---------------------------------------------------------------------------------------------
// 1. NVIDIA evidence, through verifyLocalEvidence and evaluatePolicy as the member's attester
//    runs them (operator/member/attestation-attester.ts), under the testbed anchors and policy.

const NONCE = "5eed".repeat(16);
const AT = "2026-11-24T10:00:00Z";
const genuine = await mintTestbedEvidence({ nonce: NONCE, at: AT });
/** The same GPU model from an unrelated PKI, and another GPU under the testbed PKI. */
const foreign = await mintTestbedEvidence({ nonce: NONCE, at: AT, seed: "someone else's lab" });
const otherGpu = await mintTestbedEvidence({ nonce: NONCE, at: AT, gpu: { index: 7 } });
const anchors = testbedTrustAnchors();

async function judgeEvidence(device: LocalDeviceEvidence): Promise<Outcome> {
  const facts = await verifyLocalEvidence({
    devices: [device],
    expectedNonce: genuine.expectedNonce,
    collectedAt: genuine.collectedAt,
    anchors,
  });
  const verdict = evaluatePolicy(facts, TESTBED_POLICY_SPEC, { at: new Date(genuine.at) });
  return verdictOutcome(verdict.passed, verdict.reasons);
}

function verdictOutcome(passed: boolean, reasons: readonly string[]): Outcome {
  if (passed) return accepted("the verdict passed");
  if (reasons.length === 0) return crashed("a failed verdict without a reason code");
  const unknown = reasons.filter((r) => !ALL_REASONS.includes(r as ReasonCode));
  if (unknown.length > 0) return crashed(`reasons outside the vocabulary: ${unknown.join(", ")}`);
  return refused(...reasons);
}

const pemBlocks = (pem: string): Uint8Array[] =>
  [...pem.matchAll(/-----BEGIN CERTIFICATE-----([\s\S]+?)-----END CERTIFICATE-----/g)].map(
    (m) => new Uint8Array(Buffer.from((m[1] as string).replace(/\s+/g, ""), "base64")),
  );
const toPem = (ders: readonly Uint8Array[]): string =>
  ders
    .map(
      (der) =>
        `-----BEGIN CERTIFICATE-----\n${(
          Buffer.from(der)
            .toString("base64")
            .match(/.{1,64}/g) ?? []
        ).join("\n")}\n-----END CERTIFICATE-----\n`,
    )
    .join("");

test("bad input: NVIDIA evidence", async (t) => {
  t.timeout(FULL ? 3_600_000 : 900_000);
  // The genuine set passes: every refusal below is the mutation's doing.
  t.deepEqual(await judgeEvidence(genuine.device), accepted("the verdict passed"));
  const { device } = genuine;
  const report = new Uint8Array(device.report as Uint8Array);

  // The SPDM report (request ‖ signed response ‖ signature): every byte is signed or is the
  // signature, so any change is bad; so is a cut, a tail, or garbage.
  const reports = sample(
    fc.oneof(
      { weight: 4, arbitrary: byteFlip(report.length).map(({ at, xor }) => flipAt(report, at, xor)) },
      { weight: 1, arbitrary: fc.nat({ max: report.length - 1 }).map((cut) => report.slice(0, cut)) },
      {
        // Bytes after the signature; not all zero (zero padding there is tolerated on purpose:
        // genuine reports carry it, see test/attestation/nvidia-differential.test.ts).
        weight: 1,
        arbitrary: fc
          .uint8Array({ minLength: 1, maxLength: 64 })
          .filter((tail) => tail.some((b) => b !== 0))
          .map((tail) => new Uint8Array([...report, ...tail])),
      },
      { weight: 2, arbitrary: fc.uint8Array({ maxLength: 6000 }) },
      {
        weight: 1,
        arbitrary: fc
          .uint8Array({ maxLength: 400 })
          .map((tail) => new Uint8Array([...report.subarray(0, 37), ...tail])),
      },
    ),
    1,
    60,
  );
  await runPath(
    t,
    new Tally("evidence: SPDM report", "verifyLocalEvidence + evaluatePolicy"),
    reports,
    hexOf,
    (r: Uint8Array) => judgeEvidence({ ...device, report: r }),
  );

  // Report given as hex text (how the agent and the files carry it): garbage text.
  const texts = sample(
    fc.oneof(
      fc.string({ maxLength: 200 }),
      fc.stringMatching(/^[0-9a-fA-F ]{0,300}$/),
      fc.nat({ max: report.length * 2 - 2 }).map((cut) => Buffer.from(report).toString("hex").slice(0, cut)),
    ),
    2,
    40,
  );
  await runPath(
    t,
    new Tally("evidence: SPDM report (hex text)", "verifyLocalEvidence + evaluatePolicy"),
    texts,
    (s) => JSON.stringify(s.slice(0, 200)),
    (s) => judgeEvidence({ ...device, report: s }),
  );

  // The device certificate chain: DER bytes changed in one certificate (each is signed by its
  // issuer, the root is pinned byte for byte), a middle link removed, a certificate replaced by
  // one of another PKI or of another GPU, the PEM text cut before its last certificate ends, or
  // garbage. (Reordering or repeating certificates is not generated: a verifier may sort them.)
  const ders = pemBlocks(device.certificateChain);
  const foreignDers = pemBlocks(foreign.device.certificateChain);
  const otherDers = pemBlocks(otherGpu.device.certificateChain);
  const lastEnd = device.certificateChain.lastIndexOf("-----END CERTIFICATE-----");
  // Found by this suite: a leaf whose notBefore tag is changed from UTCTime to a type OpenSSL
  // prints as "Bad time value" made verification throw a RangeError, or judge the certificate
  // against whatever date Node made of it (attestation/certchain.ts). It is refused as malformed,
  // before the device's architecture is read from it.
  const leaf = ders[0] as Uint8Array;
  const notAfterAt = Buffer.from(leaf).indexOf(Buffer.from("99991231235959Z"));
  const regressions =
    notAfterAt > 15 ? [toPem(ders.map((d, j) => (j === 0 ? flipAt(d, notAfterAt - 15, 8) : d)))] : [];
  t.is(regressions.length, 1, "the leaf's validity is where the regression input expects it");
  for (const chain of regressions)
    t.deepEqual(
      await judgeEvidence({ ...device, certificateChain: chain }),
      refused(Reason.ArchitectureNotAllowed, Reason.CertChainInvalid),
    );
  const chains = sample(
    fc.oneof(
      {
        weight: 5,
        arbitrary: fc
          .nat({ max: ders.length - 1 })
          .chain((i) => byteFlip((ders[i] as Uint8Array).length).map((flip) => ({ i, ...flip })))
          .map(({ i, at, xor }) => toPem(ders.map((d, j) => (j === i ? flipAt(d, at, xor) : d)))),
      },
      {
        weight: 1,
        arbitrary: fc
          .integer({ min: 1, max: ders.length - 2 })
          .map((i) => toPem(ders.filter((_, j) => j !== i))),
      },
      {
        weight: 1,
        arbitrary: fc
          .record({ i: fc.nat({ max: ders.length - 1 }), from: fc.constantFrom(foreignDers, otherDers) })
          // The other GPU shares the CAs above its own two certificates: only those differ.
          .filter(({ i, from }) => from === foreignDers || i < 2)
          .map(({ i, from }) => toPem(ders.map((d, j) => (j === i ? (from[i] as Uint8Array) : d)))),
      },
      {
        weight: 1,
        arbitrary: fc.nat({ max: lastEnd + 24 }).map((cut) => device.certificateChain.slice(0, cut)),
      },
      { weight: 1, arbitrary: fc.string({ maxLength: 300 }) },
      {
        weight: 1,
        arbitrary: fc.uint8Array({ maxLength: 800 }).map((der) => toPem([der, ...ders.slice(1)])),
      },
    ),
    3,
    50,
  );
  await runPath(
    t,
    new Tally("evidence: certificate chain", "verifyLocalEvidence + evaluatePolicy"),
    [...regressions, ...chains],
    (s) => JSON.stringify(s.slice(0, 300)),
    (chain) => judgeEvidence({ ...device, certificateChain: chain }),
  );

  // The RIMs: one character changed inside an attribute value or element text (all of it under
  // the XML signature, or the signer chain in KeyInfo), the RIM cut short, its id changed, or
  // garbage. Whitespace, and base64 characters whose low bits are padding, are never changed.
  const rims = device.rims;
  const editable = rims.map(({ xml }) => {
    const spots: number[] = [];
    for (const m of xml.matchAll(/="([^"]*)"|>([^<]+)</g)) {
      const text = (m[1] ?? m[2]) as string;
      const start = (m.index as number) + (m[1] !== undefined ? 2 : 1);
      for (let k = 0; k < text.length; k++) {
        if (/\s/.test(text[k] as string)) continue;
        // A base64 character followed by '=' padding carries unused bits.
        if (/^\s*=/.test(text.slice(k + 1))) continue;
        spots.push(start + k);
      }
    }
    return spots;
  });
  const ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  const rimInputs = sample(
    fc.nat({ max: rims.length - 1 }).chain((r) => {
      const rim = rims[r] as { id: string; xml: string };
      const spots = editable[r] as number[];
      const replace = (xml: string) => rims.map((x, j) => (j === r ? { ...x, xml } : x));
      return fc.oneof(
        {
          weight: 5,
          arbitrary: fc
            .record({ spot: fc.constantFrom(...spots), c: fc.constantFrom(...ALNUM) })
            .filter(({ spot, c }) => rim.xml[spot] !== c)
            .map(({ spot, c }) => replace(rim.xml.slice(0, spot) + c + rim.xml.slice(spot + 1))),
        },
        {
          weight: 1,
          arbitrary: fc
            .nat({ max: rim.xml.lastIndexOf("</SoftwareIdentity>") })
            .map((cut) => replace(rim.xml.slice(0, cut))),
        },
        {
          weight: 1,
          arbitrary: fc
            .string({ minLength: 1, maxLength: 40 })
            .filter((id) => id !== rim.id)
            .map((id) => rims.map((x, j) => (j === r ? { ...x, id } : x))),
        },
        { weight: 1, arbitrary: fc.string({ maxLength: 400 }).map(replace) },
        {
          weight: 1,
          arbitrary: fc
            .array(fc.constantFrom("<a>", "</a>", "<SoftwareIdentity>", "<!--", "&amp;", "<![CDATA[", "x"), {
              maxLength: 12,
            })
            .map((parts) => replace(parts.join(""))),
        },
      );
    }),
    4,
    30,
  );
  await runPath(
    t,
    new Tally("evidence: RIM XML", "verifyLocalEvidence + evaluatePolicy"),
    rimInputs,
    (rs) =>
      rs
        .map((r, i) =>
          r.xml === rims[i]?.xml && r.id === rims[i]?.id ? "(genuine)" : JSON.stringify(r).slice(0, 300),
        )
        .join(" "),
    (rs) => judgeEvidence({ ...device, rims: rs }),
  );

  // OCSP answers (DER): a byte changed in one (its answer is signed by the responder), one
  // replaced by garbage or by the answer about another certificate, one left out.
  const ocsp = (device.ocspResponses as Uint8Array[]).map((o) => new Uint8Array(o));
  // Byte changes go to the responder-signed tbsResponseData only: the DER framing around it is
  // not signed, and the reader tolerates some non-DER framing there (the full form found an outer
  // SEQUENCE tag changed to [17] still read, with the signed answer intact, so no false answer).
  const signedRange = ocsp.map((one) => {
    const tbs = parseOcspResponse(one).tbs;
    const start = Buffer.from(one).indexOf(Buffer.from(tbs));
    if (start < 0) throw new Error("the OCSP answer's signed part is not found in its DER");
    return { start, length: tbs.length };
  });
  const ocspInputs = sample(
    fc.nat({ max: ocsp.length - 1 }).chain((i) => {
      const one = ocsp[i] as Uint8Array;
      const { start, length } = signedRange[i] as { start: number; length: number };
      const replace = (der: Uint8Array | undefined) =>
        der === undefined ? ocsp.filter((_, j) => j !== i) : ocsp.map((o, j) => (j === i ? der : o));
      return fc.oneof(
        {
          weight: 5,
          arbitrary: byteFlip(length).map(({ at, xor }) => replace(flipAt(one, start + at, xor))),
        },
        { weight: 1, arbitrary: fc.nat({ max: one.length - 1 }).map((cut) => replace(one.slice(0, cut))) },
        { weight: 1, arbitrary: fc.uint8Array({ maxLength: 1200 }).map(replace) },
        {
          weight: 1,
          arbitrary: fc
            .nat({ max: ocsp.length - 1 })
            .filter((j) => j !== i)
            .map((j) => replace(ocsp[j])),
        },
        { weight: 1, arbitrary: fc.constant(replace(undefined)) },
      );
    }),
    5,
    30,
  );
  await runPath(
    t,
    new Tally("evidence: OCSP responses", "verifyLocalEvidence + evaluatePolicy"),
    ocspInputs,
    (os: Uint8Array[]) => os.map((o) => hexOf(o, 40)).join(","),
    (os: Uint8Array[]) => judgeEvidence({ ...device, ocspResponses: os }),
  );
});

// NRAS: a detached EAT in NRAS's format signed by a key the policy's JWKS holds.
const NRAS_ISSUER = "https://nras.attestation.nvidia.com";
const NRAS_POLICY: AttestationPolicySpec = {
  ...TESTBED_POLICY_SPEC,
  verification: {
    mode: "NRAS",
    nras: {
      url: "https://nras.attestation.nvidia.com/v4/attest/gpu",
      acceptedIssuers: [NRAS_ISSUER],
      jwksUrl: "https://nras.attestation.nvidia.com/.well-known/jwks.json",
    },
  },
};
const NRAS_IAT = Math.floor(Date.parse(AT) / 1000);
const goodGpuClaims = (): Record<string, unknown> => ({
  iss: NRAS_ISSUER,
  iat: NRAS_IAT,
  nbf: NRAS_IAT,
  exp: NRAS_IAT + 3600,
  eat_nonce: NONCE,
  hwmodel: "GH100 A01 GSP BROM",
  ueid: "478176379286082186618948445787393647364802107249",
  dbgstat: "disabled",
  measres: "success",
  "x-nvidia-gpu-driver-version": "570.133.20",
  "x-nvidia-gpu-vbios-version": "96.00.CF.00.02",
  "x-nvidia-gpu-attestation-report-signature-verified": true,
  "x-nvidia-gpu-attestation-report-cert-chain-fwid-match": true,
  "x-nvidia-gpu-attestation-report-cert-chain": {
    "x-nvidia-cert-status": "valid",
    "x-nvidia-cert-ocsp-status": "good",
  },
  "x-nvidia-gpu-driver-rim-cert-chain": {
    "x-nvidia-cert-status": "valid",
    "x-nvidia-cert-ocsp-status": "good",
  },
  "x-nvidia-gpu-vbios-rim-cert-chain": {
    "x-nvidia-cert-status": "valid",
    "x-nvidia-cert-ocsp-status": "good",
  },
});

async function nrasSigner() {
  const { publicKey, privateKey } = await generateKeyPair("ES384", { extractable: true });
  const jwk = { ...(await exportJWK(publicKey)), kid: "test-kid", alg: "ES384" };
  const sign = (claims: Record<string, unknown>) =>
    new SignJWT(claims).setProtectedHeader({ alg: "ES384", kid: "test-kid" }).sign(privateKey);
  return { jwks: { keys: [jwk] } as JSONWebKeySet, sign };
}

async function nrasToken(
  sign: (claims: Record<string, unknown>) => Promise<string>,
  gpu: Record<string, unknown>,
  overall: Record<string, unknown> = {},
  signOverall = sign,
): Promise<string> {
  const gpuJws = await sign(gpu);
  const overallJws = await signOverall({
    iss: NRAS_ISSUER,
    "x-nvidia-overall-att-result": true,
    eat_nonce: NONCE,
    iat: NRAS_IAT,
    nbf: NRAS_IAT,
    exp: NRAS_IAT + 3600,
    submods: { "GPU-0": ["DIGEST", ["SHA-256", createHash("sha256").update(gpuJws).digest("hex")]] },
    ...overall,
  });
  return JSON.stringify([["JWT", overallJws], { "GPU-0": gpuJws }]);
}

test("bad input: NRAS attestation tokens", async (t) => {
  t.timeout(FULL ? 1_800_000 : 900_000);
  const nras = await nrasSigner();
  const forger = await nrasSigner();
  const judge = async (token: unknown): Promise<Outcome> => {
    const facts = await verifyNrasToken({
      token,
      jwks: nras.jwks,
      expectedNonce: NONCE,
      collectedAt: AT,
    });
    const verdict = evaluatePolicy(facts, NRAS_POLICY, { at: new Date(Date.parse(AT) + 60_000) });
    return verdictOutcome(verdict.passed, verdict.reasons);
  };
  const good = await nrasToken(nras.sign, goodGpuClaims());
  t.deepEqual(await judge(good), accepted("the verdict passed"));

  // Where a character may change: inside the JWS strings (the signing input is their text), the
  // "JWT" tag and the device name; the JSON punctuation and whitespace around them are left alone.
  const spots: number[] = [];
  for (const m of good.matchAll(/"([^"]*)"/g)) {
    for (let k = 0; k < (m[1] as string).length; k++) spots.push((m.index as number) + 1 + k);
  }
  const B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.";
  // Claims NRAS would sign to say the evidence failed, or that do not answer our challenge.
  const badClaims: [string, unknown][] = [
    ["measres", "fail"],
    ["eat_nonce", "11".repeat(32)],
    ["x-nvidia-gpu-attestation-report-signature-verified", false],
    ["x-nvidia-gpu-attestation-report-cert-chain-fwid-match", false],
    ["dbgstat", "enabled"],
    ["hwmodel", "GA100 A01 GSP BROM"],
    ["x-nvidia-gpu-attestation-report-cert-chain", { "x-nvidia-cert-status": "revoked" }],
    [
      "x-nvidia-gpu-driver-rim-cert-chain",
      { "x-nvidia-cert-status": "valid", "x-nvidia-cert-ocsp-status": "revoked" },
    ],
    [
      "x-nvidia-gpu-vbios-rim-cert-chain",
      { "x-nvidia-cert-status": "expired", "x-nvidia-cert-ocsp-status": "good" },
    ],
  ];
  const badOverall: [string, unknown][] = [
    ["x-nvidia-overall-att-result", false],
    ["eat_nonce", "22".repeat(32)],
    ["iss", "https://nras.example.invalid"],
    ["exp", NRAS_IAT - 7200],
    ["nbf", NRAS_IAT + 7200],
    ["submods", {}],
  ];
  const anyClaimValue = fc.oneof(
    fc.string({ maxLength: 30 }),
    fc.integer(),
    fc.double(),
    fc.boolean(),
    fc.constant(null),
    fc.jsonValue({ maxDepth: 2 }),
  );
  type NrasInput =
    | { kind: "flip"; spot: number; c: string }
    | { kind: "claims"; gpu?: [string, unknown]; overall?: [string, unknown] }
    | { kind: "forged"; claims: Record<string, unknown> }
    | { kind: "raw"; token: unknown };
  const inputs = sample<NrasInput>(
    fc.oneof(
      {
        weight: 4,
        arbitrary: fc
          .record({ spot: fc.constantFrom(...spots), c: fc.constantFrom(...B64URL) })
          .filter(({ spot, c }) => good[spot] !== c)
          .map(({ spot, c }) => ({ kind: "flip" as const, spot, c })),
      },
      {
        weight: 2,
        arbitrary: fc.oneof(
          fc.constantFrom(...badClaims).map((gpu) => ({ kind: "claims" as const, gpu })),
          fc.constantFrom(...badOverall).map((overall) => ({ kind: "claims" as const, overall })),
        ),
      },
      {
        // Signed by a key the JWKS does not hold, claiming anything at all.
        weight: 2,
        arbitrary: fc
          .dictionary(
            fc.constantFrom(...Object.keys(goodGpuClaims()), "ueid", "hwmodel", "x-nvidia-foo-cert-chain"),
            anyClaimValue,
            { maxKeys: 6 },
          )
          .map((over) => ({ kind: "forged" as const, claims: { ...goodGpuClaims(), ...over } })),
      },
      {
        weight: 2,
        arbitrary: fc
          .oneof(
            fc.string({ maxLength: 200 }),
            fc.jsonValue({ maxDepth: 4 }),
            fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)),
            fc.tuple(fc.constant("JWT"), fc.string()).map((jwt) => JSON.stringify([jwt, {}])),
            fc
              .dictionary(fc.string({ maxLength: 6 }), fc.jsonValue({ maxDepth: 2 }))
              .map((d) => [["JWT", good.split('"')[3]], d]),
          )
          .map((token) => ({ kind: "raw" as const, token })),
      },
    ),
    6,
    150,
  );
  // Found by this suite: a ueid that is no decimal number made verifyNrasToken throw (BigInt).
  const regressions: NrasInput[] = ["not-a-number", "0x1f", "", "1e5"].map((ueid) => ({
    kind: "forged",
    claims: { ...goodGpuClaims(), ueid },
  }));
  for (const r of regressions) {
    const facts = await verifyNrasToken({
      token: await nrasToken(forger.sign, (r as { claims: Record<string, unknown> }).claims),
      jwks: nras.jwks,
      expectedNonce: NONCE,
      collectedAt: AT,
    });
    t.true(facts.devices[0]?.failures.some((f) => f.reason === Reason.TokenInvalid));
  }
  await runPath(
    t,
    new Tally("evidence: NRAS EAT token", "verifyNrasToken + evaluatePolicy"),
    [...regressions, ...inputs],
    (i) => JSON.stringify(i).slice(0, 400),
    async (i) => {
      switch (i.kind) {
        case "flip":
          return judge(good.slice(0, i.spot) + i.c + good.slice(i.spot + 1));
        case "claims": {
          const gpu = goodGpuClaims();
          if (i.gpu) gpu[i.gpu[0]] = i.gpu[1];
          return judge(await nrasToken(nras.sign, gpu, i.overall ? { [i.overall[0]]: i.overall[1] } : {}));
        }
        case "forged":
          return judge(await nrasToken(forger.sign, i.claims));
        default:
          return judge(i.token);
      }
    },
  );
});

// ---------------------------------------------------------------------------------------------
// 2. Deltas

const LAYOUT = [
  { name: "model.embed_tokens.weight", shape: [16, 12] },
  { name: "model.layers.0.mlp.up_proj.weight", shape: [24, 12] },
  { name: "model.norm.weight", shape: [12] },
  { name: "logit_scale", shape: [] },
];
const learner = generateKeyPairSync("ed25519");
const impostor = generateKeyPairSync("ed25519");

function values(seed: number, n: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed;
  for (let i = 0; i < n; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    out[i] = (s / 2 ** 32 - 0.5) * 0.02;
  }
  return out;
}
const elements = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

async function manifestFor(
  file: Uint8Array,
  key: { publicKey: KeyObject; privateKey: KeyObject } = learner,
  overrides: Partial<DeltaManifest> = {},
): Promise<SignedManifest> {
  const described = await describeDelta([file]);
  const manifest: DeltaManifest = {
    version: 1,
    namespace: "team-a",
    run: "llama-eu",
    round: 7,
    region: "region-a",
    learner: "learner-0.region-a",
    learnerKey: publicKeyField(key.publicKey),
    baseModel: `sha256:${"ab".repeat(32)}`,
    encoding: described.encoding,
    tokens: 1000,
    innerSteps: 500,
    createdAt: "2026-11-24T04:05:06Z",
    size: described.size,
    tensors: described.tensors,
    ...overrides,
  };
  return signManifest(manifest, key.privateKey);
}

const deltaFile = (encoding: "fp32" | "bf16" | "int8-block64" | "int4-block8", layout = LAYOUT, seed = 1) =>
  collectBytes(
    writeDelta(
      layout.map((t, i) => ({ name: t.name, shape: t.shape, values: values(seed + i, elements(t.shape)) })),
      encoding,
    ),
  );

/** A delta file written raw (writeDelta refuses NaN and ±Inf), fp32, with its delta metadata. */
function rawDelta(tensors: { name: string; shape: number[]; values: Float32Array }[]): Promise<Uint8Array> {
  return collectBytes(
    writeSafetensors(
      tensors.map((t) => ({
        name: t.name,
        dtype: "F32" as const,
        shape: t.shape,
        data: new Uint8Array(t.values.buffer.slice(0)),
      })),
      { metadata: { "sovereign.format": "sovereign-delta/1", "sovereign.encoding": "fp32" } },
    ),
  );
}

const goodFp32 = await deltaFile("fp32");
const goodBf16 = await deltaFile("bf16");
const goodInt8 = await deltaFile("int8-block64");
// Packed U8 payloads for the matrices and the vector, an int8 fallback for the scalar.
const goodInt4 = await deltaFile("int4-block8");
const headerLength = (file: Uint8Array) =>
  8 + Number(new DataView(file.buffer, file.byteOffset).getBigUint64(0, true));

test("bad input: delta files (safetensors parser and decoder)", async (t) => {
  t.timeout(FULL ? 1_800_000 : 900_000);
  // What a learner or the hub decodes (openDelta, then every value): the sanity check is that
  // the genuine files decode.
  const decode = async (file: Uint8Array): Promise<Outcome> => {
    const opened = await openDelta([file], { maxDataBytes: 1 << 20 });
    await decodeDeltaToArrays(opened.stream);
    return accepted("decoded");
  };
  for (const f of [goodFp32, goodBf16, goodInt8, goodInt4]) t.deepEqual(await decode(f), accepted("decoded"));
  const header = (file: Uint8Array) =>
    JSON.parse(Buffer.from(file.subarray(8, headerLength(file))).toString("utf8")) as Record<string, unknown>;
  const withHeader = (file: Uint8Array, edit: (h: Record<string, unknown>) => void) => {
    const h = header(file);
    edit(h);
    return rawHeader(new TextEncoder().encode(JSON.stringify(h)), file);
  };
  type H = Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  const first = (h: Record<string, unknown>) =>
    (h as H)[Object.keys(h).find((k) => k !== "__metadata__") as string] as H[string];
  const payloadOf = (h: Record<string, unknown>) =>
    (h as H)[Object.keys(h).filter((k) => k !== "__metadata__")[1] as string] as H[string];
  // Structural damage only: an unsigned file whose data bytes changed is still a valid file, so
  // flips of data bytes belong to the signed path below, not here.
  const damage: fc.Arbitrary<{ what: string; file: Uint8Array }>[] = [
    goodFp32,
    goodBf16,
    goodInt8,
    goodInt4,
  ].flatMap((file) => [
    fc.nat({ max: file.length - 1 }).map((cut) => ({ what: `cut at ${cut}`, file: file.slice(0, cut) })),
    fc
      .uint8Array({ minLength: 1, maxLength: 64 })
      .map((tail) => ({ what: "trailing bytes", file: new Uint8Array([...file, ...tail]) })),
    fc
      .oneof(
        fc.bigInt({ min: BigInt(file.length), max: 2n ** 64n - 1n }),
        fc.constant(0n),
        fc.bigInt({ min: 1n, max: 7n }),
      )
      .map((n) => {
        const out = file.slice();
        new DataView(out.buffer).setBigUint64(0, n, true);
        return { what: `header length ${n}`, file: out };
      }),
    fc
      .constantFrom<[string, (h: Record<string, unknown>) => void]>(
        ["shape too large", (h) => first(h).shape.push(2)],
        ["shape negative", (h) => (first(h).shape[0] = -1)],
        ["shape fractional", (h) => (first(h).shape[0] = 1.5)],
        ["dtype unknown", (h) => (first(h).dtype = "F128")],
        ["offsets overlap", (h) => (first(h).data_offsets[1] += 4)],
        ["offsets reversed", (h) => first(h).data_offsets.reverse()],
        ["offsets out of bounds", (h) => (first(h).data_offsets = [0, 1 << 30])],
        ["tensor name empty", (h) => Object.assign(h, { "": first(h) })],
        [
          "encoding unknown",
          (h) => ((h.__metadata__ as Record<string, string>)["sovereign.encoding"] = "int3"),
        ],
        [
          "format unknown",
          (h) => ((h.__metadata__ as Record<string, string>)["sovereign.format"] = "other/9"),
        ],
        ["metadata not strings", (h) => (h.__metadata__ = { "sovereign.format": 1 })],
        ["tensor not an object", (h) => (h.x = 5)],
      )
      .map(([what, edit]) => ({ what, file: withHeader(file, edit) })),
    ...(file === goodInt8 || file === goodInt4
      ? [
          fc.constant({
            what: "scales missing",
            file: withHeader(file, (h) => {
              for (const k of Object.keys(h)) if (k.endsWith(":scale")) delete h[k];
            }),
          }),
        ]
      : []),
    ...(file === goodInt4
      ? [
          fc
            .constantFrom<[string, (h: Record<string, unknown>) => void]>(
              // The payload (the entry after the first scales) claims another dtype or shape.
              ["packed payload as I8", (h) => (payloadOf(h).dtype = "I8")],
              ["packed payload as F32", (h) => (payloadOf(h).dtype = "F32")],
              [
                "packed payload's shape unpacked",
                (h) => {
                  const p = payloadOf(h);
                  p.shape = [p.shape[0] as number, (p.shape[1] as number) * 2];
                },
              ],
              ["int8 fallback (the scalar) as U8", (h) => (((h as H).logit_scale as H[string]).dtype = "U8")],
              [
                "int4 file labelled int8",
                (h) => ((h.__metadata__ as Record<string, string>)["sovereign.encoding"] = "int8-block8"),
              ],
              [
                "int4 blocks relabelled",
                (h) => ((h.__metadata__ as Record<string, string>)["sovereign.encoding"] = "int4-block16"),
              ],
            )
            .map(([what, edit]) => ({ what, file: withHeader(file, edit) })),
        ]
      : []),
    fc
      .uint8Array({ minLength: 1, maxLength: 200 })
      .map((json) => ({ what: "header bytes garbage", file: rawHeader(json, file) })),
  ]);
  const nonFinite = fc
    .record({
      t: fc.nat({ max: LAYOUT.length - 1 }),
      v: fc.constantFrom(Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY),
    })
    .map(({ t: which, v }) => ({ which, v }));
  const nonFiniteFiles = await Promise.all(
    sample(nonFinite, 7, 20).map(async ({ which, v }) => ({
      what: `value ${v} in tensor ${which}`,
      file: await rawDelta(
        LAYOUT.map((t, i) => {
          const vals = values(i + 1, elements(t.shape));
          if (i === which) vals[Math.floor(vals.length / 2)] = v;
          return { ...t, values: vals };
        }),
      ),
    })),
  );
  const inputs = [
    ...sample(fc.oneof(...damage), 8, 200),
    ...sample(
      fc.uint8Array({ maxLength: 3000 }).map((file) => ({ what: "garbage", file })),
      9,
      60,
    ),
    ...nonFiniteFiles,
    // Oversized: more data than the reader's limit, refused from the header.
    {
      what: "over the size limit",
      file: await rawDelta([{ name: "big", shape: [300_000], values: new Float32Array(300_000) }]),
    },
  ];
  await runPath(
    t,
    new Tally("delta: safetensors bytes", "openDelta + decodeDelta"),
    inputs,
    (i) => `${i.what}: ${hexOf(i.file, 120)}`,
    (i) => decode(i.file),
  );
});

/** A file whose header is `json` (any bytes) and whose data is the original's. */
function rawHeader(json: Uint8Array, file: Uint8Array): Uint8Array {
  const body = file.subarray(headerLength(file));
  const out = new Uint8Array(8 + json.length + body.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  out.set(body, 8 + json.length);
  return out;
}

test("bad input: signed delta manifests", async (t) => {
  t.timeout(FULL ? 1_800_000 : 900_000);
  const signed = await manifestFor(goodBf16);
  const wire = serializeSignedManifest(signed);
  // The hub's reading of a manifest: strict parse, then the signature under the learner's bound key.
  const check = async (bytes: Uint8Array): Promise<Outcome> => {
    verifyManifestSignature(parseSignedManifest(bytes), learner.publicKey);
    return accepted("the manifest verified");
  };
  t.deepEqual(await check(wire), accepted("the manifest verified"));
  const text = new TextDecoder().decode(wire);
  // One-character edits reach the signature too, its last character included: its 4 spare bits
  // must be zero (verifyManifestSignature refuses a second spelling of the same signature).
  const sigBytes = Buffer.from(signed.signature, "base64url");
  const invalidFields: [keyof DeltaManifest, unknown][] = [
    ["version", 2],
    ["round", -1],

    ["tokens", 0],
    ["tokens", -5],
    ["size", -1],
    ["encoding", "int3"],
    ["learnerKey", "ed25519:AAAA"],
    ["baseModel", "md5:abc"],
    ["createdAt", "yesterday"],
    ["run", ""],
    ["region", "Region A!"],
    ["tensors", [{ name: "x", dtype: "F32", shape: [1], sha256: "zz" }]],
    ["tensors", "none"],
  ];
  type MInput = { what: string; bytes: Uint8Array };
  const enc = (s: string) => new TextEncoder().encode(s);
  const inputs = sample<MInput>(
    fc.oneof(
      {
        weight: 4,
        arbitrary: fc
          .record({ at: fc.nat({ max: text.length - 1 }), code: fc.integer({ min: 0x20, max: 0x7e }) })
          .filter(({ at, code }) => text.charCodeAt(at) !== code)
          .map(({ at, code }) => ({
            what: `char ${at} -> ${String.fromCharCode(code)}`,
            bytes: enc(text.slice(0, at) + String.fromCharCode(code) + text.slice(at + 1)),
          })),
      },
      {
        weight: 1,
        arbitrary: byteFlip(sigBytes.length).map(({ at, xor }) => ({
          what: `signature byte ${at}`,
          bytes: serializeSignedManifest({
            ...signed,
            signature: Buffer.from(flipAt(sigBytes, at, xor)).toString("base64url"),
          }),
        })),
      },
      {
        weight: 1,
        arbitrary: fc
          .nat({ max: wire.length - 1 })
          .map((cut) => ({ what: `cut at ${cut}`, bytes: wire.slice(0, cut) })),
      },
      {
        // Invalid field values, validly signed by the learner: refused for what they say.
        weight: 2,
        arbitrary: fc.constantFrom(...invalidFields).map(([field, value]) => {
          const manifest = { ...signed.manifest, [field]: value };
          const signature = sign(
            null,
            Buffer.from(SIGNING_CONTEXT + canonicalJson(manifest), "utf8"),
            learner.privateKey,
          ).toString("base64url");
          return {
            what: `${field}=${JSON.stringify(value)}`,
            bytes: enc(JSON.stringify({ manifest, signature })),
          };
        }),
      },
      {
        // A well-formed manifest signed by another key (it names that key, or the learner's).
        weight: 1,
        arbitrary: fc.boolean().map((namesImpostor) => {
          const manifest = namesImpostor
            ? { ...signed.manifest, learnerKey: publicKeyField(impostor.publicKey) }
            : signed.manifest;
          return {
            what: namesImpostor ? "impostor's key" : "signed by the impostor",
            bytes: serializeSignedManifest(signManifest(manifest, impostor.privateKey)),
          };
        }),
      },
      {
        weight: 1,
        arbitrary: fc
          .oneof(
            fc.string({ maxLength: 200 }).map(enc),
            fc.uint8Array({ maxLength: 400 }),
            fc.jsonValue({ maxDepth: 3 }).map((v) => enc(JSON.stringify(v))),
            fc
              .dictionary(fc.constantFrom("manifest", "signature", "extra"), fc.jsonValue({ maxDepth: 2 }))
              .map((v) => enc(JSON.stringify(v))),
          )
          .map((bytes) => ({ what: "garbage", bytes })),
      },
    ),
    10,
    250,
  );
  // Found by this suite: another spelling of the same signature (its last character's spare bits
  // set) verified.
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  const respelled = [1, 2, 4, 8].map((bit) => {
    const last = alphabet[alphabet.indexOf(signed.signature.at(-1) as string) ^ bit] as string;
    return {
      what: `signature respelled (last character ${last})`,
      bytes: serializeSignedManifest({ ...signed, signature: signed.signature.slice(0, -1) + last }),
    };
  });
  for (const r of respelled) await t.throwsAsync(check(r.bytes), { message: /^ManifestSignatureInvalid: / });
  await runPath(
    t,
    new Tally("delta: signed manifest", "parseSignedManifest + verifyManifestSignature"),
    [...respelled, ...inputs],
    (i) => `${i.what}: ${JSON.stringify(new TextDecoder().decode(i.bytes).slice(0, 300))}`,
    (i) => check(i.bytes),
  );
});

test("bad input: deltas on the hub's path into the aggregate", async (t) => {
  t.timeout(FULL ? 1_800_000 : 900_000);
  const MAX_BYTES = 1 << 20;
  // The hub's call for a round's deltas (operator/hub/round-coordinator.ts, #meanUpdate): the
  // delta under test between two good ones of other regions, all three in one pass.
  const companions = await Promise.all(
    ["region-b", "region-c"].map(async (region) => ({
      file: goodFp32,
      signed: await manifestFor(goodFp32, learner, { region, learner: `learner-0.${region}` }),
    })),
  );
  const delivery = (signed: SignedManifest, bytes: Uint8Array, key: KeyObject): VerifiedDelivery => ({
    signed,
    trustedKey: key,
    open: () => chunk(bytes),
    read: { expectedTotalBytes: signed.manifest.size },
  });
  const add = async (signed: SignedManifest, bytes: Uint8Array, key: KeyObject = learner.publicKey) => {
    const acc = new Accumulator(LAYOUT);
    const [before, after] = companions as [
      { file: Uint8Array; signed: SignedManifest },
      (typeof companions)[0],
    ];
    try {
      await addVerifiedDeltas(
        acc,
        [
          delivery(before.signed, before.file, learner.publicKey),
          delivery(signed, bytes, key),
          delivery(after.signed, after.file, learner.publicKey),
        ],
        { per: "region", read: { maxDataBytes: MAX_BYTES } },
      );
      if (acc.count !== 3) throw new Error(`${acc.count} of 3 deltas were accepted without an error`);
      return accepted("added to the aggregate");
    } catch (err) {
      // The group is re-read one delta at a time to name the one at fault: the one before counts.
      if (acc.count !== 1) {
        throw new Error(`refused, but ${acc.count} deltas were accepted instead of the one before it`, {
          cause: err,
        });
      }
      throw err;
    } finally {
      await acc.close();
    }
  };
  const goods = await Promise.all(
    [goodFp32, goodBf16, goodInt8].map(async (file) => ({ file, signed: await manifestFor(file) })),
  );
  for (const g of goods) t.deepEqual(await add(g.signed, g.file), accepted("added to the aggregate"));

  // Validly signed deltas that must not enter the aggregate: a NaN or ±Inf, a tensor of the
  // wrong shape, a tensor too many or too few, more data than the hub accepts.
  const signedBad: { what: string; file: Uint8Array }[] = [];
  for (const [k, v] of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY].entries()) {
    signedBad.push({
      what: `signed ${v}`,
      file: await rawDelta(
        LAYOUT.map((t, i) => {
          const vals = values(i + 1, elements(t.shape));
          if (i === k) vals[0] = v;
          return { ...t, values: vals };
        }),
      ),
    });
  }
  signedBad.push(
    {
      what: "wrong shape",
      file: await deltaFile(
        "fp32",
        LAYOUT.map((l, i) => (i === 1 ? { ...l, shape: [12, 24] } : l)),
      ),
    },
    { what: "tensor missing", file: await deltaFile("bf16", LAYOUT.slice(1)) },
    {
      what: "tensor unexpected",
      file: await deltaFile("fp32", [...LAYOUT, { name: "lm_head.weight", shape: [4, 12] }]),
    },
    {
      what: "oversized",
      file: await deltaFile(
        "fp32",
        LAYOUT.map((l, i) => (i === 0 ? { ...l, shape: [16, 20_000] } : l)),
      ),
    },
  );
  const signedBadSigned = await Promise.all(
    signedBad.map(async (b) => ({ ...b, signed: await manifestFor(b.file) })),
  );

  type DInput = { what: string; g: number; bytes?: Uint8Array; signed?: SignedManifest; key?: KeyObject };
  const flips = fc.nat({ max: goods.length - 1 }).chain((g) => {
    const file = (goods[g] as { file: Uint8Array }).file;
    const headerEnd = headerLength(file);
    return byteFlip(file.length)
      .filter(({ at, xor }) => {
        // A header byte changed into JSON the reader sees as the same header (its padding
        // spaces turned into another whitespace) changes nothing the learner signed.
        if (at < 8 || at >= headerEnd) return true;
        const before = Buffer.from(file.subarray(8, headerEnd)).toString("latin1");
        const after = Buffer.from(flipAt(file, at, xor).subarray(8, headerEnd)).toString("latin1");
        try {
          return JSON.stringify(JSON.parse(after)) !== JSON.stringify(JSON.parse(before));
        } catch {
          return true;
        }
      })
      .map(({ at, xor }): DInput => ({ what: `byte ${at} ^ ${xor}`, g, bytes: flipAt(file, at, xor) }));
  });
  const inputs = sample<DInput>(
    fc.oneof(
      { weight: 6, arbitrary: flips },
      {
        weight: 2,
        arbitrary: fc.nat({ max: goods.length - 1 }).chain((g) =>
          fc.nat({ max: (goods[g] as { file: Uint8Array }).file.length - 1 }).map(
            (cut): DInput => ({
              what: `cut at ${cut}`,
              g,
              bytes: (goods[g] as { file: Uint8Array }).file.slice(0, cut),
            }),
          ),
        ),
      },
      {
        weight: 1,
        arbitrary: fc
          .record({
            g: fc.nat({ max: goods.length - 1 }),
            tail: fc.uint8Array({ minLength: 1, maxLength: 32 }),
          })
          .map(
            ({ g, tail }): DInput => ({
              what: "bytes appended",
              g,
              bytes: new Uint8Array([...(goods[g] as { file: Uint8Array }).file, ...tail]),
            }),
          ),
      },
      {
        // Another genuine delta's bytes under this manifest.
        weight: 1,
        arbitrary: fc
          .tuple(fc.nat({ max: goods.length - 1 }), fc.nat({ max: goods.length - 1 }))
          .filter(([a, b]) => a !== b)
          .map(
            ([a, b]): DInput => ({
              what: `bytes of delta ${b}`,
              g: a,
              bytes: (goods[b] as { file: Uint8Array }).file,
            }),
          ),
      },
      {
        // The manifest changed after signing (tokens, round, a digest) or checked under another key.
        weight: 2,
        arbitrary: fc
          .record({
            g: fc.nat({ max: goods.length - 1 }),
            edit: fc.constantFrom<[string, (m: DeltaManifest) => DeltaManifest]>(
              ["tokens raised", (m) => ({ ...m, tokens: m.tokens * 10 })],
              ["round moved", (m) => ({ ...m, round: m.round + 1 })],
              ["region moved", (m) => ({ ...m, region: "region-b" })],
              [
                "digest swapped",
                (m) => ({
                  ...m,
                  tensors: m.tensors.map((x, i) => (i === 0 ? { ...x, sha256: "0".repeat(64) } : x)),
                }),
              ],
            ),
          })
          .map(({ g, edit: [what, edit] }): DInput => {
            const s = (goods[g] as { signed: SignedManifest }).signed;
            return { what, g, signed: { ...s, manifest: edit(s.manifest) } };
          }),
      },
      {
        weight: 1,
        arbitrary: fc
          .nat({ max: goods.length - 1 })
          .map((g): DInput => ({ what: "checked under another learner's key", g, key: impostor.publicKey })),
      },
      {
        weight: 2,
        arbitrary: fc
          .nat({ max: signedBadSigned.length - 1 })
          .map((b): DInput => ({ what: (signedBadSigned[b] as { what: string }).what, g: -1 - b })),
      },
      {
        weight: 1,
        arbitrary: fc
          .record({ g: fc.nat({ max: goods.length - 1 }), bytes: fc.uint8Array({ maxLength: 2000 }) })
          .map(({ g, bytes }): DInput => ({ what: "garbage", g, bytes })),
      },
    ),
    11,
    250,
  );
  await runPath(
    t,
    new Tally(
      "delta: hub verification into the aggregate",
      "addVerifiedDeltas (signed manifest, bound key; between two good deltas)",
    ),
    inputs,
    (i) => `${i.what} (delta ${i.g})`,
    (i) => {
      if (i.g < 0) {
        const b = signedBadSigned[-1 - i.g] as { file: Uint8Array; signed: SignedManifest };
        return add(b.signed, b.file);
      }
      const g = goods[i.g] as { file: Uint8Array; signed: SignedManifest };
      return add(i.signed ?? g.signed, i.bytes ?? g.file, i.key);
    },
  );
});

test("bad input: delta objects arriving in the hub's mirror", async (t) => {
  t.timeout(FULL ? 1_800_000 : 900_000);
  // The hub's first look at an object in a region's mirror (watchRegionDeltas, listRegionDeltas):
  // its name, the signed manifest in its metadata and its size must agree with where it sits.
  // (The manifest's signature is checked later, on the path above; so here only inputs wrong
  // whatever the signature says are generated.)
  const signed = await manifestFor(goodBf16);
  const text = new TextDecoder().decode(serializeSignedManifest(signed));
  const name = "team-a/llama-eu/round-7/learner-0.region-a";
  type Info = Parameters<typeof describeArrival>[1];
  const info = (over: Record<string, unknown> = {}): Info =>
    ({
      name,
      metadata: { [MANIFEST_METADATA]: text },
      size: signed.manifest.size,
      revision: 5,
      bucket: "sovereign-deltas-region-a",
      nuid: "NUID0000000000000000000",
      chunks: 1,
      digest: "SHA-256=",
      deleted: false,
      mtime: "2026-11-24T10:00:00Z",
      ...over,
    }) as Info;
  const judge = async (region: string, i: Info): Promise<Outcome> => {
    describeArrival(region, i);
    return accepted("taken as a delta of its address");
  };
  t.deepEqual(await judge("region-a", info()), accepted("taken as a delta of its address"));
  // Names that are malformed or name another namespace, run, round or learner than the signed
  // manifest's.
  const sameAddress = /^team-a\/llama-eu\/round-7\/learner-0\.region-a$/;
  type AInput = { what: string; region: string; info: Info };
  const inputs = sample<AInput>(
    fc.oneof(
      {
        weight: 3,
        arbitrary: fc
          .oneof(
            fc.string({ maxLength: 60 }),
            fc
              .tuple(
                fc.constantFrom("team-a", "Team-A", "", "a/b"),
                fc.constantFrom("llama-eu", "llama-us", "LLAMA", ""),
                fc.constantFrom("round-7", "round-8", "round-07x", "round--1", "7"),
                fc.constantFrom("learner-0.region-a", "learner-1.region-a", "learner-0.region-b", "", "x/y"),
              )
              .map((parts) => parts.join("/")),
          )
          .filter((n) => !sameAddress.test(n))
          .map((n) => ({ what: `name ${JSON.stringify(n)}`, region: "region-a", info: info({ name: n }) })),
      },
      {
        weight: 1,
        arbitrary: fc
          .constantFrom("region-b", "region-c", "Region-A", "")
          .map((region) => ({ what: `in ${region}'s mirror`, region, info: info() })),
      },
      {
        weight: 1,
        arbitrary: fc
          .oneof(fc.integer({ min: 0, max: 1 << 30 }), fc.constant(-1))
          .filter((size) => size !== signed.manifest.size)
          .map((size) => ({ what: `size ${size}`, region: "region-a", info: info({ size }) })),
      },
      {
        weight: 3,
        arbitrary: fc
          .oneof(
            fc.constant(undefined),
            fc.string({ maxLength: 200 }),
            fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)),
            fc.nat({ max: text.length - 1 }).map((cut) => text.slice(0, cut)),
          )
          .map((m) => ({
            what: `manifest ${JSON.stringify(m)?.slice(0, 80)}`,
            region: "region-a",
            info: info({ metadata: m === undefined ? {} : { [MANIFEST_METADATA]: m } }),
          })),
      },
    ),
    16,
    250,
  );
  await runPath(
    t,
    new Tally(
      "delta: object arriving in the hub's mirror",
      "describeArrival (name, manifest metadata, size)",
    ),
    inputs,
    (i) => i.what,
    (i) => judge(i.region, i.info),
  );
});

function* chunk(bytes: Uint8Array): Generator<Uint8Array> {
  for (let at = 0; at < bytes.length; at += 997) yield bytes.subarray(at, at + 997);
}

// ---------------------------------------------------------------------------------------------
// 3. Audit exports, through the offline verifier a regulator runs.

test("bad input: audit exports", async (t) => {
  t.timeout(FULL ? 1_800_000 : 900_000);
  const { lines } = await buildLog(12, { checkpointEveryEntries: 4 });
  const text = `${lines.join("\n")}\n`;
  const verify = async (input: string): Promise<Outcome> => {
    const report = verifyAuditExport(input, { trustedKeys: trusted, at: verifyAt });
    if (report.ok) return accepted(`ok, ${report.entriesVerified} entries`);
    const reason = report.failure?.reason;
    if (!reason || !ALL_AUDIT_REASONS.includes(reason))
      return crashed(`failure without a reason: ${JSON.stringify(report.failure)}`);
    return refused(reason);
  };
  t.deepEqual((await verify(text)).kind, "accepted");
  const inputs = sample(
    fc.oneof(
      {
        // One character changed anywhere but the final newline (every line is hashed and chained).
        weight: 5,
        arbitrary: fc
          .record({ at: fc.nat({ max: text.length - 2 }), code: fc.integer({ min: 1, max: 0xffff }) })
          .filter(({ at, code }) => text.charCodeAt(at) !== code && !(code >= 0xd800 && code <= 0xdfff))
          .map(({ at, code }) => text.slice(0, at) + String.fromCharCode(code) + text.slice(at + 1)),
      },
      {
        // Cut mid-line (a cut at a line end, before or after its newline, is a shorter, intact export).
        weight: 1,
        arbitrary: fc
          .integer({ min: 1, max: text.length - 1 })
          .filter((cut) => text[cut - 1] !== "\n" && text[cut] !== "\n")
          .map((cut) => text.slice(0, cut)),
      },
      {
        // A line other than the last removed, repeated or moved.
        weight: 2,
        arbitrary: fc
          .record({
            i: fc.nat({ max: lines.length - 2 }),
            op: fc.constantFrom("drop", "repeat", "swap"),
          })
          .map(({ i, op }) => {
            const copy = [...lines];
            if (op === "drop") copy.splice(i, 1);
            else if (op === "repeat") copy.splice(i, 0, lines[i] as string);
            else [copy[i], copy[i + 1]] = [copy[i + 1] as string, copy[i] as string];
            return `${copy.join("\n")}\n`;
          }),
      },
      {
        weight: 2,
        arbitrary: fc
          .record({
            at: fc.nat({ max: lines.length - 1 }),
            junk: fc.oneof(fc.string({ minLength: 1, maxLength: 80 }), fc.json({ maxDepth: 2 })),
          })
          .filter(({ junk }) => junk.trim() !== "" && !junk.includes("\n"))
          .map(({ at, junk }) => `${[...lines.slice(0, at), junk, ...lines.slice(at)].join("\n")}\n`),
      },
      { weight: 1, arbitrary: fc.string({ unit: "binary", maxLength: 400 }) },
    ),
    12,
    300,
  );
  await runPath(
    t,
    new Tally("audit: export lines", "verifyAuditExport"),
    inputs,
    (s) => JSON.stringify(s.slice(0, 300)),
    verify,
  );
});

// ---------------------------------------------------------------------------------------------
// 4. The node attestation agent's HTTP request body, to a real listener of agentHandler.

/**
 * One POST on a connection of its own, as the member makes one challenge per node: a refused
 * oversized body makes the agent close its connection, which must not fail the next request.
 * An answer that arrives before the whole body is sent counts (the agent refuses early).
 */
function postOnce(url: string, body: Buffer): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    let answered = false;
    const req = request(
      url,
      {
        method: "POST",
        agent: false,
        headers: { "content-type": "application/json", "content-length": body.length },
      },
      (res) => {
        answered = true;
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () =>
          resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString("utf8") }),
        );
        res.on("error", reject);
      },
    );
    req.on("error", (err) => {
      if (!answered) reject(err);
    });
    req.end(body);
  });
}

test("bad input: attestation agent requests", async (t) => {
  t.timeout(FULL ? 1_800_000 : 900_000);
  let collected = 0;
  const server: Server = createServer(
    agentHandler({
      node: "gpu-node-0",
      collect: async () => {
        collected++;
        return [];
      },
      timeoutMs: 5_000,
    }),
  );
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}${EVIDENCE_PATH}`;
  const post = async (body: Uint8Array | string): Promise<Outcome> => {
    const before = collected;
    const res = await postOnce(url, typeof body === "string" ? Buffer.from(body, "utf8") : Buffer.from(body));
    const answer = res.text;
    if (collected !== before || res.status === 200) return accepted(`HTTP ${res.status}, collector called`);
    let reason: unknown;
    try {
      reason = (JSON.parse(answer) as { reason?: unknown }).reason;
    } catch {
      return crashed(`HTTP ${res.status}, not JSON: ${answer.slice(0, 200)}`);
    }
    if (res.status >= 400 && res.status < 500 && reason === "BadRequest")
      return refused(`BadRequest (${res.status})`);
    return crashed(`HTTP ${res.status}: ${answer.slice(0, 200)}`);
  };
  const good = { apiVersion: AGENT_API_VERSION, nonce: NONCE, gpus: 8, node: "gpu-node-0" };
  t.is((await post(JSON.stringify(good))).kind, "accepted");
  const goodText = JSON.stringify(good);
  const notHex32 = fc.string({ maxLength: 70 }).filter((s) => !/^[0-9a-f]{64}$/.test(s));
  const inputs = sample<Uint8Array | string>(
    fc.oneof(
      {
        weight: 3,
        arbitrary: fc
          .oneof(
            fc.record({ apiVersion: fc.string({ maxLength: 40 }).filter((s) => s !== AGENT_API_VERSION) }),
            fc.record({ apiVersion: fc.jsonValue({ maxDepth: 1 }).filter((v) => v !== AGENT_API_VERSION) }),
            fc.record({
              nonce: fc.oneof(
                notHex32,
                fc.constant(NONCE.toUpperCase()),
                fc.jsonValue({ maxDepth: 1 }).filter((v) => typeof v !== "string"),
              ),
            }),
            fc.record({
              gpus: fc.oneof(
                fc.integer({ min: 65, max: 2 ** 31 }),
                fc.integer({ min: -(2 ** 31), max: -1 }),
                fc.double({ noInteger: true }),
                fc.constantFrom(2 ** 53, 1e300, "8", true, null, [8], { n: 8 }),
              ),
            }),
          )
          .map((over) => JSON.stringify({ ...good, ...over })),
      },
      {
        weight: 1,
        arbitrary: fc
          .constantFrom("apiVersion", "nonce", "gpus")
          .map((drop) =>
            JSON.stringify(Object.fromEntries(Object.entries(good).filter(([k]) => k !== drop))),
          ),
      },
      { weight: 1, arbitrary: fc.nat({ max: goodText.length - 1 }).map((cut) => goodText.slice(0, cut)) },
      {
        weight: 1,
        arbitrary: fc
          .jsonValue({ maxDepth: 3 })
          .filter((v) => v === null || typeof v !== "object" || Array.isArray(v))
          .map((v) => JSON.stringify(v)),
      },
      { weight: 1, arbitrary: fc.uint8Array({ maxLength: 600 }) },
      { weight: 1, arbitrary: fc.string({ unit: "binary", maxLength: 300 }) },
      {
        // Larger than the agent reads (4 KiB): refused while it arrives.
        weight: 1,
        arbitrary: fc
          .integer({ min: 4097, max: 200_000 })
          .map((n) => JSON.stringify({ ...good, pad: "x".repeat(n) })),
      },
    ),
    13,
    300,
  );
  await runPath(
    t,
    new Tally("attestation agent: request body", "agentHandler over HTTP"),
    inputs,
    (b) => (typeof b === "string" ? JSON.stringify(b.slice(0, 300)) : hexOf(b, 150)),
    post,
  );
});

// ---------------------------------------------------------------------------------------------
// 5. Custom resources, sent to the testbed hub's kube-apiserver (server-side dry run: nothing is
//    stored) with strict field validation, as kubectl sends them.
//
// "Accepted" for a CR means: the API server's schema and CEL rules let the object through AND
// the operator's own parser for the kind (crds/validate.ts, the TypeScript twin of the schema
// and the CEL rules, which the member runs on AttestationPolicy, SovereignNode and RegionWork)
// finds nothing wrong either. "Refused" is a rejection by either, the API server first; the
// reason recorded is the API server's cause (e.g. FieldValueInvalid) or the parser's code.
// Every generated object is invalid by construction: a value of the wrong type, outside its
// enum, bounds, length or pattern, a required field without a default removed, an unknown
// field, or one of the shared invalid cases (test/crds/invalid-cases.ts) that break a CEL rule.

// biome-ignore lint/suspicious/noExplicitAny: specs are edited as plain JSON
type Json = any;

function schemaAt(root: Schema, path: readonly (string | number)[]): Schema | undefined {
  let s: Schema | undefined = root;
  for (const key of path) {
    if (!s) return undefined;
    s = typeof key === "number" ? s.items : (s.properties?.[key] ?? s.additionalProperties);
  }
  return s;
}

function valuePaths(value: Json, prefix: (string | number)[] = []): (string | number)[][] {
  if (Array.isArray(value))
    return value.flatMap((item, i) => [[...prefix, i], ...valuePaths(item, [...prefix, i])]);
  if (value !== null && typeof value === "object")
    return Object.entries(value).flatMap(([k, v]) => [[...prefix, k], ...valuePaths(v, [...prefix, k])]);
  return [];
}

function schemaPaths(schema: Schema, prefix: string[] = []): string[][] {
  return Object.entries(schema.properties ?? {}).flatMap(([k, child]) => [
    [...prefix, k],
    ...schemaPaths(child, [...prefix, k]),
  ]);
}

function setAt(root: Json, path: readonly (string | number)[], value: Json): void {
  let node = root;
  for (const key of path.slice(0, -1)) {
    if (node[key] === null || typeof node[key] !== "object") node[key] = {};
    node = node[key];
  }
  node[path[path.length - 1] as string] = value;
}

function getAt(root: Json, path: readonly (string | number)[]): Json {
  return path.reduce((node, key) => node?.[key], root);
}

/** Values no schema of this node admits, whatever the rest of the object holds. */
function invalidValues(s: Schema, current: Json): fc.Arbitrary<Json> | undefined {
  const options: fc.Arbitrary<Json>[] = [];
  const wrongTypes: Record<string, Json[]> = {
    string: [12345, true, { a: 1 }, ["x"]],
    integer: ["abc", true, { a: 1 }, [1], 1.5],
    number: ["abc", true, { a: 1 }, [1]],
    boolean: ["yes", 1, { a: 1 }, [true]],
    object: ["x", 7, [1], true],
    array: ["x", 7, { a: 1 }, true],
  };
  if (s["x-kubernetes-int-or-string"]) options.push(fc.constantFrom(true, { a: 1 }, [1]));
  else if (s.type) options.push(fc.constantFrom(...(wrongTypes[s.type] ?? [])));
  if (s.enum && s.type === "string")
    options.push(fc.string({ maxLength: 20 }).filter((v) => !(s.enum as readonly unknown[]).includes(v)));
  if (s.type === "integer" || s.type === "number") {
    const step = s.type === "integer" ? 1 : 0.5;
    const { minimum, maximum } = s;
    if (minimum !== undefined)
      options.push(
        fc.integer({ min: 0, max: 1000 }).map((k) => minimum - (s.exclusiveMinimum ? 0 : step) - k),
      );
    if (maximum !== undefined)
      options.push(
        fc.integer({ min: 0, max: 1000 }).map((k) => maximum + (s.exclusiveMaximum ? 0 : step) + k),
      );
  }
  if (s.type === "string") {
    const { maxLength } = s;
    if (maxLength !== undefined) options.push(fc.nat(20).map((k) => "a".repeat(maxLength + 1 + k)));
    if (s.minLength !== undefined && s.minLength > 0) options.push(fc.constant(""));
    if (s.pattern) {
      const re = new RegExp(s.pattern);
      options.push(fc.string({ maxLength: 20 }).filter((v) => !re.test(v)));
    }
  }
  if (s.type === "array" && Array.isArray(current) && current.length > 0) {
    if (s.maxItems !== undefined)
      options.push(fc.constant(Array.from({ length: s.maxItems + 1 }, () => structuredClone(current[0]))));
  }
  if (s.type === "array" && s.minItems !== undefined && s.minItems > 0) options.push(fc.constant([]));
  return options.length > 0 ? fc.oneof(...options) : undefined;
}

function badSpecs(example: ExampleObject, schema: Schema): fc.Arbitrary<{ what: string; spec: Json }> {
  const spec = example.spec;
  const present = valuePaths(spec);
  const candidates = [...present, ...schemaPaths(schema).filter((p) => getAt(spec, p) === undefined)];
  const edits = candidates.flatMap((path) => {
    const s = schemaAt(schema, path);
    const arb = s ? invalidValues(s, getAt(spec, path)) : undefined;
    return arb ? [arb.map((value) => ({ path, value }))] : [];
  });
  const setBad = fc.oneof(...edits).map(({ path, value }) => {
    const copy = structuredClone(spec);
    setAt(copy, path, value);
    return { what: `${path.join(".")} = ${JSON.stringify(value).slice(0, 60)}`, spec: copy };
  });
  // Required fields without a default that the example holds.
  const requiredPaths = [[] as (string | number)[], ...present].flatMap((path) => {
    const s = schemaAt(schema, path);
    const node = getAt(spec, path);
    if (!s?.required || node === null || typeof node !== "object" || Array.isArray(node)) return [];
    return s.required
      .filter((k) => node[k] !== undefined && s.properties?.[k]?.default === undefined)
      .map((k) => [...path, k]);
  });
  const dropRequired = () =>
    fc.constantFrom(...requiredPaths).map((path) => {
      const copy = structuredClone(spec);
      delete getAt(copy, path.slice(0, -1))[path[path.length - 1] as string];
      return { what: `without ${path.join(".")}`, spec: copy };
    });
  // Objects with declared properties and no additionalProperties reject unknown fields.
  const closedObjects = [[] as (string | number)[], ...present].filter((path) => {
    const s = schemaAt(schema, path);
    const node = getAt(spec, path);
    return (
      s?.properties && !s.additionalProperties && node && typeof node === "object" && !Array.isArray(node)
    );
  });
  const unknownField = () =>
    fc
      .record({ path: fc.constantFrom(...closedObjects), value: fc.jsonValue({ maxDepth: 1 }) })
      .map(({ path, value }) => {
        const copy = structuredClone(spec);
        const node = path.length === 0 ? copy : getAt(copy, path);
        node.unexpectedField = value ?? 1;
        return { what: `unknown field under ${path.join(".") || "spec"}`, spec: copy };
      });
  return fc.oneof(
    { weight: 6, arbitrary: setBad },
    ...(requiredPaths.length > 0 ? [{ weight: 1, arbitrary: dropRequired() }] : []),
    ...(closedObjects.length > 0 ? [{ weight: 1, arbitrary: unknownField() }] : []),
  );
}

test("bad input: custom resources on the hub API server", async (t) => {
  t.timeout(FULL ? 3_600_000 : 900_000);
  const tb = await useTestbed();
  const hub = tb.kubeConfig(HUB);
  await installCrds(hub);
  const ns = await createNamespace(tb, HUB);
  t.teardown(() => ns.remove());

  const examples = exampleFiles().map((file) => {
    const example = loadExample(file);
    const definition = resourceDefinitions.find((d) => d.kind === example.kind);
    if (!definition) throw new Error(`no definition for ${example.kind}`);
    return { file, example, schema: definition.spec };
  });
  const judge = async (example: ExampleObject, spec: Json): Promise<Outcome> => {
    const object = { ...example, metadata: { name: `bad-${example.kind.toLowerCase()}` }, spec };
    const outcome = await submit(hub, object, { namespace: ns.name, dryRun: true });
    if (!outcome.accepted) {
      if (outcome.code >= 500 || outcome.code < 400)
        return crashed(`HTTP ${outcome.code} ${outcome.reason}: ${outcome.message.slice(0, 300)}`);
      const causes = [...new Set(outcome.causes.map((c) => c.reason).filter((r): r is string => !!r))];
      return refused(...(causes.length > 0 ? causes : [outcome.reason || `HTTP ${outcome.code}`]));
    }
    const parsed = specParsers[example.kind](structuredClone(spec));
    if (parsed.ok) return accepted("the API server and the operator's parser both accepted it");
    return refused(...parsed.errors.map((e) => `parser:${e.reason}`));
  };
  for (const { example } of examples)
    t.is((await judge(example, example.spec)).kind, "accepted", example.kind);

  type CrInput = { file: string; what: string; spec: Json };
  const random = sample<CrInput>(
    fc.oneof(
      ...examples.map(({ file, example, schema }) => badSpecs(example, schema).map((b) => ({ file, ...b }))),
    ),
    14,
    250,
  );
  const shared: CrInput[] = invalidCases
    .filter((c) => !c.update)
    .map((c) => {
      const spec = structuredClone(loadExample(c.example).spec);
      c.break(spec);
      return { file: c.example, what: `invalid case: ${c.name}`, spec };
    });
  const byFile = new Map(examples.map((e) => [e.file, e.example]));
  await runPath(
    t,
    new Tally(
      "CRs: FederatedRun, SovereignNode, AttestationPolicy, RegionWork",
      "hub kube-apiserver (dry run) + crds/validate.ts",
    ),
    [...shared, ...random],
    (i) => `${i.file}: ${i.what}`,
    (i) => judge(byFile.get(i.file) as ExampleObject, i.spec),
  );
});

// ---------------------------------------------------------------------------------------------
// 6. The testbed's evidence fault annotation, read by a running member's TestbedEvidenceSource
//    from a real node object of a region cluster.

test("bad input: testbed evidence fault annotation", async (t) => {
  t.timeout(FULL ? 1_800_000 : 900_000);
  const tb = await useTestbed();
  const region = tb.regions[0] as string;
  const kc = tb.kubeConfig(region);
  const core = kc.makeApiClient(CoreV1Api);
  // A node of its own without GPU labels: no member adopts it or rewrites its annotations.
  const node = uniqueName("fault-node");
  await core.createNode({ body: { metadata: { name: node } } });
  t.teardown(async () => {
    await core.deleteNode({ name: node }).catch(() => undefined);
  });
  const source = new TestbedEvidenceSource({ faultsFromNodes: kc });
  const collect = async (value: string): Promise<Outcome> => {
    await core.patchNode(
      { name: node, body: { metadata: { annotations: { [EVIDENCE_FAULT_ANNOTATION]: value } } } },
      setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
    );
    await source.collect({ node, nonce: new Uint8Array(32).fill(7), gpus: 1 });
    return accepted("evidence minted");
  };
  t.is((await collect("wrong-nonce")).kind, "accepted");
  const known = TESTBED_NODE_FAULTS as readonly string[];
  // At least one name that is no fault, among known ones, blanks and empty items.
  const unknownName = fc
    .oneof(
      fc.string({ minLength: 1, maxLength: 24 }),
      fc.constantFrom(...known).map((f) => f.toUpperCase()),
      fc.constantFrom(...known).map((f) => `${f}s`),
      fc.constantFrom(...known).map((f) => f.replace("-", "_")),
      fc.constantFrom("none", "true", "bad_signature", "wrong nonce", "*"),
    )
    .filter((s) => !s.includes(",") && s.trim() !== "" && !known.includes(s.trim()));
  const values = sample(
    fc
      .tuple(
        fc.array(fc.oneof(fc.constantFrom(...known), fc.constantFrom("", " ")), { maxLength: 3 }),
        unknownName,
        fc.array(fc.constantFrom(...known), { maxLength: 2 }),
      )
      .map(([before, bad, after]) => [...before, bad, ...after].join(",")),
    15,
    60,
  );
  await runPath(
    t,
    new Tally("testbed: evidence fault annotation", "TestbedEvidenceSource.collect (node annotation)"),
    values,
    (v) => JSON.stringify(v),
    collect,
  );
});

test("bad input: NRAS answers as the member reads them", async (t) => {
  t.timeout(FULL ? 1_800_000 : 600_000);
  const dir = await mkdtemp(join(tmpdir(), "bad-nras-"));
  const nras = await TestbedNras.start({ dir: join(dir, "nras") });
  // A server in NRAS's place that answers each evidence POST with the body under test; the keys
  // are the testbed NRAS's own JWKS, so only the answer is bad.
  const pki = await ensureServingPki(join(dir, "fake"), "bad-nras");
  let body: Uint8Array | string = "";
  const fake = createHttpsServer(
    { key: await readFile(pki.serverKey), cert: await readFile(pki.serverCert) },
    (req, res) => {
      req.resume();
      req.on("end", () => res.writeHead(200, { "content-type": "application/json" }).end(body));
    },
  );
  await new Promise<void>((r) => fake.listen(0, "127.0.0.1", r));
  t.teardown(async () => {
    await nras.close();
    await new Promise<void>((r) => fake.close(() => r()));
    await rm(dir, { recursive: true, force: true });
  });
  const settings = {
    url: `https://127.0.0.1:${(fake.address() as AddressInfo).port}/v4/attest/gpu`,
    acceptedIssuers: [nras.issuer],
    jwksUrl: nras.jwksUrl,
  };
  const appraiser = new NrasAppraiser(settings, {
    ca: `${await readFile(pki.caCert, "utf8")}\n${nras.ca}`,
    timeoutMs: 10_000,
  });
  const spec: AttestationPolicySpec = {
    ...TESTBED_POLICY_SPEC,
    verification: { mode: "NRAS", nras: settings },
  };
  const nonce = new Uint8Array(32).fill(9);
  const { devices } = await new TestbedEvidenceSource().collect({ node: "bad-nras-node", nonce, gpus: 2 });
  const feed = async (answer: Uint8Array | string): Promise<Outcome> => {
    body = answer;
    const facts = await appraiser.appraise({ devices, nonce, collectedAt: new Date().toISOString() });
    const verdict = evaluatePolicy(facts, spec, { at: new Date() });
    return verdictOutcome(verdict.passed, verdict.reasons);
  };
  // The genuine answer, appraised by the testbed NRAS for this nonce, passes.
  const good = JSON.stringify(await nras.appraise(JSON.stringify(nrasRequest(devices, nonce))));
  t.is((await feed(good)).kind, "accepted");
  const goodBytes = new Uint8Array(Buffer.from(good));
  const inputs = sample<Uint8Array | string>(
    fc.oneof(
      // One byte of the answer changed: its JSON, a label, a JWS under a signature.
      {
        weight: 4,
        arbitrary: fc
          .tuple(fc.nat({ max: goodBytes.length - 1 }), fc.integer({ min: 1, max: 255 }))
          .map(([at, x]) => {
            const b = goodBytes.slice();
            b[at] = (b[at] as number) ^ x;
            return b;
          }),
      },
      // Cut short anywhere.
      { weight: 2, arbitrary: fc.nat({ max: goodBytes.length - 1 }).map((cut) => good.slice(0, cut)) },
      // A part of the detached EAT removed, or the per-GPU claims of another answer's shape.
      {
        weight: 2,
        arbitrary: fc.constantFrom(0, 1, 2, 3).map((what) => {
          const [overall, perGpu] = JSON.parse(good) as [[string, string], Record<string, string>];
          const gpus = Object.entries(perGpu);
          if (what === 0) return JSON.stringify([overall]);
          if (what === 1) return JSON.stringify([overall, Object.fromEntries(gpus.slice(1))]);
          if (what === 2) return JSON.stringify([overall, {}]);
          return JSON.stringify([["JWT", (gpus[0]?.[1] as string) ?? ""], perGpu]);
        }),
      },
      // Any JSON, any bytes.
      { weight: 2, arbitrary: fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)) },
      { weight: 1, arbitrary: fc.uint8Array({ maxLength: 600 }) },
      { weight: 1, arbitrary: fc.string({ unit: "binary", maxLength: 300 }) },
      // Larger than the member reads (4 MiB).
      {
        weight: 1,
        arbitrary: fc.integer({ min: (4 << 20) + 1, max: (4 << 20) + 4096 }).map((n) => "x".repeat(n)),
      },
    ),
    17,
    150,
  );
  await runPath(
    t,
    new Tally("NRAS: the answer as the member reads it", "NrasAppraiser.appraise over HTTPS"),
    inputs,
    (v) => (typeof v === "string" ? JSON.stringify(v.slice(0, 300)) : hexOf(v)),
    feed,
  );
});

// ---------------------------------------------------------------------------------------------
// Local mode's references as the member fetches them (operator/member/local-references.ts): the
// RIM service's answer and the OCSP responder's, each from a server that answers with the input
// while the other service is the testbed's stand-in; the node supplied only reports and chains.

test("bad input: RIM service and OCSP responder answers as the member reads them", async (t) => {
  t.timeout(FULL ? 1_800_000 : 600_000);
  const dir = await mkdtemp(join(tmpdir(), "bad-references-"));
  const services = await TestbedReferenceServices.start({ dir: join(dir, "services") });
  let body: Uint8Array | string = "";
  // The driver RIM is the one under test; the VBIOS RIM the fake serves is the stand-in's own.
  const rimIds = testbedRimIds(TESTBED_GPU_DEFAULTS);
  let vbiosAnswer: Uint8Array = new Uint8Array(0);
  const fake = await serveHttps(join(dir, "fake"), "bad-references", (req, res) => {
    req.resume();
    req.on("end", () => res.writeHead(200).end(req.url?.endsWith(`/${rimIds.vbios}`) ? vbiosAnswer : body));
  });
  const fakeUrl = `https://127.0.0.1:${(fake.server.address() as AddressInfo).port}`;
  t.teardown(async () => {
    await services.close();
    await new Promise<void>((r) => fake.server.close(() => r()));
    await rm(dir, { recursive: true, force: true });
  });
  const nonce = new Uint8Array(32).fill(11);
  const { devices } = await new TestbedEvidenceSource().collect({
    node: "bad-references-node",
    nonce,
    gpus: 1,
  });
  // What the NVML agent returns: the report, the chain and the CC mode it read; no RIM, no OCSP.
  const agentOnly = devices.map((d) => ({
    report: d.report,
    certificateChain: d.certificateChain,
    rims: [],
    ...(d.declaredCcMode ? { declaredCcMode: d.declaredCcMode } : {}),
  }));
  const fetcherWith = (bad: "rim" | "ocsp") =>
    new ReferenceFetcher(
      {
        fetch: true,
        rimServiceUrl: bad === "rim" ? `${fakeUrl}/v1/rim/` : services.rimServiceUrl,
        ocspUrl: bad === "ocsp" ? `${fakeUrl}/ocsp` : services.ocspUrl,
        requireNonce: true,
      },
      testbedTrustAnchors(),
      { ca: `${fake.ca}\n${services.ca}`, timeoutMs: 10_000 },
    );
  const feed =
    (bad: "rim" | "ocsp") =>
    async (answer: Uint8Array | string): Promise<Outcome> => {
      body = answer;
      // A fresh fetcher each time: a cached RIM must not stand in for the answer under test.
      const facts = await fetcherWith(bad).appraise({
        devices: agentOnly,
        nonce,
        collectedAt: new Date().toISOString(),
      });
      const verdict = evaluatePolicy(facts, TESTBED_POLICY_SPEC, { at: new Date() });
      return verdictOutcome(verdict.passed, verdict.reasons);
    };
  const fetched = async (url: string, init: { method: "GET" | "POST"; body?: Uint8Array }) =>
    (await httpsRequest(url, { ...init, ca: services.ca, timeoutMs: 10_000, maxBytes: 8 << 20 })).body;
  // The genuine RIM answer, from the stand-in, passes: the path can accept.
  vbiosAnswer = new Uint8Array(await fetched(`${services.rimServiceUrl}${rimIds.vbios}`, { method: "GET" }));
  const goodRim = new Uint8Array(
    await fetched(`${services.rimServiceUrl}${rimIds.driver}`, { method: "GET" }),
  );
  t.is((await feed("rim")(goodRim)).kind, "accepted", "the stand-in's own answer passes");
  const mutations = (good: Uint8Array, path: number, n: number) =>
    sample<Uint8Array | string>(
      fc.oneof(
        { weight: 4, arbitrary: byteFlip(good.length).map(({ at, xor }) => flipAt(good, at, xor)) },
        { weight: 2, arbitrary: fc.nat({ max: good.length - 1 }).map((cut) => good.slice(0, cut)) },
        { weight: 2, arbitrary: fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)) },
        { weight: 1, arbitrary: fc.uint8Array({ maxLength: 600 }) },
        {
          weight: 1,
          arbitrary: fc.integer({ min: (4 << 20) + 1, max: (4 << 20) + 4096 }).map((k) => "x".repeat(k)),
        },
      ),
      path,
      n,
    );
  // The RIM answer. The fetcher reads its `id` and `rim` (base64 of the XML) and nothing else,
  // as NVIDIA's verifier reads only `rim`; so the bad answers change those: one character of the
  // id, one character of the XML's text or attribute values (re-encoded), the base64 itself, the
  // body cut short, or anything else in its place.
  const rimAnswer = JSON.parse(Buffer.from(goodRim).toString("utf8")) as { id: string; rim: string };
  const rimXml = Buffer.from(rimAnswer.rim, "base64").toString("utf8");
  const xmlSpots: number[] = [];
  for (const m of rimXml.matchAll(/="([^"]*)"|>([^<]+)</g)) {
    const text = (m[1] ?? m[2]) as string;
    const start = (m.index as number) + (m[1] !== undefined ? 2 : 1);
    for (let k = 0; k < text.length; k++) if (!/\s/.test(text[k] as string)) xmlSpots.push(start + k);
  }
  const ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  const answerWith = (change: Partial<{ id: string; rim: string }>) =>
    JSON.stringify({ ...JSON.parse(Buffer.from(goodRim).toString("utf8")), ...change });
  const rimInputs = sample<Uint8Array | string>(
    fc.oneof(
      {
        weight: 2,
        arbitrary: fc
          .record({ at: fc.nat({ max: rimAnswer.id.length - 1 }), c: fc.constantFrom(...ALNUM) })
          .filter(({ at, c }) => rimAnswer.id[at] !== c)
          .map(({ at, c }) => answerWith({ id: rimAnswer.id.slice(0, at) + c + rimAnswer.id.slice(at + 1) })),
      },
      {
        weight: 5,
        arbitrary: fc
          .record({ spot: fc.constantFrom(...xmlSpots), c: fc.constantFrom(...ALNUM) })
          .filter(({ spot, c }) => rimXml[spot] !== c)
          .map(({ spot, c }) =>
            answerWith({
              rim: Buffer.from(rimXml.slice(0, spot) + c + rimXml.slice(spot + 1), "utf8").toString("base64"),
            }),
          ),
      },
      {
        weight: 1,
        arbitrary: fc
          .nat({ max: rimAnswer.rim.length - 1 })
          .map((cut) =>
            answerWith({ rim: `${rimAnswer.rim.slice(0, cut)}*${rimAnswer.rim.slice(cut + 1)}` }),
          ),
      },
      { weight: 1, arbitrary: fc.nat({ max: goodRim.length - 1 }).map((cut) => goodRim.slice(0, cut)) },
      { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)) },
      { weight: 1, arbitrary: fc.uint8Array({ maxLength: 600 }) },
      {
        weight: 1,
        arbitrary: fc.integer({ min: (4 << 20) + 1, max: (4 << 20) + 4096 }).map((k) => "x".repeat(k)),
      },
    ),
    18,
    60,
  );
  await runPath(
    t,
    new Tally("Local references: the RIM service's answer", "ReferenceFetcher.appraise over HTTPS"),
    rimInputs,
    (v) => (typeof v === "string" ? JSON.stringify(v.slice(0, 300)) : hexOf(v)),
    feed("rim"),
  );
  // The OCSP answer: a genuine one for another request (its CertID and nonce are not ours),
  // mutated or not.
  const [stapled] = devices[0]?.ocspResponses ?? [];
  const goodOcsp = new Uint8Array(
    typeof stapled === "string" ? Buffer.from(stapled, "base64") : (stapled ?? new Uint8Array(1)),
  );
  await runPath(
    t,
    new Tally("Local references: the OCSP responder's answer", "ReferenceFetcher.appraise over HTTPS"),
    [goodOcsp, ...mutations(goodOcsp, 19, 60)],
    (v) => (typeof v === "string" ? JSON.stringify(v.slice(0, 300)) : hexOf(v)),
    feed("ocsp"),
  );
});

// ---------------------------------------------------------------------------------------------

/** The report's row order (tests finish in any order). */
const ROW_ORDER = [
  "evidence: SPDM report",
  "evidence: SPDM report (hex text)",
  "evidence: certificate chain",
  "evidence: RIM XML",
  "evidence: OCSP responses",
  "evidence: NRAS EAT token",
  "NRAS: the answer as the member reads it",
  "Local references: the RIM service's answer",
  "Local references: the OCSP responder's answer",
  "delta: safetensors bytes",
  "delta: signed manifest",
  "delta: object arriving in the hub's mirror",
  "delta: hub verification into the aggregate",
  "audit: export lines",
  "attestation agent: request body",
  "CRs: FederatedRun, SovereignNode, AttestationPolicy, RegionWork",
  "testbed: evidence fault annotation",
];

test.after.always("record the bad-input figures", async () => {
  if (tallies.length === 0) return;
  tallies.sort((a, b) => ROW_ORDER.indexOf(a.path) - ROW_ORDER.indexOf(b.path));
  const rows = tallies.map(
    (x) =>
      `| ${x.path} | \`${x.entry}\` | ${x.tried} | ${x.refused} | ${x.crashed} | ${x.accepted} | ${x.topReasons() || "—"} |`,
  );
  const tried = tallies.reduce((n, x) => n + x.tried, 0);
  await writeChaosResult({
    id: "bad-input",
    scenario: "Bad input and attack suite",
    order: 50,
    markdown: [
      `Bad inputs generated with fast-check (seed ${SEED}; mutations of genuine inputs and arbitrary garbage), each fed to the entry point production uses for that input: ${tried} in all. ` +
        "Refused: said no with a reason code. Crashed: any other exception, an answer in no known shape, or none within " +
        `${INPUT_TIMEOUT_MS / 1000} s. Accepted: taken as good (every input is bad by construction). Target: 0 crashed, 0 accepted.`,
      "",
      "| Input path | Entry point | Tried | Refused | Crashed | Accepted | Top reason codes |",
      "|---|---|---:|---:|---:|---:|---|",
      ...rows,
      "",
      "Not covered: fields of a RIM service answer the fetcher does not read (sha256 and the rest; NVIDIA's verifier reads only rim), " +
        "the agent's answer as the member reads it (parseEvidenceResponse), NRAS's answer at a status " +
        "other than 200 (tested in test/operator/nras-appraiser.test.ts, not fuzzed), RIM edits other than one character, " +
        "reordered or repeated chain certificates, and CR updates (transition rules).",
      "",
      `Produced by \`test/chaos/bad-input.test.ts\` (${FULL ? "full" : "reduced"} form); rerun it alone with \`ava test/chaos/bad-input.test.ts\`.`,
    ],
    badInputs: tallies.map((x) => ({
      path: x.path,
      tried: x.tried,
      crashed: x.crashed,
      accepted: x.accepted,
    })),
  });
});
