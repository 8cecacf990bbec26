/**
 * Offline verification of an exported audit log: what a regulator runs. Reads JSON lines in
 * order and stops at the first entry that does not check out, naming it by line number and
 * reason code; everything before it is verified and summarised. Reads no clock: the evaluation
 * time is an input. Never throws on any input.
 */
import { createReadStream } from "node:fs";
import { StringDecoder } from "node:string_decoder";
import { type CheckpointCheck, checkCheckpoint } from "./checkpoint.ts";
import { checkEntryLine, genesisHash, isPlainObject, type RawAuditEntry, subjectOfLog } from "./entry.ts";
import type { TrustedKey } from "./keys.ts";
import { AuditReason, type AuditReasonCode } from "./reasons.ts";
import { describeEntry } from "./summary.ts";

export interface AuditVerifyOptions {
  /** Keys whose checkpoints are accepted; a checkpoint by any other key fails the verification. */
  trustedKeys: readonly TrustedKey[];
  /** The evaluation time: entries dated later (beyond `clockSkewSeconds`) fail. Omit to skip that check. */
  at?: Date;
  clockSkewSeconds?: number;
  /** The log id the auditor expects; another log fails with AuditLogIdMismatch. */
  logId?: string;
  /**
   * The newest checkpoint the auditor kept from before (a checkpoint, or a Checkpoint entry line
   * parsed). Without one, entries dropped from the end of an export cannot be noticed.
   */
  heldCheckpoint?: unknown;
}

export interface EntryReport {
  line: number;
  seq: number;
  time: string;
  kind: string;
  subject: string;
  hash: string;
  /** What the entry attests, in one line. */
  attests: string;
  /** Covered by a valid checkpoint (in the export or held by the auditor). */
  checkpointed: boolean;
}

export interface CheckpointReport {
  line: number;
  seq: number;
  /** Entries 0..size-1 are covered. */
  size: number;
  head: string;
  time: string;
  keyId: string;
}

export interface AuditFailure {
  reason: AuditReasonCode;
  message: string;
  /** 1-based line of the export; absent when the failure is about the held checkpoint. */
  line?: number;
  seq?: number;
}

export interface AuditReport {
  ok: boolean;
  logId?: string;
  evaluatedAt?: string;
  linesRead: number;
  /** Entries whose hash, position and chain link verified (all of them when ok). */
  entriesVerified: number;
  entries: EntryReport[];
  checkpoints: CheckpointReport[];
  /** Entries 0..checkpointedEntries-1 are covered by a valid checkpoint. */
  checkpointedEntries: number;
  /** Verified entries after the last checkpoint: only the chain vouches for them, and only up to the end of the export. */
  uncheckpointed?: { fromSeq: number; toSeq: number };
  heldCheckpoint?: { size: number; time: string; keyId: string };
  failure?: AuditFailure;
}

const DEFAULT_CLOCK_SKEW_SECONDS = 300;

const entryRange = (from: number, to: number): string =>
  from === to ? `entry ${from} was` : `entries ${from}..${to} were`;

/** Line-by-line verifier, for exports too large to hold in memory as text. */
export class AuditVerifier {
  readonly #options: AuditVerifyOptions;
  #lineNo = 0;
  #logId: string | undefined;
  #lastTime: string | undefined;
  readonly #hashes: string[] = [];
  readonly #entries: EntryReport[] = [];
  readonly #checkpoints: CheckpointReport[] = [];
  #checkpointedEntries = 0;
  #failure: AuditFailure | undefined;
  /** A seq jump seen, not yet told apart: dropped entries, or moved ones that show up further down. */
  #gap: { line: number; seq: number; expected: number } | undefined;

  constructor(options: AuditVerifyOptions) {
    this.#options = options;
  }

