/**
 * Where entries are kept. Deliberately small, so a Kubernetes- or JetStream-backed store is a
 * few dozen lines. A store trusts its one writer (`AuditLog`) to hand it sealed, chained entries
 * in order; it is the store's job to keep them durably and in that order.
 */
import { type AuditEntry, serializeEntry } from "./entry.ts";

export interface AuditStore {
  /** Durably appends the entries, in order, after the current head. Resolves once they survive a crash. */
  append(entries: readonly AuditEntry[]): Promise<void>;
  /** The stored entries from `seq` on, in order. */
  readFrom(seq: number): AsyncIterable<AuditEntry>;
  /** The last stored entry, or undefined for an empty store. */
  head(): Promise<AuditEntry | undefined>;
}

/** For tests and tools: entries in an array. Survives a writer restart, not a process restart. */
export class MemoryAuditStore implements AuditStore {
  readonly entries: AuditEntry[] = [];

  async append(entries: readonly AuditEntry[]): Promise<void> {
    this.entries.push(...entries);
  }

  async *readFrom(seq: number): AsyncIterable<AuditEntry> {
    // Entries may be appended while a reader iterates; it sees them (as a tailing file reader would).
    for (let i = Math.max(0, seq); i < this.entries.length; i++) yield this.entries[i] as AuditEntry;
  }

  async head(): Promise<AuditEntry | undefined> {
    return this.entries.at(-1);
  }
}

/** The store's entries from `seq` on as export lines, each ending in a newline: what an auditor is given. */
export async function* exportAuditLog(store: AuditStore, seq = 0): AsyncIterable<string> {
  for await (const entry of store.readFrom(seq)) yield `${serializeEntry(entry)}\n`;
}
