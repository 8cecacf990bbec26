/**
 * A minted evidence set on disk, in the file forms NVIDIA's tools use (hex report, PEM chain leaf
 * first, RIM XML named by RIM id, DER OCSP answers), plus the testbed policy, the testbed roots and
 * a manifest with the `attest verify` command line that checks the set.
 */
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { stringify } from "yaml";
import { toHex } from "../bytes.ts";
import type { MintedEvidence } from "./mint.ts";
import { testbedAttestationPolicy, testbedRootFingerprints, testbedTrustAnchors } from "./trust.ts";

export interface WrittenSet {
  dir: string;
  report: string;
  chain: string;
  rims: string[];
  ocsp: string[];
  policy: string;
  manifest: string;
  /** The arguments of `attest verify` for this set (file paths absolute). */
  verifyArgs: string[];
}

export async function writeEvidenceSet(
  minted: MintedEvidence,
  dir: string,
  seed?: string,
): Promise<WrittenSet> {
  await mkdir(join(dir, "ocsp"), { recursive: true });
  const report = join(dir, "report.hex");
  const chain = join(dir, "chain.pem");
  const policy = join(dir, "policy.yaml");
  const manifest = join(dir, "evidence.json");
  await writeFile(report, `${toHex(minted.device.report)}\n`);
  await writeFile(chain, minted.device.certificateChain);
  const rims: string[] = [];
  for (const rim of minted.device.rims) {
    const file = join(dir, `${rim.id}.xml`);
    await writeFile(file, rim.xml);
    rims.push(file);
  }
  const ocsp: string[] = [];
  for (const [i, der] of minted.device.ocspResponses.entries()) {
    const file = join(dir, "ocsp", `${minted.ocspLabels[i] ?? `answer-${i}`}.der`);
    await writeFile(file, der);
    ocsp.push(file);
  }
  // YAML 1.1 quoting, so kubectl (which reads YAML 1.1) does not turn ccMode: On into true.
  await writeFile(policy, stringify(testbedAttestationPolicy(), { version: "1.1" }));
  const anchors = testbedTrustAnchors(seed);
  await writeFile(join(dir, "testbed-device-root.pem"), anchors.deviceRootPem);
  await writeFile(join(dir, "testbed-rim-root.pem"), anchors.rimRootPem);
  const verifyArgs = [
    "--report",
    report,
    "--chain",
    chain,
    ...rims.flatMap((f) => ["--rim", f]),
    ...ocsp.flatMap((f) => ["--ocsp", f]),
    "--nonce",
    minted.expectedNonce,
    "--ocsp-nonce",
    toHex(minted.device.ocspRequestNonce),
    "--at",
    minted.at,
    "--collected-at",
    minted.collectedAt,
    "--cc-mode",
    minted.device.declaredCcMode ?? "on",
    "--policy",
    policy,
    "--trust",
    "testbed",
  ];
  await writeFile(
    manifest,
    `${JSON.stringify(
      {
        kind: "SovereignTestbedEvidence",
        note: "Minted by the Sovereign testbed under a test PKI whose keys derive from a public seed. Only a verifier configured with the testbed roots accepts it; never configure them in production.",
        nonce: minted.expectedNonce,
        ocspRequestNonce: toHex(minted.device.ocspRequestNonce),
        at: minted.at,
        collectedAt: minted.collectedAt,
        declaredCcMode: minted.device.declaredCcMode,
        gpu: minted.gpu,
        rimIds: minted.rimIds,
        faults: minted.faults,
        testbedRootFingerprints: testbedRootFingerprints(seed),
        verify: ["sovereign", "attest", "verify", ...verifyArgs],
      },
      null,
      2,
    )}\n`,
  );
  return { dir, report, chain, rims, ocsp, policy, manifest, verifyArgs };
}
