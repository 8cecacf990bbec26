/**
 * Reason codes: the vocabulary of every attestation verdict, error and audit record.
 * They are stable strings (users grep for them, auditors store them); add new ones, never rename.
 */
export const Reason = {
  /** The report, chain, RIM, OCSP response or token could not be parsed. */
  EvidenceMalformed: "EvidenceMalformed",
  /** The device certificate chain does not lead to the pinned NVIDIA device identity root. */
  CertChainInvalid: "CertChainInvalid",
  /** A device-chain certificate is outside its validity period at the evaluation time. */
  CertExpired: "CertExpired",
  /** OCSP says a certificate is revoked (certificateHold included). */
  CertRevoked: "CertRevoked",
  /** The report's signature does not verify with the leaf (attestation) key. */
  SignatureInvalid: "SignatureInvalid",
  /** The firmware id in the report differs from the one in the leaf certificate. */
  FwidMismatch: "FwidMismatch",
  /** The report answers a different challenge than the one we sent. */
  NonceMismatch: "NonceMismatch",
  /** The evidence is older than the policy's maximum age (or claims to come from the future). */
  EvidenceStale: "EvidenceStale",
  /** A runtime measurement equals none of its RIM's golden values. */
  MeasurementMismatch: "MeasurementMismatch",
  /** No RIM was supplied for the report's driver or VBIOS, or the one supplied declares another version. */
  RimNotFound: "RimNotFound",
  /** A RIM's identifier is not in the policy's allowedRimIds. */
  RimNotAllowed: "RimNotAllowed",
  /** The RIM could not be parsed, has duplicate indices, or a driver and VBIOS RIM claim the same index. */
  RimMalformed: "RimMalformed",
  /** The RIM's XML signature (digest or signature value) does not verify. */
  RimSignatureInvalid: "RimSignatureInvalid",
  /** The RIM's signing certificates do not lead to the pinned NVIDIA RIM root. */
  RimChainInvalid: "RimChainInvalid",
  /** A RIM signing certificate is outside its validity period at the evaluation time. */
  RimExpired: "RimExpired",
  /** No usable OCSP answer for a certificate (none supplied, responder not authorised, bad signature). */
  OcspUnavailable: "OcspUnavailable",
  /** The OCSP answer is outside its thisUpdate..nextUpdate window at the evaluation time. */
  OcspStale: "OcspStale",
  /** The OCSP answer is 'unknown' and the policy does not tolerate it (any more). */
  OcspUnknown: "OcspUnknown",
  /** The policy requires OCSP responses to echo our request nonce and this one does not. */
  OcspNonceMismatch: "OcspNonceMismatch",
  /** The report's driver version is not in allowedDriverVersions. */
  DriverNotAllowed: "DriverNotAllowed",
  /** The report's VBIOS version is not in allowedVbiosVersions. */
  VbiosNotAllowed: "VbiosNotAllowed",
  /** The device's architecture (from its certificate) is not in gpuArchitectures. */
  ArchitectureNotAllowed: "ArchitectureNotAllowed",
  /** Confidential computing is off, or in another mode than the policy's ccMode. */
  CcModeOff: "CcModeOff",
  /** The NRAS token's signature, key, structure or per-device digests do not check out. */
  TokenInvalid: "TokenInvalid",
  /** The NRAS token is outside its nbf..exp window at the evaluation time. */
  TokenExpired: "TokenExpired",
  /** The NRAS token comes from an issuer the policy does not accept. */
  TokenIssuerNotAccepted: "TokenIssuerNotAccepted",
  /** The NRAS token (or the evidence) reports a failed appraisal claim. */
  TokenClaimFailed: "TokenClaimFailed",
} as const;

export type ReasonCode = (typeof Reason)[keyof typeof Reason];

export const ALL_REASONS: readonly ReasonCode[] = Object.values(Reason);
