/** Public API of the testbed evidence source. Never import it from production code paths. */
export { ATTEST_USAGE, attestCommand, type CommandIo } from "./cli.ts";
export { isTestbedMintError, TestbedMintError } from "./errors.ts";
export { type WrittenSet, writeEvidenceSet } from "./files.ts";
export {
  DRIVER_INDICES,
  FAULT_REASONS,
  isTestbedFault,
  MISMATCH_INDEX,
  type MintedEvidence,
  type MintOptions,
  mintTestbedEvidence,
  TESTBED_FAULTS,
  TESTBED_GPU_DEFAULTS,
  type TestbedFault,
  type TestbedGpu,
  testbedOcspAnswers,
  testbedRimIds,
  testbedRims,
  testbedVerificationInput,
  VBIOS_INDICES,
} from "./mint.ts";
export { TESTBED_SEED } from "./pki.ts";
export {
  certificateFingerprint,
  NVIDIA_ROOT_FINGERPRINTS,
  nvidiaTrustAnchors,
  TESTBED_POLICY_SPEC,
  TRUST_ANCHORS_ANNOTATION,
  testbedAttestationPolicy,
  testbedRootFingerprints,
  testbedTrustAnchors,
} from "./trust.ts";
