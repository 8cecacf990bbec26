/** Access to the shared NVIDIA vectors (../shared/vectors from the repo root), read in place, never copied. */
import { existsSync, readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import test, { type ExecutionContext } from "ava";
import type { TrustAnchors } from "../../attestation/verify.ts";
import type { AttestationPolicySpec } from "../../crds/types.generated.ts";

const REPO_ROOT = path.resolve(import.meta.dirname, "../..");
export const VECTORS = path.resolve(REPO_ROOT, "../shared/vectors/nvidia");
export const vectorsPresent = existsSync(VECTORS);
const ABSENT = `NVIDIA vectors not found at ${VECTORS}; vector-based attestation tests are skipped`;

export const vector = (file: string): string => readFileSync(path.join(VECTORS, file), "utf8");
export const vectorBytes = (file: string): Uint8Array =>
  new Uint8Array(readFileSync(path.join(VECTORS, file)));
export const vectorDir = (dir: string): string[] => readdirSync(path.join(VECTORS, dir)).sort();

let reported = false;
/** A test that needs the vectors: skipped (with the reason logged once) when they are absent. */
export function vectorTest(title: string, body: (t: ExecutionContext) => Promise<void> | void): void {
  if (vectorsPresent) {
    test(title, body);
    return;
  }
  if (!reported) {
    reported = true;
    test("NVIDIA vectors are absent", (t) => {
      t.log(ABSENT);
      t.pass();
    });
  }
  test.skip(`${title} (skipped: ${ABSENT})`, () => {});
}

export const anchors = (): TrustAnchors => ({
  deviceRootPem: vector("nvtrust/roots/verifier_device_root.pem"),
  rimRootPem: vector("nvtrust/roots/verifier_RIM_root.pem"),
});

export const NONCE_931D = "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb";

/** A production-like policy; tests override one thing at a time. */
export function policy(overrides: Partial<AttestationPolicySpec> = {}): AttestationPolicySpec {
  return {
    gpuArchitectures: ["Hopper", "Blackwell"],
    ccMode: "On",
    requireAllMeasurementsMatch: true,
    maxEvidenceAgeSeconds: 7200,
    // The stored answers carry no nonce (they were cached), so tests of them cannot require one.
    ocsp: { policy: "RequireGood", requireNonce: false },
    verification: { mode: "Local" },
    reattestation: { periodSeconds: 3600, jitterSeconds: 300 },
    ...overrides,
  };
}
