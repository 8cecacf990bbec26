// The writer: what it appends verifies, checkpoints fall where configured (by count and by the
// injected clock), appends are serialised, a restart continues the chain, and records that
// would not be stored faithfully are refused.
import test from "ava";
import {
  type AuditEntry,
  AuditLog,
  type AuditStore,
  isAuditError,
  MemoryAuditStore,
  verifyAuditExport,
} from "../../../attestation/audit/mod.ts";
import { buildLog, collectLines, fakeClock, logOptions, record, trusted, verifyAt } from "./helpers.ts";

const verify = (lines: string[], held?: unknown) =>
  verifyAuditExport(`${lines.join("\n")}\n`, { trustedKeys: trusted, at: verifyAt, heldCheckpoint: held });

test("what is appended verifies, with one summary per entry in order", async (t) => {
  const { lines, log } = await buildLog(23);
  const report = verify(lines, log.latestCheckpoint);
  t.true(report.ok, report.failure?.message);
  t.is(report.logId, "hub-eu");
  t.is(report.entriesVerified, lines.length);
  t.deepEqual(
    report.entries.map((e) => e.seq),
    lines.map((_, i) => i),
  );
  t.regex(report.entries[0]?.attests ?? "", /^log hub-eu opened by/);
  const kinds = new Set(report.entries.map((e) => e.kind));
  for (const kind of [
    "AttestationVerdict",
    "PodAdmitted",
    "NodeQuarantined",
    "DeltaAccepted",
    "DeltaRefused",
  ]) {
    t.true(kinds.has(kind), kind);
  }
  t.true(kinds.has("RoundClosed"));
  const refused = report.entries.find((e) => e.kind === "DeltaRefused");
  t.regex(refused?.attests ?? "", /refused .*ManifestSignatureInvalid/);
  t.deepEqual(log.head, { seq: lines.length - 1, hash: report.entries.at(-1)?.hash });
});

test("a checkpoint follows every N entries and covers everything before it", async (t) => {
  const { lines } = await buildLog(23, { checkpointEveryEntries: 5 });
  const report = verify(lines);
  t.true(report.ok);
  // LogOpened counts: entries 0..4, checkpoint at 5; then five more each time.
  t.deepEqual(
    report.checkpoints.map((c) => c.seq),
    [5, 11, 17, 23],
  );
  t.deepEqual(
    report.checkpoints.map((c) => c.size),
    [5, 11, 17, 23],
  );
  t.is(report.checkpointedEntries, 24);
  t.deepEqual(report.uncheckpointed, { fromSeq: 24, toSeq: lines.length - 1 });
  t.true(report.entries.filter((e) => e.seq < 24).every((e) => e.checkpointed));
  t.false(report.entries.at(-1)?.checkpointed);
});

test("a checkpoint follows T seconds after the last one, by the injected clock", async (t) => {
  const clock = fakeClock();
  const store = new MemoryAuditStore();
  const log = await AuditLog.open(
    store,
    logOptions(clock, { checkpointEveryEntries: 1000, checkpointEverySeconds: 60 }),
  );
  clock.advance(30_000);
  t.deepEqual(
    (await log.append(record(0))).map((e) => e.kind),
    ["AttestationVerdict"],
  );
  t.is(await log.checkpointIfDue(), undefined, "not due after 30 s");
  clock.advance(30_000);
  const due = await log.checkpointIfDue();
  t.is(due?.size, 2);
  t.is(due?.time, "2026-03-01T10:01:00.000Z");
  clock.advance(120_000);
  t.is((await log.checkpointIfDue())?.size, 2, "nothing new to cover: no empty checkpoint");
  const written = await log.append(record(1));
  t.deepEqual(
    written.map((e) => e.kind),
    ["PodAdmitted", "Checkpoint"],
    "overdue: the checkpoint rides with the next append",
  );
  clock.advance(1000);
  await log.append(record(2));
  t.is((await log.checkpoint())?.size, 6, "checkpoint() does not wait");
  t.true(verify(await collectLines(store)).ok);
});

test("concurrent appends are serialised in call order without gaps", async (t) => {
  const clock = fakeClock();
  const store = new MemoryAuditStore();
  const log = await AuditLog.open(store, logOptions(clock, { checkpointEveryEntries: 7 }));
  const results = await Promise.all(
    Array.from({ length: 40 }, (_, i) => log.append([record(i), record(i + 1)])),
  );
  const seqs = results.flat().map((e) => e.seq);
  t.deepEqual(
    seqs,
    seqs.map((_, i) => i + 1),
  );
  const subjects = results.map((batch) => batch.find((e) => e.kind !== "Checkpoint")?.subject);
  t.deepEqual(
    subjects,
    Array.from({ length: 40 }, (_, i) => record(i).subject),
  );
  t.true(verify(await collectLines(store)).ok);
});

