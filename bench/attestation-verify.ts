// `node bench/attestation-verify.ts [seconds]`: full local verifications per second of one GPU's
// evidence (report signature, 5-certificate device chain, FWID, two XML-DSig RIMs and their
// chains, 33 golden measurements, 7 OCSP answers, then the policy), against the raw cost of the
// same number of ECDSA P-384 verifications with node:crypto measured in the same run. The number
// of ECDSA verifications is counted, not assumed: node:crypto's verify entry points are wrapped
// while one verification runs. Minted testbed evidence, and NVIDIA's SET A when the shared vectors
// are present. Writes bench/results/attestation-verify.json.
import crypto, { generateKeyPairSync } from "node:crypto";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { evaluatePolicy, type LocalVerificationInput, verifyLocalEvidence } from "../attestation/mod.ts";
import {
  mintTestbedEvidence,
  TESTBED_POLICY_SPEC,
  testbedTrustAnchors,
  testbedVerificationInput,
} from "../attestation/testbed/mod.ts";
import type { AttestationPolicySpec } from "../crds/types.generated.ts";
import { countEcdsaVerifications } from "./ecdsa-count.ts";

const seconds = Number(process.argv[2] ?? 3);
const VECTORS = resolve(import.meta.dirname, "../../shared/vectors/nvidia");

interface Case {
  name: string;
  input: LocalVerificationInput;
  spec: AttestationPolicySpec;
  at: Date;
}

async function verifyOnce(c: Case): Promise<string[]> {
  const facts = await verifyLocalEvidence(c.input);
  return evaluatePolicy(facts, c.spec, { at: c.at }).reasons;
}

async function rate(fn: () => Promise<unknown> | unknown): Promise<{ perSecond: number; runs: number }> {
  for (let i = 0; i < 3; i++) await fn();
  let runs = 0;
  const t0 = performance.now();
  while (performance.now() - t0 < seconds * 1000) {
    await fn();
    runs++;
  }
  return { perSecond: runs / ((performance.now() - t0) / 1000), runs };
}

const { publicKey, privateKey } = generateKeyPairSync("ec", { namedCurve: "P-384" });
// About the size of what is verified in practice (a TBSCertificate, a report).
const message = crypto.randomBytes(1024);
const signature = crypto.sign("sha384", message, privateKey);
const rawVerify = () => {
  if (!crypto.verify("sha384", message, publicKey, signature)) throw new Error("raw verification failed");
};

const cases: Case[] = [];
const mintStart = performance.now();
const minted = await mintTestbedEvidence({ nonce: "be".repeat(32), at: new Date() });
const mintMs = performance.now() - mintStart;
cases.push({
  name: "testbed (minted H100)",
  input: testbedVerificationInput(minted, testbedTrustAnchors()),
  spec: TESTBED_POLICY_SPEC,
  at: new Date(minted.at),
});
if (existsSync(VECTORS)) {
  const v = (file: string) => readFileSync(join(VECTORS, file), "utf8");
  cases.push({
    name: "NVIDIA SET A (H100 550.90.07, at T1)",
    input: {
      devices: [
        {
          report: v("nvtrust/gpu-h100-550.90.07/hopperAttestationReport.txt"),
          certificateChain: v("nvtrust/gpu-h100-550.90.07/hopperCertChain.txt"),
          rims: [
            { xml: v("go-nvattest-tools/rim/NV_GPU_DRIVER_GH100_550.90.07.xml") },
            { xml: v("go-nvattest-tools/rim/NV_GPU_VBIOS_1010_0200_882_96009F0001.xml") },
          ],
          ocspResponses: readdirSync(join(VECTORS, "go-nvattest-tools/ocsp"))
            .sort()
            .map((f) => v(`go-nvattest-tools/ocsp/${f}`)),
          declaredCcMode: "on",
        },
      ],
      expectedNonce: "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb",
      collectedAt: "2025-08-21T12:00:00Z",
      anchors: {
        deviceRootPem: v("nvtrust/roots/verifier_device_root.pem"),
        rimRootPem: v("nvtrust/roots/verifier_RIM_root.pem"),
      },
    },
    spec: { ...TESTBED_POLICY_SPEC, ocsp: { policy: "RequireGood", requireNonce: false } },
    at: new Date("2025-08-21T12:00:00Z"),
  });
} else {
  console.log(`NVIDIA vectors not found at ${VECTORS}; SET A skipped`);
}

const raw = await rate(rawVerify);
const results = [];
for (const c of cases) {
  const reasons = await verifyOnce(c);
  const ecdsaPerVerification = await countEcdsaVerifications(() => verifyOnce(c));
  const full = await rate(() => verifyOnce(c));
  const rawSecondsPerVerification = ecdsaPerVerification / raw.perSecond;
  results.push({
    case: c.name,
    reasons,
    ecdsaPerVerification,
    verificationsPerSecond: full.perSecond,
    msPerVerification: 1000 / full.perSecond,
    rawEcdsaMsForSameCount: rawSecondsPerVerification * 1000,
    /** Full verification time over the time its ECDSA verifications alone take. */
    overheadVsRawEcdsa: 1 / full.perSecond / rawSecondsPerVerification,
    runs: full.runs,
  });
}

console.log(`raw ECDSA P-384/SHA-384 verify (node:crypto, 1 KiB): ${raw.perSecond.toFixed(0)}/s`);
console.log(`minting one testbed evidence set: ${mintMs.toFixed(0)} ms (first, including the PKI)`);
console.log("case                                    verif/s  ms/verif  ECDSA  raw ECDSA ms  ×raw   reasons");
for (const r of results) {
  console.log(
    [
      r.case.padEnd(38),
      r.verificationsPerSecond.toFixed(2).padStart(8),
      r.msPerVerification.toFixed(1).padStart(9),
      String(r.ecdsaPerVerification).padStart(6),
      r.rawEcdsaMsForSameCount.toFixed(1).padStart(13),
      r.overheadVsRawEcdsa.toFixed(1).padStart(6),
      ` ${r.reasons.join(",") || "(passed)"}`,
    ].join(" "),
  );
}
const out = resolve(import.meta.dirname, "results");
await mkdir(out, { recursive: true });
await writeFile(
  join(out, "attestation-verify.json"),
  `${JSON.stringify(
    {
      node: process.version,
      openssl: process.versions.openssl,
      seconds,
      rawEcdsaVerifyPerSecond: raw.perSecond,
      mintFirstMs: mintMs,
      results,
    },
    null,
    2,
  )}\n`,
);
console.log(`wrote ${join(out, "attestation-verify.json")}`);
