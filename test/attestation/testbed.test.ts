// The testbed evidence source: minted evidence must be indistinguishable, to our verifier and to
// independent tools, from what a real H100 hands over, yet acceptable only under testbed anchors.
import { execFile } from "node:child_process";
import { generateKeyPairSync, randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import test, { type ExecutionContext } from "ava";
import fc from "fast-check";
import { toHex } from "../../attestation/bytes.ts";
import { extractFwid, parsePemChain } from "../../attestation/certchain.ts";
import {
  deriveAttestationNonce,
  evaluatePolicy,
  type Finding,
  isAttestationError,
  type NonceBinding,
  nonceBindsKey,
  parseAttestationReport,
  Reason,
  type TrustAnchors,
  type Verdict,
  verifyLocalEvidence,
} from "../../attestation/mod.ts";
import {
  FAULT_REASONS,
  MISMATCH_INDEX,
  type MintOptions,
  mintTestbedEvidence,
  NVIDIA_ROOT_FINGERPRINTS,
  nvidiaTrustAnchors,
  TESTBED_FAULTS,
  TESTBED_POLICY_SPEC,
  TestbedMintError,
  testbedRootFingerprints,
  testbedTrustAnchors,
  testbedVerificationInput,
  writeEvidenceSet,
} from "../../attestation/testbed/mod.ts";
import { verifyReportSignature } from "../../attestation/verify.ts";
import type { AttestationPolicySpec } from "../../crds/types.generated.ts";
import { parseAttestationPolicySpec } from "../../crds/validate.ts";
import { anchors as nvidiaAnchors, VECTORS, vectorsPresent, vectorTest } from "./vectors.ts";

const run = promisify(execFile);
const AT = "2026-11-24T10:00:00Z";
const NONCE = "5eed".repeat(16);

async function judge(
  options: Partial<MintOptions> = {},
  trust: TrustAnchors = testbedTrustAnchors(),
  spec: AttestationPolicySpec = TESTBED_POLICY_SPEC,
) {
  const minted = await mintTestbedEvidence({ nonce: NONCE, at: AT, ...options });
  const facts = await verifyLocalEvidence(testbedVerificationInput(minted, trust));
  const verdict = evaluatePolicy(facts, spec, { at: new Date(minted.at) });
  const failures = verdict.devices.flatMap((d) => d.failures);
  return { minted, facts, verdict, failures };
}

test("minted evidence passes under the testbed anchors and policy, every check exercised", async (t) => {
  const { verdict, facts, minted } = await judge();
  t.true(verdict.passed, JSON.stringify(verdict.reasons));
  t.deepEqual(verdict.reasons, []);
  const device = facts.devices[0];
  t.is(device?.architecture, "Hopper");
  t.deepEqual(device?.failures, []);
  t.deepEqual(device?.rimIds, [minted.rimIds.driver, minted.rimIds.vbios]);
  // 21 driver + 12 VBIOS golden indices, 35 skipped because NVDEC0 is disabled, as on a real H100.
  t.is(device?.measurements?.outcomes.length, 32);
  t.true(device?.measurements?.outcomes.every((o) => o.status === "match"));
  t.deepEqual(device?.measurements?.skipped, [35]);
  t.deepEqual(
    device?.measurements?.outcomes.flatMap((o) =>
      o.status === "match" && o.alternative > 0 ? [o.index] : [],
    ),
    [23, 24],
  );
  t.deepEqual(
    device?.ocspTargets.map((o) => o.subject),
    [
      "device-chain[1]",
      "device-chain[2]",
      "device-chain[3]",
      `rim:${minted.rimIds.driver}[0]`,
      `rim:${minted.rimIds.driver}[1]`,
      `rim:${minted.rimIds.driver}[2]`,
      `rim:${minted.rimIds.vbios}[0]`,
    ],
  );
  for (const target of device?.ocspTargets ?? []) {
    const answer = target.matches[0];
    t.is(answer?.kind, "answer", target.subject);
    if (answer?.kind === "answer") {
      t.is(answer.answer.status, "good");
      t.true(answer.answer.nonceEchoed, `${target.subject} echoes the OCSP request nonce`);
    }
  }
});

test("the testbed policy spec is a valid AttestationPolicy as strict as production", (t) => {
  const parsed = parseAttestationPolicySpec(structuredClone(TESTBED_POLICY_SPEC));
  t.true(parsed.ok);
  if (parsed.ok) t.deepEqual(parsed.value, TESTBED_POLICY_SPEC);
  t.is(TESTBED_POLICY_SPEC.ccMode, "On");
  t.true(TESTBED_POLICY_SPEC.requireAllMeasurementsMatch);
  t.deepEqual(TESTBED_POLICY_SPEC.ocsp, { policy: "RequireGood", requireNonce: true });
});

test("the testbed roots are the same in every process (the keys derive from a public seed)", async (t) => {
  const here = testbedRootFingerprints();
  const { stdout } = await run(process.execPath, [
    "--input-type=module",
    "-e",
    `import { testbedRootFingerprints } from ${JSON.stringify(new URL("../../attestation/testbed/trust.ts", import.meta.url).href)};
     console.log(JSON.stringify(testbedRootFingerprints()));`,
  ]);
  t.deepEqual(JSON.parse(stdout), here);
  t.notDeepEqual(here, NVIDIA_ROOT_FINGERPRINTS);
  t.notDeepEqual(testbedRootFingerprints("another seed"), here);
});

/**
 * Under foreign anchors both chains fail, and so do the OCSP answers about the certificates the
 * pinned root would have issued (their CertIDs name another issuer).
 */
function assertForeignRootRefusal(
  t: ExecutionContext,
  verdict: Verdict,
  failures: Finding[],
  rimIds: { driver: string; vbios: string },
): void {
  t.false(verdict.passed);
  t.deepEqual(verdict.reasons, [Reason.CertChainInvalid, Reason.OcspUnavailable, Reason.RimChainInvalid]);
  const subjects = (reason: string) => failures.filter((f) => f.reason === reason).map((f) => f.subject);
  t.deepEqual(subjects(Reason.RimChainInvalid), [`rim:${rimIds.driver}`, `rim:${rimIds.vbios}`]);
  t.deepEqual(subjects(Reason.OcspUnavailable), ["device-chain[3]", `rim:${rimIds.driver}[2]`]);
}

test("evidence under another (non-NVIDIA, non-testbed) root is refused on both chains", async (t) => {
  const { verdict, failures, minted } = await judge({ seed: "someone else's lab" });
  assertForeignRootRefusal(t, verdict, failures, minted.rimIds);
});

vectorTest("testbed evidence is refused under NVIDIA's production anchors", async (t) => {
  const { verdict, failures, minted } = await judge({}, nvidiaAnchors());
  assertForeignRootRefusal(t, verdict, failures, minted.rimIds);
  t.regex(
    failures.find((f) => f.reason === Reason.CertChainInvalid)?.message ?? "",
    /not the pinned root "NVIDIA Device Identity CA"/,
  );
  t.true(
    failures.some((f) => f.reason === Reason.RimChainInvalid && f.subject.startsWith("rim:NV_GPU_DRIVER")),
  );
  t.true(
    failures.some((f) => f.reason === Reason.RimChainInvalid && f.subject.startsWith("rim:NV_GPU_VBIOS")),
  );
  // And the pin: NVIDIA's roots are accepted as such, the testbed's are not.
  const real = nvidiaAnchors();
  t.deepEqual(nvidiaTrustAnchors(real.deviceRootPem, real.rimRootPem), real);
  const fake = testbedTrustAnchors();
  const error = t.throws(() => nvidiaTrustAnchors(fake.deviceRootPem, real.rimRootPem));
  t.true(isAttestationError(error) && error.reason === Reason.CertChainInvalid);
  const rimError = t.throws(() => nvidiaTrustAnchors(real.deviceRootPem, fake.rimRootPem));
  t.true(isAttestationError(rimError) && rimError.reason === Reason.RimChainInvalid);
});

for (const fault of TESTBED_FAULTS) {
  test(`fault ${fault} is refused with exactly ${FAULT_REASONS[fault]}`, async (t) => {
    const { verdict, failures, minted } = await judge({ tamper: fault });
    t.false(verdict.passed);
    t.deepEqual(verdict.reasons, [FAULT_REASONS[fault]]);
    t.deepEqual(minted.faults, [fault]);
    const subjects = failures.map((f) => f.subject);
    if (fault === "measurement-mismatch") t.deepEqual(subjects, [`measurement[${MISMATCH_INDEX}]`]);
    if (fault === "revoked") t.deepEqual(subjects, ["device-chain[1]"]);
    if (fault === "stale") t.is(Date.parse(minted.at) - Date.parse(minted.collectedAt), 8 * 86_400_000);
  });
}

test("faults combine, each adding its own reason", async (t) => {
  const { verdict } = await judge({ tamper: ["revoked", "wrong-nonce", "cc-off"] });
  t.deepEqual(verdict.reasons, [Reason.CcModeOff, Reason.CertRevoked, Reason.NonceMismatch].sort());
});

test("a GPU whose leaf key identifier starts with a zero byte still gets a parseable certificate", async (t) => {
  // fast-check found it: the leaf's serial is its key identifier with the top bit cleared, which
  // can leave a leading 0x00 that DER forbids; the certificate must then drop it.
  const minted = await mintTestbedEvidence({
    nonce: new Uint8Array(32),
    at: AT,
    gpu: { index: 5, driverVersion: "400.0.00", vbiosVersion: "80.01.CF.02.9B" },
  });
  const chain = parsePemChain(minted.device.certificateChain, "chain");
  t.true(verifyReportSignature(parseAttestationReport(minted.device.report), chain[0] as never));
});

test("the minted report parses with the parser for real reports and carries what was asked", async (t) => {
  await fc.assert(
    fc.asyncProperty(
      fc.uint8Array({ minLength: 32, maxLength: 32 }),
      fc.tuple(
        fc.integer({ min: 400, max: 999 }),
        fc.integer({ min: 0, max: 999 }),
        fc.integer({ min: 0, max: 99 }),
      ),
      // Real VBIOS versions start with 96 (Hopper) or 97 (Blackwell); a leading byte ≥ 0x80 keeps the field binary.
      fc.tuple(fc.integer({ min: 0x80, max: 0xff }), fc.uint8Array({ minLength: 4, maxLength: 4 })),
      fc.integer({ min: 0, max: 1000 }),
      async (nonce, [major, minor, patch], [first, rest], index) => {
        const driverVersion = `${major}.${minor}.${String(patch).padStart(2, "0")}`;
        const vbiosVersion = [first, ...rest]
          .map((b) => b.toString(16).padStart(2, "0").toUpperCase())
          .join(".");
        const minted = await mintTestbedEvidence({
          nonce,
          at: AT,
          gpu: { index, driverVersion, vbiosVersion },
        });
        const report = parseAttestationReport(minted.device.report);
        const chain = parsePemChain(minted.device.certificateChain, "chain");
        t.is(toHex(report.request.nonce), toHex(nonce));
        t.is(report.request.param1 & 1, 1, "the request asks for a signature");
        t.is(report.response.blocks.length, 64);
        t.true(report.response.blocks.every((b) => b.value.length === 48));
        t.is(report.response.opaque.driverVersion, driverVersion);
        t.is(report.response.opaque.vbiosVersion, vbiosVersion);
        t.is(report.response.opaque.measurementCounts?.length, 64);
        t.is(report.trailingZeroBytes, 0);
        t.deepEqual(report.response.opaque.fwid, extractFwid(chain[0] as never));
        t.true(verifyReportSignature(report, chain[0] as never));
        t.is(chain.length, 5);
        t.deepEqual(minted.rimIds, {
          driver: `NV_GPU_DRIVER_GH100_${driverVersion}`,
          vbios: `NV_GPU_VBIOS_1010_0200_882_${vbiosVersion.replace(/\./g, "")}`,
        });
      },
    ),
    { numRuns: 5 },
  );
});

test("minting is deterministic apart from the RIM signature values", async (t) => {
  const one = await mintTestbedEvidence({ nonce: NONCE, at: AT, gpu: { index: 3 } });
  const two = await mintTestbedEvidence({ nonce: NONCE, at: AT, gpu: { index: 3 } });
  t.deepEqual(one.device.report, two.device.report);
  t.is(one.device.certificateChain, two.device.certificateChain);
  t.deepEqual(one.device.ocspResponses, two.device.ocspResponses);
  const other = await mintTestbedEvidence({ nonce: NONCE, at: AT, gpu: { index: 4 } });
  t.not(other.device.certificateChain, one.device.certificateChain, "each GPU has its own identity");
  const facts = await verifyLocalEvidence(testbedVerificationInput([one, other], testbedTrustAnchors()));
  const verdict = evaluatePolicy(facts, TESTBED_POLICY_SPEC, { at: new Date(AT) });
  t.true(verdict.passed);
  t.is(new Set(verdict.devices.map((d) => d.deviceId)).size, 2);
});

test("the nonce binds the evidence to the learner's Ed25519 delta-signing key", async (t) => {
  const learner = generateKeyPairSync("ed25519");
  const raw = (key: typeof learner.publicKey) =>
    new Uint8Array(Buffer.from(key.export({ format: "jwk" }).x as string, "base64url"));
  const binding: NonceBinding = {
    hubChallenge: randomBytes(32),
    runId: "team-a/llama-ft",
    round: 7,
    learnerPublicKey: raw(learner.publicKey),
  };
  const nonce = deriveAttestationNonce(binding);
  const { verdict, minted } = await judge({ nonce });
  t.true(verdict.passed);
  // What a delta verifier sees: the nonce the GPU signed, and the key a delta is signed with.
  const signed = parseAttestationReport(minted.device.report).request.nonce;
  t.true(nonceBindsKey(signed, binding));
  t.false(
    nonceBindsKey(signed, { ...binding, learnerPublicKey: raw(generateKeyPairSync("ed25519").publicKey) }),
  );
  t.false(nonceBindsKey(signed, { ...binding, round: 8 }));
  t.false(nonceBindsKey(signed, { ...binding, runId: "team-b/llama-ft" }));
});

test("protected-PCIe mode is signed into the report and judged against the policy's ccMode", async (t) => {
  const single = await judge({ ccMode: "ppcie" });
  t.deepEqual(single.verdict.reasons, [Reason.CcModeOff]);
  const ppcie = await judge({ ccMode: "ppcie" }, testbedTrustAnchors(), {
    ...TESTBED_POLICY_SPEC,
    ccMode: "ProtectedPCIe",
  });
  t.true(ppcie.verdict.passed, JSON.stringify(ppcie.verdict.reasons));
  t.is(parseAttestationReport(ppcie.minted.device.report).response.opaque.protectedPcieStatus, 0xaa);
});

test("bad minting requests are refused with a message", async (t) => {
  await t.throwsAsync(mintTestbedEvidence({ nonce: "00", at: AT }), {
    instanceOf: TestbedMintError,
    message: /32 bytes/,
  });
  await t.throwsAsync(mintTestbedEvidence({ nonce: NONCE, at: "1999-01-01T00:00:00Z" }), {
    instanceOf: TestbedMintError,
    message: /outside the testbed PKI/,
  });
  await t.throwsAsync(mintTestbedEvidence({ nonce: NONCE, at: "yesterday" }), {
    instanceOf: TestbedMintError,
    message: /not a time/,
  });
  await t.throwsAsync(mintTestbedEvidence({ nonce: NONCE, at: AT, tamper: "melted" as never }), {
    instanceOf: TestbedMintError,
    message: /unknown fault/,
  });
  await t.throwsAsync(
    mintTestbedEvidence({ nonce: NONCE, at: AT, gpu: { vbiosVersion: "41.42.43.44.45" } }),
    {
      instanceOf: TestbedMintError,
      message: /would read back/,
    },
  );
});

/** Tools that share no code with ours: xmlsec1 (XML-DSig), xmllint (NVIDIA's SWID schema), openssl (X.509, OCSP). */
test("independent tools accept the minted files", async (t) => {
  const have = async (tool: string) =>
    run("sh", ["-c", `command -v ${tool}`]).then(
      () => true,
      () => false,
    );
  const dir = await mkdtemp(join(tmpdir(), "sovereign-minted-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const minted = await mintTestbedEvidence({ nonce: NONCE, at: AT });
  const set = await writeEvidenceSet(minted, dir);
  let checked = 0;
  if (await have("xmlsec1")) {
    for (const rim of set.rims) {
      const { stderr } = await run("xmlsec1", [
        "--verify",
        "--trusted-pem",
        join(dir, "testbed-rim-root.pem"),
        "--verification-time",
        "2026-11-24 10:00:00",
        rim,
      ]);
      t.regex(stderr, /^OK$/m, rim);
      checked++;
    }
  } else t.log("xmlsec1 not installed (apt-get install xmlsec1): XML-DSig cross-check skipped");
  const schema = join(VECTORS, "nvtrust/rim-schema/swidSchema2015.xsd");
  if (vectorsPresent && (await have("xmllint"))) {
    const { stderr } = await run("xmllint", ["--noout", "--schema", schema, ...set.rims]);
    t.is((stderr.match(/ validates$/gm) ?? []).length, 2, stderr);
    checked++;
  } else t.log("xmllint or the NVIDIA vectors absent: SWID schema check skipped");
  if (await have("openssl")) {
    const certs = minted.device.certificateChain.match(/-----BEGIN[\s\S]+?END CERTIFICATE-----\n/g) ?? [];
    await writeFile(join(dir, "leaf.pem"), certs[0] ?? "");
    await writeFile(join(dir, "untrusted.pem"), certs.slice(1, 4).join(""));
    await writeFile(join(dir, "brom.pem"), certs[1] ?? "");
    await writeFile(join(dir, "provisioner.pem"), certs[2] ?? "");
    const chain = await run("openssl", [
      "verify",
      "-CAfile",
      join(dir, "testbed-device-root.pem"),
      "-untrusted",
      join(dir, "untrusted.pem"),
      join(dir, "leaf.pem"),
    ]);
    t.regex(chain.stdout, /leaf\.pem: OK/);
    const ocsp = await run("openssl", [
      "ocsp",
      "-respin",
      set.ocsp[0] as string,
      // NVIDIA's CertIDs (and ours) use SHA-384; openssl looks the certificate up with SHA-1 otherwise.
      "-sha384",
      // openssl judges thisUpdate against the wall clock, not -attime; the window is ours to check.
      "-validity_period",
      String(100 * 365 * 86_400),
      "-issuer",
      join(dir, "provisioner.pem"),
      "-cert",
      join(dir, "brom.pem"),
      "-CAfile",
      join(dir, "testbed-device-root.pem"),
      "-verify_other",
      join(dir, "untrusted.pem"),
      "-attime",
      String(Date.parse(AT) / 1000),
      "-no_nonce",
    ]);
    t.regex(`${ocsp.stdout}${ocsp.stderr}`, /Response verify OK/);
    t.regex(ocsp.stdout, /brom\.pem: good/);
    checked++;
  } else t.log("openssl not installed: X.509 / OCSP cross-check skipped");
  if (checked === 0) t.log("no independent tool installed; nothing cross-checked");
  t.pass();
});