test("a writer restarted on the same store continues the chain and the checkpoint count", async (t) => {
  const clock = fakeClock();
  const store = new MemoryAuditStore();
  const first = await AuditLog.open(store, logOptions(clock));
  for (let i = 0; i < 7; i++) await first.append(record(i));
  const headBefore = first.head;
  const second = await AuditLog.open(store, logOptions(clock));
  t.deepEqual(second.head, headBefore);
  t.is(second.latestCheckpoint?.size, 5);
  // Entries 6..8 are pending (3 of 5): the 2nd record after the restart completes the count.
  t.deepEqual(
    (await second.append(record(7))).map((e) => e.kind),
    ["PodAdmitted"],
  );
  t.deepEqual(
    (await second.append(record(8))).map((e) => e.kind),
    ["NodeQuarantined", "Checkpoint"],
  );
  const report = verify(await collectLines(store), second.latestCheckpoint);
  t.true(report.ok, report.failure?.message);
  t.is(report.entries.filter((e) => e.kind === "LogOpened").length, 1);
});

test("a writer refuses a store that holds another log", async (t) => {
  const { store } = await buildLog(2);
  const err = await t.throwsAsync(AuditLog.open(store, logOptions(fakeClock(), { logId: "hub-us" })));
  t.true(isAuditError(err, "AuditLogIdMismatch"), err?.message);
  t.regex(err?.message ?? "", /holds log "hub-eu", not "hub-us"/);
});

test("entries never go back in time, even when the clock does", async (t) => {
  const clock = fakeClock();
  const store = new MemoryAuditStore();
  const log = await AuditLog.open(store, logOptions(clock));
  clock.advance(10_000);
  const [a] = await log.append(record(0));
  clock.advance(-5_000);
  const [b] = await log.append(record(1));
  t.is(b?.time, a?.time);
  t.true(verify(await collectLines(store)).ok);
});

test("records that would not be stored as given are refused with AuditRecordInvalid", async (t) => {
  const { log } = await buildLog(0);
  const bad: unknown[] = [
    { kind: "Checkpoint", subject: "x", body: {} },
    { kind: "LogOpened", subject: "x", body: {} },
    { kind: "lowercase", subject: "x", body: {} },
    { kind: "PodAdmitted", subject: "", body: {} },
    { kind: "PodAdmitted", subject: "x", body: [] },
    { kind: "PodAdmitted", subject: "x", body: { at: new Date() } },
    { kind: "PodAdmitted", subject: "x", body: { n: Number.NaN } },
    { kind: "PodAdmitted", subject: "x", body: { list: [1, undefined] } },
    { kind: "PodAdmitted", subject: "x", body: { s: "\ud800" } },
    { kind: "PodAdmitted", subject: "x", body: { big: 1n } },
    { kind: "PodAdmitted", subject: "x", body: { byGpu: { "10": "a", "9": "b" } } },
  ];
  for (const r of bad) {
    const err = t.throws(() => log.append(r as never));
    t.true(
      isAuditError(err, "AuditRecordInvalid"),
      `${JSON.stringify(r, (_, v) => (typeof v === "bigint" ? "1n" : v))}: ${err?.message}`,
    );
  }
  t.is(log.head.seq, 0, "nothing was written");
});

test("after a failed append the writer refuses until reopened, then resumes from what was stored", async (t) => {
  const clock = fakeClock();
  const inner = new MemoryAuditStore();
  let failNext = false;
  const flaky: AuditStore = {
    append: async (entries: readonly AuditEntry[]) => {
      if (failNext) {
        failNext = false;
        throw new Error("disk full");
      }
      await inner.append(entries);
    },
    readFrom: (seq) => inner.readFrom(seq),
    head: () => inner.head(),
  };
  const log = await AuditLog.open(flaky, logOptions(clock));
  await log.append(record(0));
  failNext = true;
  await t.throwsAsync(log.append(record(1)), { message: "disk full" });
  const err = await t.throwsAsync(log.append(record(2)));
  t.true(isAuditError(err, "AuditStoreFailed"), err?.message);
  const reopened = await AuditLog.open(flaky, logOptions(clock));
  t.is(reopened.head.seq, 1);
  await reopened.append(record(3));
  t.true(verify(await collectLines(inner)).ok);
});
