/**
 * Which roots a verifier trusts. Production pins NVIDIA's two roots by SHA-256 fingerprint, so a
 * testbed root handed in as "NVIDIA's" is refused before any evidence is read; the testbed roots
 * are trusted only when the caller asks for them by name. AttestationPolicySpec has no field for
 * anchors, so "a testbed policy" is the pair (TESTBED_POLICY_SPEC, testbedTrustAnchors()).
 */
import { createHash, X509Certificate } from "node:crypto";
import type { AttestationPolicy, AttestationPolicySpec } from "../../crds/types.generated.ts";
import { AttestationError } from "../errors.ts";
import { Reason } from "../reasons.ts";
import type { TrustAnchors } from "../verify.ts";
import { TESTBED_SEED, testbedPki } from "./pki.ts";

/** SHA-256 of the DER of NVIDIA's roots (nvtrust roots/verifier_device_root.pem, verifier_RIM_root.pem). */
export const NVIDIA_ROOT_FINGERPRINTS = {
  device: "102bf659d5419614c9d8e6aecebc80454eb26b1df6a769ac720b9a690b167b48",
  rim: "12977b5115acb0381179279fffeb5a8c4d264971ebb32298023a465fa41df5d1",
} as const;

export const certificateFingerprint = (pem: string): string =>
  createHash("sha256").update(new X509Certificate(pem).raw).digest("hex");

/**
 * NVIDIA's roots, after checking they are NVIDIA's: the PEM files are configuration an operator
 * supplies, and a wrong file must not silently become the trust anchor.
 */
export function nvidiaTrustAnchors(deviceRootPem: string, rimRootPem: string): TrustAnchors {
  for (const [what, pem, want] of [
    ["device identity root", deviceRootPem, NVIDIA_ROOT_FINGERPRINTS.device],
    ["RIM signing root", rimRootPem, NVIDIA_ROOT_FINGERPRINTS.rim],
  ] as const) {
    let got: string;
    try {
      got = certificateFingerprint(pem);
    } catch (cause) {
      throw new AttestationError(Reason.CertChainInvalid, `the ${what} is not a PEM certificate`, { cause });
    }
    if (got !== want) {
      throw new AttestationError(
        what.startsWith("RIM") ? Reason.RimChainInvalid : Reason.CertChainInvalid,
        `the ${what} given has SHA-256 ${got}, NVIDIA's is ${want}; use nvtrust's roots/${what.startsWith("RIM") ? "verifier_RIM_root.pem" : "verifier_device_root.pem"}`,
      );
    }
  }
  return { deviceRootPem, rimRootPem };
}

/** The testbed's device and RIM roots. OCSP responders need no anchor: each is certified by the CA whose certificates it answers for. */
export function testbedTrustAnchors(seed = TESTBED_SEED): TrustAnchors {
  const pki = testbedPki(seed);
  return { deviceRootPem: pki.device.root.cert.pem, rimRootPem: pki.rim.root.cert.pem };
}

/** Fingerprints of the testbed roots; stable across processes and machines (the keys derive from a public seed). */
export function testbedRootFingerprints(seed = TESTBED_SEED): { device: string; rim: string } {
  const anchors = testbedTrustAnchors(seed);
  return {
    device: certificateFingerprint(anchors.deviceRootPem),
    rim: certificateFingerprint(anchors.rimRootPem),
  };
}

/**
 * As strict as production (every measurement, fresh OCSP with nonce, 2 h evidence age); only the
 * anchors it is paired with differ. Valid under crds/validate.ts parseAttestationPolicySpec.
 */
export const TESTBED_POLICY_SPEC: AttestationPolicySpec = {
  gpuArchitectures: ["Hopper"],
  ccMode: "On",
  requireAllMeasurementsMatch: true,
  maxEvidenceAgeSeconds: 7200,
  ocsp: { policy: "RequireGood", requireNonce: true },
  verification: { mode: "Local" },
  reattestation: { periodSeconds: 3600, jitterSeconds: 300 },
};

/** Marks an AttestationPolicy as meant for testbed anchors, so a reader of the object sees it. */
export const TRUST_ANCHORS_ANNOTATION = "sovereign.ai/trust-anchors";

export function testbedAttestationPolicy(name = "testbed"): AttestationPolicy {
  return {
    apiVersion: "sovereign.ai/v1alpha1",
    kind: "AttestationPolicy",
    metadata: { name, annotations: { [TRUST_ANCHORS_ANNOTATION]: "testbed" } },
    spec: structuredClone(TESTBED_POLICY_SPEC),
  };
}