  /** One complete line of the export, without its newline. */
  line(text: string): void {
    this.#lineNo++;
    if (this.#gap !== undefined) {
      this.#lookForMovedEntry(text);
      return;
    }
    if (this.#failure !== undefined) return;
    const check = checkEntryLine(text);
    if (!check.ok) {
      this.#fail(check.reason, check.message, check.entry?.seq);
      return;
    }
    const entry = check.entry;
    if (
      this.#placed(entry) &&
      this.#chained(entry) &&
      this.#timely(entry) &&
      this.#signedWhereItStands(entry)
    ) {
      this.#accept(entry);
    }
  }

  /** Ends the export. `unterminated` is what followed the last newline, if anything. */
  finish(unterminated?: string): AuditReport {
    if (unterminated !== undefined && unterminated !== "") {
      const failedBefore = this.#failure !== undefined || this.#gap !== undefined;
      this.line(unterminated);
      if (!failedBefore && this.#failure?.reason === AuditReason.AuditMalformedLine) {
        this.#failure = {
          ...this.#failure,
          reason: AuditReason.AuditTruncated,
          message: `the last line is cut off (${this.#failure.message}): the export was truncated mid-entry, or copied while being written; export again`,
        };
      }
    }
    if (this.#gap !== undefined) {
      const { line, seq, expected } = this.#gap;
      this.#gap = undefined;
      this.#fail(
        AuditReason.AuditSequenceGap,
        expected === 0
          ? `the export starts at seq ${seq}: ${entryRange(0, seq - 1)} dropped from its start`
          : `entry seq ${seq} follows seq ${expected - 1}: ${entryRange(expected, seq - 1)} dropped`,
        seq,
        line,
      );
    }
    if (this.#failure === undefined && this.#entries.length === 0) {
      this.#fail(AuditReason.AuditTruncated, "the export holds no entries", undefined, this.#lineNo + 1);
    }
    const held = this.#failure === undefined ? this.#checkHeldCheckpoint() : undefined;
    const verified = this.#entries.length;
    for (const e of this.#entries) e.checkpointed = e.seq < this.#checkpointedEntries;
    return {
      ok: this.#failure === undefined,
      logId: this.#logId,
      evaluatedAt: this.#options.at?.toISOString(),
      linesRead: this.#lineNo,
      entriesVerified: verified,
      entries: this.#entries,
      checkpoints: this.#checkpoints,
      checkpointedEntries: Math.min(this.#checkpointedEntries, verified),
      uncheckpointed:
        verified > this.#checkpointedEntries
          ? { fromSeq: this.#checkpointedEntries, toSeq: verified - 1 }
          : undefined,
      heldCheckpoint: held,
      failure: this.#failure,
    };
  }

  /** Records the first failure only; `line` null for a failure that is about no line of the export. */
  #fail(reason: AuditReasonCode, message: string, seq?: number, line: number | null = this.#lineNo): false {
    this.#failure ??= { reason, message, line: line ?? undefined, seq };
    return false;
  }

  #placed(entry: RawAuditEntry): boolean {
    const expected = this.#hashes.length;
    if (entry.seq === expected) return true;
    if (entry.seq > expected) {
      this.#gap = { line: this.#lineNo, seq: entry.seq, expected };
      return false;
    }
    if (this.#hashes[entry.seq] === entry.hash) {
      const first = this.#entries[entry.seq]?.line;
      return this.#fail(
        AuditReason.AuditDuplicateEntry,
        `entry seq ${entry.seq} appeared before, at line ${first}: an entry was duplicated`,
        entry.seq,
      );
    }
    return this.#fail(
      AuditReason.AuditChainBroken,
      `a second, different entry claims seq ${entry.seq} (expected seq ${expected}): another log's entries were spliced in`,
      entry.seq,
    );
  }

  #lookForMovedEntry(text: string): void {
    const gap = this.#gap;
    if (gap === undefined) return;
    let seq: unknown;
    try {
      const value: unknown = JSON.parse(text);
      seq = isPlainObject(value) ? value.seq : undefined;
    } catch {
      return;
    }
    if (typeof seq === "number" && seq >= gap.expected && seq < gap.seq) {
      this.#gap = undefined;
      this.#fail(
        AuditReason.AuditReordered,
        `entry seq ${gap.seq} stands where seq ${gap.expected} belongs, and seq ${seq} comes later, at line ${this.#lineNo}: entries were moved`,
        gap.seq,
        gap.line,
      );
    }
  }

  #chained(entry: RawAuditEntry): boolean {
    if (entry.seq === 0) return this.#opensLog(entry);
    if (entry.prev !== this.#hashes[entry.seq - 1]) {
      return this.#fail(
        AuditReason.AuditChainBroken,
        `entry seq ${entry.seq} does not link to the entry before it (prev ${entry.prev.slice(0, 12)}… ≠ ${this.#hashes[entry.seq - 1]?.slice(0, 12)}…): the entry before was replaced, or this one comes from another log`,
        entry.seq,
      );
    }
    if (entry.kind === "LogOpened") {
      return this.#fail(
        AuditReason.AuditChainBroken,
        `entry seq ${entry.seq} opens a log again: only entry 0 may be LogOpened`,
        entry.seq,
      );
    }
    return true;
  }

  #opensLog(entry: RawAuditEntry): boolean {
    const logId = entry.body.logId;
    if (entry.kind !== "LogOpened" || typeof logId !== "string" || logId.length === 0) {
      return this.#fail(
        AuditReason.AuditMalformedLine,
        "entry 0 is not a LogOpened entry naming its logId; every log starts with one",
        0,
      );
    }
    if (this.#options.logId !== undefined && logId !== this.#options.logId) {
      return this.#fail(
        AuditReason.AuditLogIdMismatch,
        `this is log ${JSON.stringify(logId)}, not the expected ${JSON.stringify(this.#options.logId)}; check you were handed the right export`,
        0,
      );
    }
    if (entry.prev !== genesisHash(logId) || entry.subject !== subjectOfLog(logId)) {
      return this.#fail(
        AuditReason.AuditChainBroken,
        `entry 0 does not start the chain of log ${JSON.stringify(logId)} (prev must be its genesis hash, subject ${subjectOfLog(logId)})`,
        0,
      );
    }
    this.#logId = logId;
    return true;
  }

  #timely(entry: RawAuditEntry): boolean {
    if (this.#lastTime !== undefined && entry.time < this.#lastTime) {
      return this.#fail(
        AuditReason.AuditTimeReversed,
        `entry seq ${entry.seq} is dated ${entry.time}, before the entry ahead of it (${this.#lastTime}); the writer never dates entries backwards`,
        entry.seq,
      );
    }
    const { at } = this.#options;
    const skewMs = (this.#options.clockSkewSeconds ?? DEFAULT_CLOCK_SKEW_SECONDS) * 1000;
    if (at !== undefined && Date.parse(entry.time) > at.getTime() + skewMs) {
      return this.#fail(
        AuditReason.AuditTimeInFuture,
        `entry seq ${entry.seq} is dated ${entry.time}, after the evaluation time ${at.toISOString()}: the writer's clock was wrong or the entry was forged; verify as of a later time only if you know why`,
        entry.seq,
      );
    }
    return true;
  }

  #signedWhereItStands(entry: RawAuditEntry): boolean {
    if (entry.kind !== "Checkpoint") return true;
    const check = checkCheckpoint(entry.body, this.#options.trustedKeys);
    if (!check.ok) return this.#fail(check.reason, check.message, entry.seq);
    const c = check.checkpoint;
    // The signature covers the body only; these tie the envelope to it, so the whole checkpoint
    // entry is vouched for and counts as covered itself.
    const misplaced =
      c.logId !== this.#logId
        ? `it signs log ${JSON.stringify(c.logId)}`
        : c.size !== entry.seq
          ? `it signs ${c.size} entries but stands at seq ${entry.seq}`
          : c.head !== entry.prev
            ? "the head it signs is not the hash of the entry before it"
            : c.time !== entry.time
              ? `it is signed at ${c.time} but the entry is dated ${entry.time}`
              : entry.subject !== subjectOfLog(c.logId)
                ? `its subject is not ${subjectOfLog(c.logId)}`
                : undefined;
    if (misplaced !== undefined) {
      return this.#fail(
        AuditReason.AuditCheckpointInvalid,
        `checkpoint at seq ${entry.seq} is valid but misplaced: ${misplaced}`,
        entry.seq,
      );
    }
    this.#checkpointedEntries = entry.seq + 1;
    this.#checkpoints.push({
      line: this.#lineNo,
      seq: entry.seq,
      size: c.size,
      head: c.head,
      time: c.time,
      keyId: c.keyId,
    });
    return true;
  }

  #accept(entry: RawAuditEntry): void {
    this.#hashes.push(entry.hash);
    this.#lastTime = entry.time;
    this.#entries.push({
      line: this.#lineNo,
      seq: entry.seq,
      time: entry.time,
      kind: entry.kind,
      subject: entry.subject,
      hash: entry.hash,
      attests: describeEntry(entry),
      checkpointed: false,
    });
  }

  #checkHeldCheckpoint(): AuditReport["heldCheckpoint"] {
    const heldValue = this.#options.heldCheckpoint;
    if (heldValue === undefined) return undefined;
    const check: CheckpointCheck = checkCheckpoint(
      isPlainObject(heldValue) && heldValue.kind === "Checkpoint" ? heldValue.body : heldValue,
      this.#options.trustedKeys,
    );
    if (!check.ok) {
      this.#fail(check.reason, `the checkpoint you hold: ${check.message}`, undefined, null);
      return undefined;
    }
    const c = check.checkpoint;
    const held = { size: c.size, time: c.time, keyId: c.keyId };
    const verified = this.#hashes.length;
    if (c.logId !== this.#logId) {
      this.#fail(
        AuditReason.AuditLogIdMismatch,
        `the checkpoint you hold is for log ${JSON.stringify(c.logId)}, this export is log ${JSON.stringify(this.#logId)}`,
        undefined,
        null,
      );
    } else if (c.size > verified) {
      this.#fail(
        AuditReason.AuditTruncated,
        `the export ends at seq ${verified - 1}, but the checkpoint you hold (signed ${c.time} by ${c.keyId}) covers ${c.size} entries: ${entryRange(verified, c.size - 1)} dropped from the end`,
        verified,
        this.#lineNo + 1,
      );
    } else if (this.#hashes[c.size - 1] !== c.head) {
      this.#fail(
        AuditReason.AuditCheckpointMismatch,
        `entry seq ${c.size - 1} is not the one the checkpoint you hold (signed ${c.time}) signed: the log was rewritten since`,
        c.size - 1,
        this.#entries[c.size - 1]?.line,
      );
    } else {
      this.#checkpointedEntries = Math.max(this.#checkpointedEntries, c.size);
    }
    return held;
  }
}

/**
 * Verifies an export given as its whole text (a missing final newline is how a cut-off export
 * shows) or as its lines.
 */
export function verifyAuditExport(
  input: string | Iterable<string>,
  options: AuditVerifyOptions,
): AuditReport {
  const verifier = new AuditVerifier(options);
  if (typeof input !== "string") {
    for (const line of input) verifier.line(line);
    return verifier.finish();
  }
  const lines = input.split("\n");
  const last = lines.pop();
  for (const line of lines) verifier.line(line);
  return verifier.finish(last);
}

/** Verifies an export file as it streams in; memory grows with the per-entry report only. */
export async function verifyAuditFile(path: string, options: AuditVerifyOptions): Promise<AuditReport> {
  const verifier = new AuditVerifier(options);
  const decoder = new StringDecoder("utf8");
  let pending = "";
  for await (const chunk of createReadStream(path)) {
    const lines = (pending + decoder.write(chunk as Buffer)).split("\n");
    pending = lines.pop() ?? "";
    for (const line of lines) verifier.line(line);
  }
  return verifier.finish(pending + decoder.end());
}
