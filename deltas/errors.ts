/**
 * Reason codes for every delta the library refuses. The code is what a user greps for in
 * logs and metrics; the message says what to do next. Reasons are grouped by the layer that
 * refuses: the safetensors container (Delta*), the encodings (Encoding*), the signed manifest
 * (Manifest*).
 */
export const DELTA_REASONS = [
  "DeltaHeaderTooLarge",
  "DeltaHeaderInvalid",
  "DeltaNameInvalid",
  "DeltaNameDuplicate",
  "DeltaDtypeUnsupported",
  "DeltaShapeOverflow",
  "DeltaShapeMismatch",
  "DeltaOffsetsOverlap",
  "DeltaOffsetsGap",
  "DeltaOffsetsOutOfBounds",
  "DeltaTooLarge",
  "DeltaTruncated",
  "DeltaTrailingBytes",
  "DeltaLayoutInvalid",
  "EncodingUnknown",
  "EncodingNonFinite",
  "ManifestFieldInvalid",
  "ManifestSignatureInvalid",
  "ManifestKeyMismatch",
  "ManifestHeaderMismatch",
  "ManifestDigestMismatch",
] as const;
export type DeltaReason = (typeof DELTA_REASONS)[number];

export class DeltaError extends Error {
  override name = "DeltaError";
  readonly reason: DeltaReason;

  constructor(reason: DeltaReason, message: string, options?: { cause?: unknown }) {
    super(`${reason}: ${message}`, options);
    this.reason = reason;
  }
}

export function isDeltaError(err: unknown, reason?: DeltaReason): err is DeltaError {
  return err instanceof DeltaError && (reason === undefined || err.reason === reason);
}
