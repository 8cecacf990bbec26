/**
 * The audit log as an append-only JSON-lines file: the file is itself an export. Appends are
 * written in one write per batch and made durable with fdatasync before they are acknowledged.
 * Opening the file re-verifies the whole chain; bytes after the last newline are a write a crash
 * cut off (never acknowledged), and are moved aside to a `.torn-<offset>` file and reported,
 * so the writer resumes from the last whole entry.
 *
 * One writer per file. Nothing locks the file (a lock file outlives a crashed writer); the
 * operator's leader Lease keeps a second writer away, and each append checks that the file is
 * still the size this writer left it, so a second writer is caught at its next append.
 */
import { type FileHandle, open, writeFile } from "node:fs/promises";
import { dirname } from "node:path";
import { type AuditEntry, checkEntryLine, genesisHash, type RawAuditEntry, serializeEntry } from "./entry.ts";
import { AuditError } from "./errors.ts";
import type { AuditStore } from "./store.ts";

export interface FileStoreRecovery {
  /** Whole entries found (and verified) in the file when it was opened. */
  entries: number;
  /** A cut-off last write found at open and moved aside. */
  tornTail?: { offset: number; bytes: number; savedTo: string };
}

const NEWLINE = 0x0a;
/** Every INDEX_STRIDE-th entry's byte offset is kept, so `readFrom` starts near its seq. */
const INDEX_STRIDE = 1024;
const READ_CHUNK = 1 << 20;

export class FileAuditStore implements AuditStore {
  readonly path: string;
  readonly recovery: FileStoreRecovery;
  readonly #handle: FileHandle;
  #size: number;
  #head: RawAuditEntry | undefined;
  readonly #offsets: number[];
  #failure: unknown;

  private constructor(path: string, handle: FileHandle, scan: Scan, recovery: FileStoreRecovery) {
    this.path = path;
    this.#handle = handle;
    this.#size = scan.size;
    this.#head = scan.head;
    this.#offsets = scan.offsets;
    this.recovery = recovery;
  }

  /** Opens (or creates) the log file, verifying it and setting a torn last write aside. */
  static async open(path: string): Promise<FileAuditStore> {
    const handle = await open(path, "a+");
    try {
      if ((await handle.stat()).size === 0) await syncDirectory(dirname(path));
      const scan = await scanFile(handle, path);
      const recovery: FileStoreRecovery = { entries: scan.entries };
      const fileSize = (await handle.stat()).size;
      if (fileSize > scan.size) {
        const torn = Buffer.alloc(fileSize - scan.size);
        await handle.read(torn, 0, torn.length, scan.size);
        const savedTo = `${path}.torn-${scan.size}`;
        await writeFile(savedTo, torn, { flush: true });
        await handle.truncate(scan.size);
        await handle.sync();
        recovery.tornTail = { offset: scan.size, bytes: torn.length, savedTo };
      }
      return new FileAuditStore(path, handle, scan, recovery);
    } catch (err) {
      await handle.close();
      throw err;
    }
  }

