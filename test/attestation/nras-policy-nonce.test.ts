import { createHash, randomBytes } from "node:crypto";
import test from "ava";
import { exportJWK, generateKeyPair, type JSONWebKeySet, SignJWT } from "jose";
import type { EvidenceFacts, OcspTarget } from "../../attestation/facts.ts";
import {
  deriveAttestationNonce,
  evaluatePolicy,
  nonceBindsKey,
  Reason,
  verifyNrasToken,
} from "../../attestation/mod.ts";
import type { OcspAnswer } from "../../attestation/ocsp.ts";
import { NONCE_931D, policy, vector, vectorTest } from "./vectors.ts";

const nrasPolicy = (issuer = "https://nras.attestation.nvidia.com") =>
  policy({
    verification: {
      mode: "NRAS",
      nras: {
        url: "https://nras.attestation.nvidia.com/v4/attest/gpu",
        acceptedIssuers: [issuer],
        jwksUrl: "https://nras.attestation.nvidia.com/.well-known/jwks.json",
      },
    },
  });

vectorTest(
  "real NRAS token: structure and claims check, but its key is unknown offline → TokenInvalid",
  async (t) => {
    const facts = await verifyNrasToken({
      token: vector("attestation-sdk/nras-eat/hopperClaimsv3_detached_eat.json"),
      jwks: { keys: [] },
      expectedNonce: NONCE_931D,
      collectedAt: "2025-06-11T00:30:58Z",
    });
    const device = facts.devices[0];
    t.is(device?.driverVersion, "550.90.07");
    t.is(device?.vbiosVersion, "96.00.9F.00.01");
    t.is(
      device?.deviceId,
      "Hopper-53C22BA15E5D68088282DA074ED9FB37AA585771",
      "ueid is the SET A leaf serial",
    );
    const verdict = evaluatePolicy(facts, nrasPolicy(), { at: new Date("2025-06-11T00:40:00Z") });
    t.deepEqual(verdict.reasons, [Reason.TokenInvalid]);
    t.false(
      verdict.devices.flatMap((d) => d.failures).some((f) => /submods/.test(f.message)),
      "submods digest matches",
    );
    const later = evaluatePolicy(facts, nrasPolicy(), { at: new Date("2026-11-24T00:00:00Z") });
    t.true(later.reasons.includes(Reason.TokenExpired));
  },
);

vectorTest("real NRAS staging token is refused by a production issuer policy", async (t) => {
  const facts = await verifyNrasToken({
    token: vector("attestation-sdk/nras-eat/switch_detached_eat.json"),
    jwks: { keys: [] },
    expectedNonce: NONCE_931D,
    collectedAt: "2025-06-28T23:57:40Z",
  });
  const verdict = evaluatePolicy(facts, nrasPolicy(), { at: new Date("2025-06-29T00:00:00Z") });
  t.true(verdict.reasons.includes(Reason.TokenIssuerNotAccepted));
  t.is(facts.devices[0]?.kind, "switch");
});

/** Tokens in NRAS's format signed by a test key, with the real GPU claims as payload. */
async function testToken(mutate: (claims: Record<string, unknown>) => void = () => {}) {
  const { publicKey, privateKey } = await generateKeyPair("ES384", { extractable: true });
  const jwk = { ...(await exportJWK(publicKey)), kid: "test-kid", alg: "ES384" };
  const iat = Math.floor(Date.parse("2025-06-11T00:30:58Z") / 1000);
  const gpu = JSON.parse(vector("attestation-sdk/nras-eat/hopperClaimsv3_decoded.json"))["GPU-0"];
  mutate(gpu);
  const sign = (claims: Record<string, unknown>) =>
    new SignJWT(claims).setProtectedHeader({ alg: "ES384", kid: "test-kid" }).sign(privateKey);
  const gpuJws = await sign(gpu);
  const overall = await sign({
    iss: "https://nras.attestation.nvidia.com",
    "x-nvidia-overall-att-result": true,
    eat_nonce: NONCE_931D,
    iat,
    nbf: iat,
    exp: iat + 3600,
    submods: { "GPU-0": ["DIGEST", ["SHA-256", createHash("sha256").update(gpuJws).digest("hex")]] },
  });
  return {
    token: [["JWT", overall], { "GPU-0": gpuJws }] as unknown,
    jwks: { keys: [jwk] } as JSONWebKeySet,
  };
}

vectorTest(
  "test-key NRAS token: verifies with the policy's JWKS; tampering and bad claims are refused",
  async (t) => {
    const at = new Date("2025-06-11T00:40:00Z");
    const good = await testToken();
    const ok = evaluatePolicy(
      await verifyNrasToken({ ...good, expectedNonce: NONCE_931D, collectedAt: "2025-06-11T00:30:58Z" }),
      nrasPolicy(),
      { at },
    );
    t.true(ok.passed, ok.reasons.join(","));
    const [[, overall], devices] = good.token as [[string, string], Record<string, string>];
    const tamperedGpu = `${(devices["GPU-0"] as string).slice(0, -4)}AAAA`;
    const tampered = await verifyNrasToken({
      token: [["JWT", overall], { "GPU-0": tamperedGpu }],
      jwks: good.jwks,
      expectedNonce: NONCE_931D,
      collectedAt: "2025-06-11T00:30:58Z",
    });
    t.true(evaluatePolicy(tampered, nrasPolicy(), { at }).reasons.includes(Reason.TokenInvalid));
    const wrongNonce = await verifyNrasToken({
      ...good,
      expectedNonce: "11".repeat(32),
      collectedAt: "2025-06-11T00:30:58Z",
    });
    t.true(evaluatePolicy(wrongNonce, nrasPolicy(), { at }).reasons.includes(Reason.NonceMismatch));
    const mismatch = await testToken((c) => {
      c.measres = "fail";
    });
    const bad = await verifyNrasToken({
      ...mismatch,
      expectedNonce: NONCE_931D,
      collectedAt: "2025-06-11T00:30:58Z",
    });
    t.deepEqual(evaluatePolicy(bad, nrasPolicy(), { at }).reasons, [Reason.MeasurementMismatch]);
    const disallowed = evaluatePolicy(
      await verifyNrasToken({ ...good, expectedNonce: NONCE_931D, collectedAt: "2025-06-11T00:30:58Z" }),
      { ...nrasPolicy(), allowedDriverVersions: ["570.1.1"] },
      { at },
    );
    t.deepEqual(disallowed.reasons, [Reason.DriverNotAllowed]);
  },
);

