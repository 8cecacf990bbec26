import { Reason, type ReasonCode } from "./reasons.ts";

/** Every error this library throws: a reason code to grep for, and a message that says what to do. */
export class AttestationError extends Error {
  override name = "AttestationError";
  readonly reason: ReasonCode;
  constructor(reason: ReasonCode, message: string, options?: { cause?: unknown }) {
    super(`${reason}: ${message}`, options);
    this.reason = reason;
  }
}

/** A binary or text input did not have the expected layout; `offset` is where reading stopped. */
export class EvidenceParseError extends AttestationError {
  override name = "EvidenceParseError";
  readonly what: string;
  readonly offset: number | undefined;
  constructor(what: string, message: string, offset?: number, options?: { cause?: unknown }) {
    super(
      Reason.EvidenceMalformed,
      `${what}: ${message}${offset === undefined ? "" : ` (at byte ${offset})`}`,
      options,
    );
    this.what = what;
    this.offset = offset;
  }
}

export const isAttestationError = (e: unknown): e is AttestationError => e instanceof AttestationError;
export const isEvidenceParseError = (e: unknown): e is EvidenceParseError => e instanceof EvidenceParseError;