  async append(entries: readonly AuditEntry[]): Promise<void> {
    if (this.#failure !== undefined) {
      throw new AuditError(
        "AuditStoreFailed",
        `an earlier append to ${this.path} failed midway; reopen the store (it recovers the file) before appending again`,
        { cause: this.#failure },
      );
    }
    if (entries.length === 0) return;
    this.#checkContinues(entries);
    const { size } = await this.#handle.stat();
    if (size !== this.#size) {
      throw new AuditError(
        "AuditStoreConflict",
        `${this.path} is ${size} bytes, but this writer left it at ${this.#size}: another process writes to it. Only one writer per log (the operator leader); reopen the store to resume from what is on disk`,
      );
    }
    const lines = entries.map(serializeEntry);
    const bytes = Buffer.from(`${lines.join("\n")}\n`, "utf8");
    try {
      let written = 0;
      while (written < bytes.length) {
        written += (await this.#handle.write(bytes, written, bytes.length - written)).bytesWritten;
      }
      await this.#handle.datasync();
    } catch (err) {
      this.#failure = err;
      throw new AuditError(
        "AuditStoreFailed",
        `appending to ${this.path} failed; nothing of this batch counts as written. Reopen the store to recover`,
        { cause: err },
      );
    }
    for (const [i, entry] of entries.entries()) {
      // Measured only for the rare indexed entry: byte lengths of every line cost more than the write.
      if (entry.seq % INDEX_STRIDE === 0) {
        const before = i === 0 ? 0 : Buffer.byteLength(lines.slice(0, i).join("\n")) + 1;
        this.#offsets[entry.seq / INDEX_STRIDE] = this.#size + before;
      }
    }
    this.#size += bytes.length;
    this.#head = entries.at(-1) as unknown as RawAuditEntry;
  }

  async *readFrom(seq: number): AsyncIterable<AuditEntry> {
    const first = Math.max(0, seq);
    const start = this.#offsets[Math.min(Math.floor(first / INDEX_STRIDE), this.#offsets.length - 1)] ?? 0;
    // Only what was acknowledged when reading began: a concurrent append is not half-read.
    for await (const { line } of readLines(this.#handle, start, this.#size)) {
      const entry = JSON.parse(line) as AuditEntry;
      if (entry.seq >= first) yield entry;
    }
  }

  async head(): Promise<AuditEntry | undefined> {
    return this.#head as AuditEntry | undefined;
  }

  async close(): Promise<void> {
    await this.#handle.close();
  }

  #checkContinues(entries: readonly AuditEntry[]): void {
    let seq = this.#head === undefined ? 0 : this.#head.seq + 1;
    let prev = this.#head?.hash;
    for (const entry of entries) {
      if (entry.seq !== seq || (prev !== undefined && entry.prev !== prev)) {
        throw new AuditError(
          "AuditStoreConflict",
          `entry seq ${entry.seq} does not continue ${this.path} (next is seq ${seq}): two writers share this store, or one was not reopened after a failure`,
        );
      }
      seq++;
      prev = entry.hash;
    }
  }
}

interface Scan {
  /** Bytes up to and including the last newline. */
  size: number;
  entries: number;
  head: RawAuditEntry | undefined;
  offsets: number[];
}

async function scanFile(handle: FileHandle, path: string): Promise<Scan> {
  const scan: Scan = { size: 0, entries: 0, head: undefined, offsets: [] };
  const end = (await handle.stat()).size;
  let lineNo = 0;
  for await (const { line, offset } of readLines(handle, 0, end)) {
    lineNo++;
    const check = checkEntryLine(line);
    const entry = check.ok ? check.entry : undefined;
    const problem = !check.ok
      ? `${check.reason}: ${check.message}`
      : entry?.seq !== scan.entries
        ? `AuditSequenceGap: seq ${entry?.seq} where seq ${scan.entries} belongs`
        : entry.prev !== (scan.head?.hash ?? genesisHash(String(entry.body.logId)))
          ? "AuditChainBroken: the entry does not link to the one before it"
          : undefined;
    if (problem !== undefined || entry === undefined) {
      throw new AuditError(
        "AuditStoreDamaged",
        `${path} line ${lineNo}: ${problem}. The log is damaged before its end, so nothing is appended to it: keep the file for the auditor ('sovereign audit verify ${path} --keys …' shows what it still proves) and start a new log under a new log id`,
      );
    }
    if (entry.seq % INDEX_STRIDE === 0) scan.offsets.push(offset);
    scan.head = entry;
    scan.entries++;
    scan.size = offset + Buffer.byteLength(line) + 1;
  }
  return scan;
}

/** Newline-terminated lines of the byte range [start, end); what follows the last newline is not yielded. */
async function* readLines(
  handle: FileHandle,
  start: number,
  end: number,
): AsyncIterable<{ line: string; offset: number }> {
  const chunk = Buffer.alloc(READ_CHUNK);
  let carry = Buffer.alloc(0);
  let carryOffset = start;
  for (let position = start; position < end; ) {
    const { bytesRead } = await handle.read(chunk, 0, Math.min(READ_CHUNK, end - position), position);
    if (bytesRead === 0) break;
    position += bytesRead;
    const data =
      carry.length === 0
        ? chunk.subarray(0, bytesRead)
        : Buffer.concat([carry, chunk.subarray(0, bytesRead)]);
    let from = 0;
    for (let nl = data.indexOf(NEWLINE); nl !== -1; nl = data.indexOf(NEWLINE, from)) {
      yield { line: data.toString("utf8", from, nl), offset: carryOffset + from };
      from = nl + 1;
    }
    carry = Buffer.from(data.subarray(from));
    carryOffset += from;
  }
}

async function syncDirectory(dir: string): Promise<void> {
  // Makes the new file's directory entry durable, not only its data.
  const handle = await open(dir, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
