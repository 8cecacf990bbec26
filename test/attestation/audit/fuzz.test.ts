// Whatever an export holds, the verifier answers with a report (a reason code on failure) and
// never throws: garbage lines, arbitrary JSON, bytes flipped in real lines, exports cut anywhere.
import test from "ava";
import fc from "fast-check";
import {
  ALL_AUDIT_REASONS,
  AuditReason,
  type AuditReport,
  checkCheckpoint,
  describeEntry,
  verifyAuditExport,
} from "../../../attestation/audit/mod.ts";
import { buildLog, trusted, verifyAt } from "./helpers.ts";

const { lines, log } = await buildLog(10, { checkpointEveryEntries: 4 });
const text = `${lines.join("\n")}\n`;

function wellFormed(t: { true: (v: boolean, m?: string) => void }, report: AuditReport): void {
  if (report.ok) return;
  t.true(ALL_AUDIT_REASONS.includes(report.failure?.reason ?? ("" as never)), report.failure?.reason);
  t.true((report.failure?.message.length ?? 0) > 0);
}

const verify = (input: string | string[], held?: unknown) =>
  verifyAuditExport(input, { trustedKeys: trusted, at: verifyAt, heldCheckpoint: held });

const jsonish = fc.oneof(
  fc.string({ unit: "binary" }),
  fc.json(),
  fc.jsonValue().map((v) => JSON.stringify(v)),
  fc
    .record(
      {
        apiVersion: fc.constantFrom("sovereign.ai/audit/v1", "x"),
        seq: fc.oneof(fc.nat(30), fc.double(), fc.string()),
        time: fc.oneof(fc.constant("2026-03-01T10:00:00.000Z"), fc.string()),
        kind: fc.constantFrom(
          "LogOpened",
          "Checkpoint",
          "PodAdmitted",
          "constructor",
          "__proto__",
          "toString",
        ),
        subject: fc.oneof(fc.constant("log/hub-eu"), fc.string()),
        body: fc.oneof(fc.object(), fc.constant({ logId: "hub-eu" }), fc.anything()),
        prev: fc.oneof(fc.stringMatching(/^[0-9a-f]{64}$/), fc.string()),
        hash: fc.oneof(fc.stringMatching(/^[0-9a-f]{64}$/), fc.string()),
      },
      { requiredKeys: [] },
    )
    .map((v) => JSON.stringify(v)),
);

test("garbage lines anywhere never make the verifier throw", (t) => {
  fc.assert(
    fc.property(fc.array(jsonish, { maxLength: 8 }), fc.nat(lines.length), (garbage, at) => {
      const mixed = [...lines.slice(0, at), ...garbage, ...lines.slice(at)];
      wellFormed(t, verify(mixed));
      wellFormed(t, verify(mixed.join("\n")));
      wellFormed(t, verify(garbage.join("\n"), garbage[0]));
    }),
    { numRuns: 500 },
  );
});

test("bytes flipped in a real export are caught, never thrown", (t) => {
  fc.assert(
    fc.property(fc.nat(text.length - 2), fc.integer({ min: 1, max: 0xffff }), (position, code) => {
      const flipped = text.slice(0, position) + String.fromCharCode(code) + text.slice(position + 1);
      fc.pre(flipped !== text);
      const report = verify(flipped);
      wellFormed(t, report);
      // A flip inside the final newline-free tail aside, something must notice.
      t.false(report.ok && report.entriesVerified === lines.length && report.linesRead === lines.length);
    }),
    { numRuns: 400 },
  );
});

test("an export cut mid-line is AuditTruncated; cut at a line end it is a shorter, intact export", (t) => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: text.length - 1 }), (cut) => {
      const report = verify(text.slice(0, cut));
      const atLineEnd = text[cut - 1] === "\n" || text[cut] === "\n";
      if (atLineEnd) t.true(report.ok, `cut at ${cut}: ${report.failure?.message}`);
      else {
        t.is(report.failure?.reason, AuditReason.AuditTruncated, `cut at ${cut}`);
        t.is(report.failure?.line, report.linesRead);
      }
    }),
    { numRuns: 300 },
  );
  t.is(verify("").failure?.reason, AuditReason.AuditTruncated);
});

test("checkpoint and summary readers accept anything without throwing", (t) => {
  fc.assert(
    fc.property(fc.anything(), fc.string(), (body, kind) => {
      const c = checkCheckpoint(body, trusted);
      t.true(c.ok || ALL_AUDIT_REASONS.includes(c.reason));
      const summary = describeEntry({
        apiVersion: "sovereign.ai/audit/v1",
        seq: 1,
        time: "2026-03-01T10:00:00.000Z",
        kind,
        subject: "x",
        body: (typeof body === "object" && body !== null ? body : {}) as Record<string, unknown>,
        prev: "0".repeat(64),
        hash: "0".repeat(64),
      });
      t.is(typeof summary, "string");
    }),
    { numRuns: 500 },
  );
  for (const kind of ["AttestationVerdict", "PodAdmitted", "RoundClosed", "Checkpoint", "constructor"]) {
    t.is(
      typeof describeEntry({ ...JSON.parse(lines[1] as string), kind, body: { verdict: 1, pod: [] } }),
      "string",
    );
  }
  t.true(verify(text, log.latestCheckpoint).ok);
});
