/** Public API of the audit trail: the writer, its stores, the offline verifier. See docs/audit.md. */
export {
  CHECKPOINT_API_VERSION,
  CHECKPOINT_SIGNING_CONTEXT,
  type CheckpointSigner,
  type CheckpointStatement,
  checkCheckpoint,
  checkpointMessage,
  ed25519CheckpointSigner,
  type SignedCheckpoint,
  signCheckpoint,
} from "./checkpoint.ts";
export { AUDIT_USAGE, auditCommand, type CommandIo } from "./cli.ts";
export {
  type AttestationVerdictBody,
  AUDIT_API_VERSION,
  type AuditEntry,
  type AuditKind,
  type AuditRecord,
  type DeltaAcceptedBody,
  type DeltaRefusedBody,
  genesisHash,
  type LogOpenedBody,
  type NodeQuarantinedBody,
  type PodAdmittedBody,
  type RawAuditEntry,
  type RoundClosedBody,
  serializeEntry,
} from "./entry.ts";
export { AuditError, isAuditError } from "./errors.ts";
export { FileAuditStore, type FileStoreRecovery } from "./file-store.ts";
export { ed25519KeyId, parseTrustedKeys, type TrustedKey, trustedKey } from "./keys.ts";
export { AuditLog, type AuditLogOptions } from "./log.ts";
export { ALL_AUDIT_REASONS, AuditReason, type AuditReasonCode } from "./reasons.ts";
export {
  attestationVerdictRecord,
  deltaAcceptedRecord,
  deltaRefusedRecord,
  nodeQuarantinedRecord,
  podAdmittedRecord,
  roundClosedRecord,
} from "./records.ts";
export { formatAuditReport } from "./report.ts";
export { type AuditStore, exportAuditLog, MemoryAuditStore } from "./store.ts";
export { describeEntry } from "./summary.ts";
export {
  type AuditFailure,
  type AuditReport,
  AuditVerifier,
  type AuditVerifyOptions,
  type CheckpointReport,
  type EntryReport,
  verifyAuditExport,
  verifyAuditFile,
} from "./verify.ts";
