// `node bench/audit.ts [entries] [dir]`: audit-trail throughput against baselines measured in
// the same run.
//   append: FileAuditStore (one write + fdatasync per batch) and AuditLog end to end (sealing,
//           a signed checkpoint every 1000 entries, the store) against fs.appendFileSync of the
//           same bytes followed by fsync (and by fdatasync, the store's call), per batch size;
//   verify: verifyAuditExport of the export text, and verifyAuditFile from disk, against plain
//           SHA-256 (node:crypto) of every line of the same bytes.
// Prints a table and writes bench/results/audit.json. `dir` (default: the OS temp dir) picks the
// file system the fsyncs hit.

import { createHash } from "node:crypto";
import { appendFileSync, closeSync, fdatasyncSync, fsyncSync, openSync, rmSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import {
  type AuditEntry,
  AuditLog,
  FileAuditStore,
  MemoryAuditStore,
  serializeEntry,
  verifyAuditExport,
  verifyAuditFile,
} from "../attestation/audit/mod.ts";
import { fakeClock, logOptions, record, trusted } from "../test/attestation/audit/helpers.ts";

const total = Number(process.argv[2] ?? 20_000);
const dir = await mkdtemp(join(process.argv[3] ?? tmpdir(), "sovereign-audit-bench-"));
const everyEntries = 1000;

function seconds(fn: () => void): number {
  const t0 = performance.now();
  fn();
  return (performance.now() - t0) / 1000;
}
async function secondsAsync(fn: () => Promise<void>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return (performance.now() - t0) / 1000;
}

// The entries every append variant writes: a realistic mix of kinds, checkpoints included.
const memory = new MemoryAuditStore();
const source = await AuditLog.open(memory, logOptions(fakeClock(), { checkpointEveryEntries: everyEntries }));
for (let i = 0; i < total; i += 100)
  await source.append(Array.from({ length: 100 }, (_, j) => record(i + j)));
const entries = memory.entries;
const lines = entries.map(serializeEntry);
const text = `${lines.join("\n")}\n`;
const bytes = Buffer.byteLength(text);
const meanBytes = Math.round(bytes / entries.length);

const ROUNDS = 3;
const appendResults = [];
for (const batch of [1, 16, 256]) {
  // fsync per entry is slow on most disks: fewer entries for small batches, same for every variant.
  const n = Math.min(entries.length, batch * 400);
  const batches: AuditEntry[][] = [];
  for (let i = 0; i < n; i += batch) batches.push(entries.slice(i, i + batch));
  const batchBytes = batches.map((b) => Buffer.from(`${b.map(serializeEntry).join("\n")}\n`));
  const records = Array.from({ length: n }, (_, i) => record(i));
  const raw = (sync: (fd: number) => void) => {
    const path = join(dir, "raw.jsonl");
    const fd = openSync(path, "a");
    const s = seconds(() => {
      for (const b of batchBytes) {
        appendFileSync(fd, b);
        sync(fd);
      }
    });
    closeSync(fd);
    rmSync(path);
    return s;
  };
  const viaStore = async () => {
    const path = join(dir, "store.jsonl");
    const store = await FileAuditStore.open(path);
    const s = await secondsAsync(async () => {
      for (const b of batches) await store.append(b);
    });
    await store.close();
    await rm(path);
    return s;
  };
  // End to end: records in, sealed and checkpointed entries out (n counts records here).
  const viaLog = async () => {
    const path = join(dir, "log.jsonl");
    const store = await FileAuditStore.open(path);
    const log = await AuditLog.open(store, logOptions(fakeClock(), { checkpointEveryEntries: everyEntries }));
    const s = await secondsAsync(async () => {
      for (let i = 0; i < n; i += batch) await log.append(records.slice(i, i + batch));
    });
    await store.close();
    await rm(path);
    return s;
  };
  // Interleaved rounds, best of each: the variants see the same disk and load conditions.
  const bestOf = { rawFsync: Infinity, rawFdatasync: Infinity, store: Infinity, log: Infinity };
  for (let round = 0; round < ROUNDS; round++) {
    bestOf.rawFsync = Math.min(bestOf.rawFsync, raw(fsyncSync));
    bestOf.rawFdatasync = Math.min(bestOf.rawFdatasync, raw(fdatasyncSync));
    bestOf.store = Math.min(bestOf.store, await viaStore());
    bestOf.log = Math.min(bestOf.log, await viaLog());
  }
  appendResults.push({
    batch,
    entries: n,
    rawFsyncEntriesPerSecond: n / bestOf.rawFsync,
    rawFdatasyncEntriesPerSecond: n / bestOf.rawFdatasync,
    storeEntriesPerSecond: n / bestOf.store,
    logEntriesPerSecond: n / bestOf.log,
    storeVsRawFsync: bestOf.rawFsync / bestOf.store,
    storeVsRawFdatasync: bestOf.rawFdatasync / bestOf.store,
    logVsRawFsync: bestOf.rawFsync / bestOf.log,
  });
}

function best(runs: number, fn: () => void): number {
  let min = Number.POSITIVE_INFINITY;
  for (let i = 0; i < runs; i++) min = Math.min(min, seconds(fn));
  return min;
}
const hashSeconds = best(ROUNDS, () => {
  for (const line of lines) createHash("sha256").update(line).digest("hex");
});
let verified = 0;
const verifySeconds = best(ROUNDS, () => {
  const report = verifyAuditExport(text, { trustedKeys: trusted });
  if (!report.ok) throw new Error(`the bench export does not verify: ${report.failure?.message}`);
  verified = report.entriesVerified;
});
const exportPath = join(dir, "export.jsonl");
await writeFile(exportPath, text);
let verifyFileSeconds = Number.POSITIVE_INFINITY;
for (let round = 0; round < ROUNDS; round++) {
  verifyFileSeconds = Math.min(
    verifyFileSeconds,
    await secondsAsync(async () => {
      await verifyAuditFile(exportPath, { trustedKeys: trusted });
    }),
  );
}
await rm(dir, { recursive: true, force: true });

const verify = {
  entries: verified,
  checkpoints: entries.filter((e) => e.kind === "Checkpoint").length,
  rawSha256EntriesPerSecond: lines.length / hashSeconds,
  verifyEntriesPerSecond: verified / verifySeconds,
  verifyFileEntriesPerSecond: verified / verifyFileSeconds,
  verifyVsRawSha256: hashSeconds / verifySeconds,
  verifyFileVsRawSha256: hashSeconds / verifyFileSeconds,
  verifyMiBps: bytes / 2 ** 20 / verifySeconds,
};

const k = (n: number) => `${(n / 1000).toFixed(1)}k`.padStart(8);
console.log(
  `${entries.length} entries (${total} records + checkpoints every ${everyEntries}), mean ${meanBytes} B/line, ${(bytes / 2 ** 20).toFixed(1)} MiB; files in ${dir}`,
);
console.log(
  "append, entries/s    batch  raw+fsync  raw+fdatasync    store   ×fsync ×fdatasync   AuditLog   ×fsync",
);
for (const r of appendResults) {
  console.log(
    `${" ".repeat(20)} ${String(r.batch).padStart(5)} ${k(r.rawFsyncEntriesPerSecond)}   ${k(r.rawFdatasyncEntriesPerSecond)}     ${k(r.storeEntriesPerSecond)} ${r.storeVsRawFsync.toFixed(2).padStart(8)} ${r.storeVsRawFdatasync.toFixed(2).padStart(10)} ${k(r.logEntriesPerSecond)}   ${r.logVsRawFsync.toFixed(2).padStart(6)}`,
  );
}
console.log(
  `verify, entries/s    raw sha256 ${k(verify.rawSha256EntriesPerSecond)}; verifyAuditExport ${k(verify.verifyEntriesPerSecond)} (×${verify.verifyVsRawSha256.toFixed(2)}, ${verify.verifyMiBps.toFixed(0)} MiB/s); verifyAuditFile ${k(verify.verifyFileEntriesPerSecond)} (×${verify.verifyFileVsRawSha256.toFixed(2)})`,
);
const out = resolve(import.meta.dirname, "results");
await mkdir(out, { recursive: true });
await writeFile(
  join(out, "audit.json"),
  `${JSON.stringify({ node: process.version, records: total, entries: entries.length, meanLineBytes: meanBytes, append: appendResults, verify }, null, 2)}\n`,
);
console.log(`wrote ${join(out, "audit.json")}`);
