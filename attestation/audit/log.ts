/**
 * The writer: seals records into chained entries, signs a checkpoint every N entries or T
 * seconds, and hands each batch to the store in one append. Appends are serialised here (one
 * in flight at a time, in call order); across processes there must be one writer per log, the
 * operator leader (see FileAuditStore). Time comes only from the injected clock.
 */
import { type CheckpointSigner, type SignedCheckpoint, signCheckpoint } from "./checkpoint.ts";
import {
  AUDIT_API_VERSION,
  type AuditEntry,
  type AuditRecord,
  genesisHash,
  isPlainObject,
  type LogRecord,
  sealEntry,
  subjectOfLog,
} from "./entry.ts";
import { AuditError } from "./errors.ts";
import type { AuditStore } from "./store.ts";

export interface AuditLogOptions {
  /** Names the log; part of the chain's genesis and of every checkpoint. Pick one per operator deployment and keep it. */
  logId: string;
  signer: CheckpointSigner;
  clock: () => Date;
  /** A checkpoint follows at the latest this many entries after the previous one. Default 1000. */
  checkpointEveryEntries?: number;
  /** …or this long after it, at the next append or `checkpointIfDue()`. Default 300. */
  checkpointEverySeconds?: number;
  /** Recorded in the LogOpened entry of a new log. */
  openedBy?: string;
}

const DEFAULTS = {
  checkpointEveryEntries: 1000,
  checkpointEverySeconds: 300,
  openedBy: "sovereign-operator",
};
const RESERVED_KINDS = new Set(["LogOpened", "Checkpoint"]);
const KIND = /^[A-Z][A-Za-z0-9]{0,63}$/;
const ARRAY_INDEX = /^(0|[1-9][0-9]*)$/;

interface Position {
  seq: number;
  prev: string;
  lastTime: string;
  /** Entries other than checkpoints since the last checkpoint (or since the log opened). */
  sinceCheckpoint: number;
  lastCheckpointMs: number;
  latestCheckpoint: SignedCheckpoint | undefined;
}

type Due = "never" | "ifDue" | "now";

export class AuditLog {
  readonly logId: string;
  readonly #store: AuditStore;
  readonly #signer: CheckpointSigner;
  readonly #clock: () => Date;
  readonly #everyEntries: number;
  readonly #everyMs: number;
  #position: Position;
  #queue: Promise<unknown> = Promise.resolve();
  #failure: unknown;

  private constructor(store: AuditStore, options: AuditLogOptions, position: Position) {
    this.logId = options.logId;
    this.#store = store;
    this.#signer = options.signer;
    this.#clock = options.clock;
    this.#everyEntries = options.checkpointEveryEntries ?? DEFAULTS.checkpointEveryEntries;
    this.#everyMs = (options.checkpointEverySeconds ?? DEFAULTS.checkpointEverySeconds) * 1000;
    this.#position = position;
  }

  /** Opens the log in the store, resuming after its last entry, or starts it with a LogOpened entry. */
  static async open(store: AuditStore, options: AuditLogOptions): Promise<AuditLog> {
    if (options.logId.length === 0) throw new AuditError("AuditRecordInvalid", "logId must not be empty");
    const everyEntries = options.checkpointEveryEntries ?? DEFAULTS.checkpointEveryEntries;
    if (!Number.isSafeInteger(everyEntries) || everyEntries < 1) {
      throw new AuditError("AuditRecordInvalid", "checkpointEveryEntries must be a positive integer");
    }
    const head = await store.head();
    if (head === undefined) {
      const time = options.clock().toISOString();
      const opened = sealEntry({
        apiVersion: AUDIT_API_VERSION,
        seq: 0,
        time,
        kind: "LogOpened",
        subject: subjectOfLog(options.logId),
        body: { logId: options.logId, openedBy: options.openedBy ?? DEFAULTS.openedBy },
        prev: genesisHash(options.logId),
      }) as AuditEntry;
      await store.append([opened]);
      return new AuditLog(store, options, {
        seq: 1,
        prev: opened.hash,
        lastTime: time,
        sinceCheckpoint: 1,
        lastCheckpointMs: Date.parse(time),
        latestCheckpoint: undefined,
      });
    }
    return new AuditLog(store, options, await resume(store, head, options.logId, everyEntries));
  }

