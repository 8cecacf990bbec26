/**
 * Reason codes for what the transport refuses or cannot do. Refusals of a delta's content
 * (signature, digests, layout) keep the deltas/ library's own codes; these cover what is
 * about the object in JetStream.
 */
export const TRANSPORT_REASONS = [
  /** No object under that name (not yet arrived, or removed). */
  "DeltaObjectMissing",
  /** The object carries no signed manifest in its metadata: not written by publishDelta. */
  "DeltaManifestMissing",
  /** The signed manifest names another run, round, region or learner than the object's place. */
  "DeltaAddressMismatch",
  /** The object is larger than the hub accepts; refused before a byte is read. */
  "DeltaObjectTooLarge",
  /** The object's bytes differ in length from the signed manifest. */
  "DeltaSizeMismatch",
  /** No global model for that round (yet). */
  "ModelObjectMissing",
  /** The global model's bytes do not hash to the digest the hub recorded. */
  "ModelDigestMismatch",
  /** A put did not store every chunk and its meta (JetStream refused or timed out); nothing became visible. */
  "ObjectPutFailed",
  /** A mirror stream exists under the name but mirrors something else. */
  "MirrorMisconfigured",
] as const;
export type TransportReason = (typeof TRANSPORT_REASONS)[number];

export class TransportError extends Error {
  override name = "TransportError";
  readonly reason: TransportReason;

  constructor(reason: TransportReason, message: string, options?: { cause?: unknown }) {
    super(`${reason}: ${message}`, options);
    this.reason = reason;
  }
}

export function isTransportError(err: unknown, reason?: TransportReason): err is TransportError {
  return err instanceof TransportError && (reason === undefined || err.reason === reason);
}
