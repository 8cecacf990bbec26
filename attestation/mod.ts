/** Public API of the attestation verifier. Everything else in attestation/ is internal. */
export type { CertSummary } from "./certchain.ts";
export { AttestationError, EvidenceParseError, isAttestationError, isEvidenceParseError } from "./errors.ts";
export type { DeclaredCcMode, DeviceFacts, EvidenceFacts, OcspTarget } from "./facts.ts";
export { deriveAttestationNonce, NONCE_DOMAIN, type NonceBinding, nonceBindsKey } from "./nonce.ts";
export { type NrasVerificationInput, verifyNrasToken } from "./nras.ts";
export { type EvaluationContext, evaluatePolicy, RULES } from "./policy.ts";
export { ALL_REASONS, Reason, type ReasonCode } from "./reasons.ts";
export type { RimDocument } from "./rim.ts";
export { type AttestationReport, parseAttestationReport, parseReportText } from "./spdm.ts";
export {
  canonicalJson,
  type DeviceVerdict,
  type Finding,
  VERDICT_API_VERSION,
  type Verdict,
  verdictDigest,
} from "./verdict.ts";
export {
  architectureOf,
  type LocalDeviceEvidence,
  type LocalVerificationInput,
  type TrustAnchors,
  verifyLocalEvidence,
} from "./verify.ts";