  get head(): { seq: number; hash: string } {
    return { seq: this.#position.seq - 1, hash: this.#position.prev };
  }

  /** The stored entries from `seq` on, in order (what this or an earlier writer appended). */
  entriesFrom(seq: number): AsyncIterable<AuditEntry> {
    return this.#store.readFrom(seq);
  }

  /** The newest checkpoint written: what to hand an auditor to keep, so later truncation shows. */
  get latestCheckpoint(): SignedCheckpoint | undefined {
    return this.#position.latestCheckpoint;
  }

  /** Appends records (and any checkpoint that falls due) in one store append; resolves with every entry written. */
  append(records: AuditRecord | readonly AuditRecord[]): Promise<AuditEntry[]> {
    const batch: readonly AuditRecord[] = Array.isArray(records) ? records : [records as AuditRecord];
    for (const record of batch) checkRecord(record);
    return this.#enqueue(batch, "ifDue");
  }

  /** Writes a checkpoint now if any entry is not yet covered by one; resolves with the newest checkpoint. */
  async checkpoint(): Promise<SignedCheckpoint | undefined> {
    await this.#enqueue([], "now");
    return this.#position.latestCheckpoint;
  }

  /** Writes a checkpoint if the time since the last one has run out. Call it from a timer. */
  async checkpointIfDue(): Promise<SignedCheckpoint | undefined> {
    await this.#enqueue([], "ifDue");
    return this.#position.latestCheckpoint;
  }

  #enqueue(records: readonly AuditRecord[], due: Due): Promise<AuditEntry[]> {
    const run = this.#queue.then(() => this.#write(records, due));
    this.#queue = run.catch(() => undefined);
    return run;
  }

