/**
 * Reason codes of the audit trail: what the verifier reports for the first entry that does not
 * check out, and what the writer and its stores throw. Stable strings, like attestation's
 * `Reason`: an auditor's tooling greps for them; add new ones, never rename.
 */
export const AuditReason = {
  /** A line is not a canonical JSON audit entry (bad JSON, missing or ill-typed field, unknown apiVersion). */
  AuditMalformedLine: "AuditMalformedLine",
  /** The export ends early: the last line is cut off, the export is empty, or it stops before a checkpoint the auditor holds. */
  AuditTruncated: "AuditTruncated",
  /** An entry's `hash` is not the SHA-256 of its content: the entry was altered after it was written. */
  AuditHashMismatch: "AuditHashMismatch",
  /** An entry's `prev` is not the hash of the entry before it: an entry before it was replaced, or another log was spliced in. */
  AuditChainBroken: "AuditChainBroken",
  /** Sequence numbers skip: entries were dropped. */
  AuditSequenceGap: "AuditSequenceGap",
  /** An entry appears before one with a lower sequence number: entries were moved. */
  AuditReordered: "AuditReordered",
  /** An entry appears twice. */
  AuditDuplicateEntry: "AuditDuplicateEntry",
  /** An entry is dated before its predecessor; the writer never writes such entries. */
  AuditTimeReversed: "AuditTimeReversed",
  /** An entry is dated after the evaluation time (beyond the allowed clock skew). */
  AuditTimeInFuture: "AuditTimeInFuture",
  /** A checkpoint's signature does not verify with the trusted key, or it signs another position than where it stands. */
  AuditCheckpointInvalid: "AuditCheckpointInvalid",
  /** A checkpoint is signed by a key that is not among the trusted keys. */
  AuditCheckpointUnknownKey: "AuditCheckpointUnknownKey",
  /** The export holds another entry at the position a checkpoint the auditor holds has signed: the log was rewritten. */
  AuditCheckpointMismatch: "AuditCheckpointMismatch",
  /** The log names another log id than the one expected. */
  AuditLogIdMismatch: "AuditLogIdMismatch",
  /** The writer was handed a record it cannot store faithfully (reserved kind, empty subject, non-JSON value). */
  AuditRecordInvalid: "AuditRecordInvalid",
  /** The stored log is damaged before its last line; the writer refuses to append to it. */
  AuditStoreDamaged: "AuditStoreDamaged",
  /** Someone else wrote to the store since this writer last did: two writers at once. */
  AuditStoreConflict: "AuditStoreConflict",
  /** An earlier append failed midway; the store must be reopened (which recovers it) before appending again. */
  AuditStoreFailed: "AuditStoreFailed",
  /** A trusted-key file holds no Ed25519 public key, or one that does not parse. */
  AuditKeysInvalid: "AuditKeysInvalid",
} as const;

export type AuditReasonCode = (typeof AuditReason)[keyof typeof AuditReason];

export const ALL_AUDIT_REASONS: readonly AuditReasonCode[] = Object.values(AuditReason);
