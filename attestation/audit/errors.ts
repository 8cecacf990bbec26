import type { AuditReasonCode } from "./reasons.ts";

/** What the audit writer, its stores and the key loader throw: a reason code to grep for, and what to do. */
export class AuditError extends Error {
  override name = "AuditError";
  readonly reason: AuditReasonCode;
  constructor(reason: AuditReasonCode, message: string, options?: { cause?: unknown }) {
    super(`${reason}: ${message}`, options);
    this.reason = reason;
  }
}

export function isAuditError(err: unknown, reason?: AuditReasonCode): err is AuditError {
  return err instanceof AuditError && (reason === undefined || err.reason === reason);
}