  async #write(records: readonly AuditRecord[], due: Due): Promise<AuditEntry[]> {
    if (this.#failure !== undefined) {
      throw new AuditError(
        "AuditStoreFailed",
        "an earlier append failed, so where the log stands is unknown; open the log again to resume from what the store holds",
        { cause: this.#failure },
      );
    }
    const nowMs = this.#clock().getTime();
    const p = { ...this.#position };
    // Clocks step backwards (NTP); entries never do, so a verifier can refuse entries that do.
    const iso = new Date(nowMs).toISOString();
    const time = iso > p.lastTime ? iso : p.lastTime;
    const entries: AuditEntry[] = [];
    const add = (record: LogRecord): AuditEntry => {
      const entry = sealEntry({ apiVersion: AUDIT_API_VERSION, seq: p.seq, time, prev: p.prev, ...record });
      entries.push(entry as AuditEntry);
      p.seq++;
      p.prev = entry.hash;
      return entry as AuditEntry;
    };
    const addCheckpoint = async (): Promise<void> => {
      const signed = await signCheckpoint(
        { logId: this.logId, size: p.seq, head: p.prev, time },
        this.#signer,
      );
      add({ kind: "Checkpoint", subject: subjectOfLog(this.logId), body: signed });
      p.sinceCheckpoint = 0;
      p.lastCheckpointMs = nowMs;
      p.latestCheckpoint = signed;
    };
    for (const record of records) {
      add(record);
      p.sinceCheckpoint++;
      if (p.sinceCheckpoint >= this.#everyEntries) await addCheckpoint();
    }
    const timeIsUp = nowMs - p.lastCheckpointMs >= this.#everyMs;
    if (p.sinceCheckpoint > 0 && (due === "now" || (due === "ifDue" && timeIsUp))) await addCheckpoint();
    if (entries.length === 0) return entries;
    p.lastTime = time;
    try {
      await this.#store.append(entries);
    } catch (err) {
      this.#failure = err;
      throw err;
    }
    this.#position = p;
    return entries;
  }
}

async function resume(
  store: AuditStore,
  head: AuditEntry,
  logId: string,
  everyEntries: number,
): Promise<Position> {
  let first: AuditEntry | undefined;
  for await (const entry of store.readFrom(0)) {
    first = entry;
    break;
  }
  const storedLogId = first?.kind === "LogOpened" ? first.body.logId : undefined;
  if (first === undefined || storedLogId !== logId) {
    throw new AuditError(
      "AuditLogIdMismatch",
      `the store holds log ${JSON.stringify(storedLogId)}, not ${JSON.stringify(logId)}; point the operator at its own log, or keep the log id it was started with`,
    );
  }
  // Checkpoints are at most everyEntries apart, so the last one is within that window of the head
  // (unless the setting grew since: then one is due at once, which is harmless).
  let sinceCheckpoint = 0;
  let lastCheckpointMs = Date.parse(first.time);
  let latestCheckpoint: SignedCheckpoint | undefined;
  for await (const entry of store.readFrom(Math.max(0, head.seq - everyEntries))) {
    if (entry.kind === "Checkpoint") {
      sinceCheckpoint = 0;
      lastCheckpointMs = Date.parse(entry.time);
      latestCheckpoint = entry.body;
    } else sinceCheckpoint++;
  }
  if (latestCheckpoint === undefined && head.seq > everyEntries) sinceCheckpoint = everyEntries;
  return {
    seq: head.seq + 1,
    prev: head.hash,
    lastTime: head.time,
    sinceCheckpoint,
    lastCheckpointMs,
    latestCheckpoint,
  };
}

function checkRecord(record: AuditRecord): void {
  const { kind, subject, body } = record as { kind: unknown; subject: unknown; body: unknown };
  if (typeof kind !== "string" || !KIND.test(kind) || RESERVED_KINDS.has(kind)) {
    throw new AuditError(
      "AuditRecordInvalid",
      `kind ${JSON.stringify(kind)} cannot be appended: kinds are PascalCase, and LogOpened and Checkpoint are written by the log itself`,
    );
  }
  if (typeof subject !== "string" || subject.length === 0 || subject.length > 1024) {
    throw new AuditError("AuditRecordInvalid", `${kind}: subject must be a string of 1..1024 characters`);
  }
  if (!isPlainObject(body)) throw new AuditError("AuditRecordInvalid", `${kind}: body must be an object`);
  const problem = jsonProblem(body, "body");
  if (problem !== undefined) {
    throw new AuditError(
      "AuditRecordInvalid",
      `${kind} ${subject}: ${problem}; records hold JSON values only, so the stored entry says exactly what was appended`,
    );
  }
}

/** Why a value would not survive canonical JSON unchanged, or undefined when it would. */
function jsonProblem(value: unknown, path: string): string | undefined {
  switch (typeof value) {
    case "string":
      return value.isWellFormed() ? undefined : `${path} holds a lone surrogate`;
    case "number":
      return Number.isFinite(value) ? undefined : `${path} is ${value}`;
    case "boolean":
      return undefined;
    case "object": {
      if (value === null) return undefined;
      if (Array.isArray(value)) {
        for (const [i, item] of value.entries()) {
          if (item === undefined) return `${path}[${i}] is undefined`;
          const problem = jsonProblem(item, `${path}[${i}]`);
          if (problem !== undefined) return problem;
        }
        return undefined;
      }
      const proto = Object.getPrototypeOf(value);
      if (proto !== Object.prototype && proto !== null)
        return `${path} is a ${proto?.constructor?.name}, not a plain object`;
      for (const [key, item] of Object.entries(value)) {
        if (ARRAY_INDEX.test(key)) {
          // JavaScript iterates such keys numerically whatever their insertion order, so their
          // serialised order would differ from RFC 8785's (by UTF-16 code units).
          return `${path} has the integer-like key ${JSON.stringify(key)}; use a non-numeric key or an array`;
        }
        if (item === undefined) continue;
        const problem = jsonProblem(item, `${path}.${key}`);
        if (problem !== undefined) return problem;
      }
      return undefined;
    }
    default:
      return `${path} is a ${typeof value}`;
  }
}
