// The JSON-lines file store: the file is a valid export, a restart continues the chain, a write
// cut off by a crash is detected, set aside and reported, damage before the end stops the
// writer, and a second writer is caught.
import { existsSync } from "node:fs";
import { appendFile, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import test, { type ExecutionContext } from "ava";
import {
  AuditLog,
  AuditReason,
  FileAuditStore,
  isAuditError,
  serializeEntry,
  verifyAuditFile,
} from "../../../attestation/audit/mod.ts";
import { fakeClock, logOptions, record, trusted, verifyAt } from "./helpers.ts";

async function tempLog(t: ExecutionContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "sovereign-audit-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return join(dir, "audit.jsonl");
}

const verifyFile = (path: string) => verifyAuditFile(path, { trustedKeys: trusted, at: verifyAt });

async function writeRecords(path: string, from: number, to: number, clock = fakeClock()) {
  const store = await FileAuditStore.open(path);
  const log = await AuditLog.open(store, logOptions(clock));
  for (let i = from; i < to; i++) {
    clock.advance(1000);
    await log.append(record(i));
  }
  await store.close();
  return { store, log };
}

test("the file is the export: it verifies as written, and reads back entry for entry", async (t) => {
  const path = await tempLog(t);
  const { log } = await writeRecords(path, 0, 12);
  const report = await verifyFile(path);
  t.true(report.ok, report.failure?.message);
  t.is(report.entriesVerified, log.head.seq + 1);
  const store = await FileAuditStore.open(path);
  t.teardown(() => store.close());
  t.deepEqual(store.recovery, { entries: log.head.seq + 1 });
  const lines: string[] = [];
  for await (const entry of store.readFrom(0)) lines.push(`${serializeEntry(entry)}\n`);
  t.is(lines.join(""), await readFile(path, "utf8"));
  t.is((await store.head())?.hash, log.head.hash);
});

test("a writer restarted on the file continues the chain", async (t) => {
  const path = await tempLog(t);
  const clock = fakeClock();
  const first = await writeRecords(path, 0, 7, clock);
  const second = await writeRecords(path, 7, 14, clock);
  const report = await verifyFile(path);
  t.true(report.ok, report.failure?.message);
  t.is(report.entries.filter((e) => e.kind === "LogOpened").length, 1);
  const resumed = report.entries.find((e) => e.seq === first.log.head.seq + 1);
  t.is(resumed?.kind, record(7).kind);
  t.is(report.entriesVerified, second.log.head.seq + 1);
});

test("a torn last write is reported by the verifier, set aside on reopen, and the writer resumes", async (t) => {
  const path = await tempLog(t);
  const clock = fakeClock();
  const { log } = await writeRecords(path, 0, 6, clock);
  const intact = await readFile(path);
  // A crash midway through a two-entry batch: the first line whole, the second cut off.
  const next = `${JSON.stringify({ apiVersion: "sovereign.ai/audit/v1", seq: log.head.seq + 1 })}\n{"apiVersion":"sovereign.ai/au`;
  await appendFile(path, next);
  const torn = await verifyFile(path);
  t.false(torn.ok);
  t.is(torn.failure?.reason, AuditReason.AuditMalformedLine, "the complete but foreign line is caught first");
  await writeFile(path, Buffer.concat([intact, Buffer.from('{"apiVersion":"sovereign.ai/au')]));
  const cut = await verifyFile(path);
  t.is(cut.failure?.reason, AuditReason.AuditTruncated);
  t.is(cut.failure?.line, log.head.seq + 2);

  const store = await FileAuditStore.open(path);
  t.deepEqual(store.recovery, {
    entries: log.head.seq + 1,
    tornTail: { offset: intact.length, bytes: 30, savedTo: `${path}.torn-${intact.length}` },
  });
  t.is(await readFile(`${path}.torn-${intact.length}`, "utf8"), '{"apiVersion":"sovereign.ai/au');
  t.deepEqual(await readFile(path), intact);
  const resumed = await AuditLog.open(store, logOptions(clock));
  await resumed.append(record(6));
  await store.close();
  const report = await verifyFile(path);
  t.true(report.ok, report.failure?.message);
  t.is(report.entriesVerified, log.head.seq + 2);
});

test("damage before the last line stops the writer with AuditStoreDamaged", async (t) => {
  const path = await tempLog(t);
  await writeRecords(path, 0, 6);
  const lines = (await readFile(path, "utf8")).split("\n");
  lines[3] = (lines[3] as string).replace("gpu-node", "gpu-nodf");
  await writeFile(path, lines.join("\n"));
  const err = await t.throwsAsync(FileAuditStore.open(path));
  t.true(isAuditError(err, "AuditStoreDamaged"), err?.message);
  t.regex(err?.message ?? "", /line 4: AuditHashMismatch.*start a new log under a new log id/);
  lines.splice(3, 1);
  await writeFile(path, lines.join("\n"));
  const gap = await t.throwsAsync(FileAuditStore.open(path));
  t.regex(gap?.message ?? "", /line 4: AuditSequenceGap/);
});

test("a second writer on the same file is caught at its next append", async (t) => {
  const path = await tempLog(t);
  const clock = fakeClock();
  const storeA = await FileAuditStore.open(path);
  const a = await AuditLog.open(storeA, logOptions(clock));
  const storeB = await FileAuditStore.open(path);
  const b = await AuditLog.open(storeB, logOptions(clock));
  t.teardown(async () => {
    await storeA.close();
    await storeB.close();
  });
  await a.append(record(0));
  const err = await t.throwsAsync(b.append(record(1)));
  t.true(isAuditError(err, "AuditStoreConflict"), err?.message);
  t.true((await verifyFile(path)).ok);
});

test("a failed write (disk full) leaves the store refusing appends until it is reopened", async (t) => {
  if (!existsSync("/dev/full")) {
    t.pass("no /dev/full on this system");
    return;
  }
  const store = await FileAuditStore.open("/dev/full");
  t.teardown(() => store.close());
  const err = await t.throwsAsync(AuditLog.open(store, logOptions()));
  t.true(isAuditError(err, "AuditStoreFailed"), err?.message);
  t.is((err?.cause as NodeJS.ErrnoException | undefined)?.code, "ENOSPC");
  const again = await t.throwsAsync(store.append([]));
  t.regex(again?.message ?? "", /^AuditStoreFailed: an earlier append to \/dev\/full failed midway; reopen/);
});

test("readFrom starts anywhere in a long file", async (t) => {
  const path = await tempLog(t);
  const store = await FileAuditStore.open(path);
  t.teardown(() => store.close());
  const log = await AuditLog.open(store, logOptions(fakeClock(), { checkpointEveryEntries: 500 }));
  for (let batch = 0; batch < 25; batch++) {
    await log.append(Array.from({ length: 100 }, (_, i) => record(batch * 100 + i)));
  }
  const total = log.head.seq + 1;
  for (const from of [0, 1, 1023, 1024, 1025, 2047, 2048, total - 1, total, total + 5]) {
    const seqs: number[] = [];
    for await (const entry of store.readFrom(from)) seqs.push(entry.seq);
    t.is(seqs.length, Math.max(0, total - from), `from ${from}`);
    if (seqs.length > 0) t.is(seqs[0], from);
  }
  await store.close();
  const reopened = await FileAuditStore.open(path);
  t.teardown(() => reopened.close());
  let n = 0;
  for await (const entry of reopened.readFrom(2049)) if (n++ === 0) t.is(entry.seq, 2049);
  t.is(n, total - 2049);
});