function ocspFacts(answers: Partial<OcspAnswer>[]): EvidenceFacts {
  const base: OcspAnswer = {
    status: "good",
    producedAt: "2025-01-01T00:00:00Z",
    thisUpdate: "2025-01-01T00:00:00Z",
    nextUpdate: "2025-01-02T00:00:00Z",
    responder: "r",
    responderNotBefore: "2024-01-01T00:00:00Z",
    responderNotAfter: "2026-01-01T00:00:00Z",
    nonceEchoed: true,
  };
  const target: OcspTarget = {
    subject: "device-chain[1]",
    commonName: "BROM",
    serial: "01",
    matches: answers.map((a) => ({ kind: "answer", answer: { ...base, ...a } })),
  };
  return {
    mode: "Local",
    expectedNonce: "",
    collectedAt: "2025-01-01T12:00:00Z",
    evidenceDigest: "",
    devices: [
      {
        source: "Local",
        deviceId: "d",
        kind: "gpu",
        architecture: "Hopper",
        declaredCcMode: "on",
        deviceCerts: [],
        rimCerts: [],
        rimIds: [],
        ocspTargets: [target],
        failures: [],
      },
    ],
  };
}

test("OCSP rules: revoked and on hold, unknown, stale, the AllowUnknown grace, nonce", (t) => {
  const at = new Date("2025-01-01T12:00:00Z");
  const judge = (
    answers: Partial<OcspAnswer>[],
    spec = policy({ ocsp: { policy: "RequireGood", requireNonce: true } }),
  ) => evaluatePolicy(ocspFacts(answers), spec, { at }).reasons;
  t.deepEqual(judge([{}]), []);
  t.deepEqual(
    judge([{ status: "revoked", revokedAt: "2024-12-31T00:00:00Z", revocationReason: "keyCompromise" }]),
    [Reason.CertRevoked],
  );
  t.deepEqual(
    judge([{ status: "revoked", revokedAt: "2024-12-31T00:00:00Z", revocationReason: "certificateHold" }]),
    [Reason.CertRevoked],
  );
  t.deepEqual(judge([{ status: "unknown" }]), [Reason.OcspUnknown]);
  t.deepEqual(judge([{ nonceEchoed: false }]), [Reason.OcspNonceMismatch]);
  t.deepEqual(judge([]), [Reason.OcspUnavailable]);
  t.deepEqual(judge([{ responderNotAfter: "2025-01-01T06:00:00Z" }]), [Reason.OcspStale]);
  const later = [
    { thisUpdate: "2024-12-31T00:00:00Z", nextUpdate: "2025-01-01T00:00:00Z" },
    { status: "unknown" as const },
  ];
  t.deepEqual(judge(later), [Reason.OcspUnknown]);
  const grace = (hours: number) =>
    policy({ ocsp: { policy: "AllowUnknown", unknownGraceHours: hours, requireNonce: true } });
  t.deepEqual(
    judge(later, grace(48)),
    [],
    "an unknown answer 36 h after the last good one is tolerated for 48 h",
  );
  t.deepEqual(judge(later, grace(24)), [Reason.OcspUnknown]);
});

test("nonce binding: deterministic, unambiguous, committed to the learner key", (t) => {
  const binding = {
    hubChallenge: randomBytes(32),
    runId: "ns/run-1",
    round: 7,
    learnerPublicKey: randomBytes(32),
  };
  const nonce = deriveAttestationNonce(binding);
  t.is(nonce.length, 32);
  t.deepEqual(deriveAttestationNonce(binding), nonce);
  t.true(nonceBindsKey(nonce, binding));
  t.false(nonceBindsKey(nonce, { ...binding, learnerPublicKey: randomBytes(32) }));
  t.false(nonceBindsKey(nonce, { ...binding, round: 8 }));
  // Moving a byte from the run id into the key must change the nonce (length prefixes).
  const a = deriveAttestationNonce({
    hubChallenge: binding.hubChallenge,
    runId: "ab",
    round: 1,
    learnerPublicKey: Buffer.from("c"),
  });
  const b = deriveAttestationNonce({
    hubChallenge: binding.hubChallenge,
    runId: "a",
    round: 1,
    learnerPublicKey: Buffer.from("bc"),
  });
  t.notDeepEqual(a, b);
  t.throws(() => deriveAttestationNonce({ ...binding, hubChallenge: randomBytes(8) }), {
    message: /NonceMismatch: .*at least 16/,
  });
});
