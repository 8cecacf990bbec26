// Tampering with an export, entry by entry and field by field (fast-check picks which): every
// alteration, drop, swap or duplicate is caught, at the right line, with the right reason;
// and what cannot be caught (the uncheckpointed tail) is exactly what docs/audit.md says.
import test from "ava";
import fc from "fast-check";
import { sealEntry } from "../../../attestation/audit/entry.ts";
import {
  AuditReason,
  ed25519CheckpointSigner,
  type RawAuditEntry,
  verifyAuditExport,
} from "../../../attestation/audit/mod.ts";
import { canonicalJson } from "../../../attestation/mod.ts";
import { buildLog, otherKey, trusted, verifyAt } from "./helpers.ts";

// 21 entries, a checkpoint every 5: checkpoints at seq 5, 11, 17, 23; entries 24.. trail.
const { lines, log } = await buildLog(22, { checkpointEveryEntries: 5 });
const held = log.latestCheckpoint;
const last = lines.length - 1;

const verify = (ls: readonly string[], heldCheckpoint?: unknown) =>
  verifyAuditExport(`${ls.join("\n")}\n`, { trustedKeys: trusted, at: verifyAt, heldCheckpoint });

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
const parse = (line: string) => JSON.parse(line) as { [k: string]: Json };
/** What an attacker without the checkpoint key can do: recompute an entry's hash. */
const reseal = (entry: { [k: string]: Json }) => sealEntry(entry as unknown as RawAuditEntry);

/** Every path to a leaf of the entry (arrays and objects descended), apiVersion aside. */
function leafPaths(value: Json, path: (string | number)[] = []): (string | number)[][] {
  if (Array.isArray(value)) return value.flatMap((v, i) => leafPaths(v, [...path, i]));
  if (value !== null && typeof value === "object") {
    return Object.entries(value).flatMap(([k, v]) =>
      path.length === 0 && k === "apiVersion" ? [] : leafPaths(v, [...path, k]),
    );
  }
  return [path];
}

function getAt(root: Json, path: (string | number)[]): Json {
  return path.reduce<Json>((v, k) => (v as Record<string | number, Json>)[k] as Json, root);
}
function setAt(root: Json, path: (string | number)[], value: Json): void {
  const parent = getAt(root, path.slice(0, -1)) as Record<string | number, Json>;
  parent[path.at(-1) as string | number] = value;
}

const hex64 = fc.stringMatching(/^[0-9a-f]{64}$/);
const entryTime = fc
  .date({ min: new Date("2020-01-01T00:00:00Z"), max: new Date("2030-01-01T00:00:00Z"), noInvalidDate: true })
  .map((d) => d.toISOString());

/** A different value of the same shape the envelope check accepts, so only the hash can object. */
function differentValue(path: (string | number)[], old: Json): fc.Arbitrary<Json> {
  const top = path.length === 1 ? path[0] : undefined;
  const arb: fc.Arbitrary<Json> =
    top === "seq"
      ? fc.nat()
      : top === "time"
        ? entryTime
        : top === "kind"
          ? fc.stringMatching(/^[A-Z][a-z]{1,12}$/)
          : top === "prev" || top === "hash"
            ? hex64
            : top === "subject"
              ? fc.string({ minLength: 1, maxLength: 20 })
              : typeof old === "number"
                ? fc.integer()
                : typeof old === "boolean"
                  ? fc.constant(!old)
                  : old === null
                    ? fc.string()
                    : fc.oneof(fc.string(), fc.integer(), fc.boolean(), fc.constant(null));
  return arb.filter((v) => canonicalJson(v) !== canonicalJson(old));
}

const mutation = fc.integer({ min: 0, max: last }).chain((index) => {
  const entry = parse(lines[index] as string);
  return fc
    .constantFrom(...leafPaths(entry))
    .chain((path) => differentValue(path, getAt(entry, path)).map((value) => ({ index, path, value })));
});

function mutated(index: number, path: (string | number)[], value: Json, rehash: boolean): string[] {
  const entry = parse(lines[index] as string);
  setAt(entry, path, value);
  let line = canonicalJson(entry);
  if (rehash) {
    const { hash: _, ...rest } = entry;
    line = canonicalJson(reseal(rest));
  }
  return lines.map((l, i) => (i === index ? line : l));
}

test("the untouched export verifies", (t) => {
  const report = verify(lines, held);
  t.true(report.ok, report.failure?.message);
  t.is(report.entriesVerified, lines.length);
});

test("altering any field of any entry is an AuditHashMismatch at that line", (t) => {
  fc.assert(
    fc.property(mutation, ({ index, path, value }) => {
      const report = verify(mutated(index, path, value, false), held);
      t.is(report.failure?.reason, AuditReason.AuditHashMismatch, `${index} ${path.join(".")}`);
      t.is(report.failure?.line, index + 1);
      t.is(report.entriesVerified, index);
    }),
    { numRuns: 400 },
  );
});

test("altering an entry and recomputing its hash breaks the link from the next entry, or the checkpoint", (t) => {
  fc.assert(
    fc.property(
      mutation.filter(({ path }) => path[0] === "body" || path[0] === "subject" || path[0] === "kind"),
      ({ index, path, value }) => {
        const report = verify(mutated(index, path, value, true), held);
        if (index === last) {
          // The documented limit: the last, uncheckpointed entry can be rewritten unseen.
          t.true(report.ok);
          t.false(report.entries.at(-1)?.checkpointed);
          return;
        }
        const isCheckpoint = parse(lines[index] as string).kind === "Checkpoint";
        const expected: string[] = isCheckpoint
          ? [
              AuditReason.AuditCheckpointInvalid,
              AuditReason.AuditCheckpointUnknownKey,
              AuditReason.AuditChainBroken,
            ]
          : index === 0
            ? [AuditReason.AuditMalformedLine, AuditReason.AuditChainBroken, AuditReason.AuditLogIdMismatch]
            : [AuditReason.AuditChainBroken, AuditReason.AuditCheckpointInvalid];
        t.true(
          expected.includes(report.failure?.reason ?? ""),
          `${index} ${path.join(".")}: ${report.failure?.reason}`,
        );
        t.true(
          report.failure?.line === index + 1 || report.failure?.line === index + 2,
          `${index}: line ${report.failure?.line}`,
        );
      },
    ),
    { numRuns: 300 },
  );
});

test("breaking the envelope's shape is an AuditMalformedLine at that line", (t) => {
  const breakers: ((e: Record<string, Json>) => string)[] = [
    (e) => canonicalJson({ ...e, apiVersion: "sovereign.ai/audit/v2" }),
    (e) => canonicalJson({ ...e, seq: -1 }),
    (e) => canonicalJson({ ...e, seq: String(e.seq) }),
    (e) => canonicalJson({ ...e, time: "2026-03-01T10:00:00Z" }),
    (e) => canonicalJson({ ...e, prev: "xyz" }),
    (e) => canonicalJson({ ...e, hash: String(e.hash).toUpperCase() }),
    (e) => canonicalJson({ ...e, body: [] }),
    (e) => canonicalJson({ ...e, extra: 1 }),
    (e) => JSON.stringify(e, null, 1).replaceAll("\n", ""),
    (e) => JSON.stringify(Object.fromEntries(Object.entries(e).reverse())),
    (e) => `${canonicalJson(e)}\r`,
    (e) => {
      // Same subject once parsed, spelt with an escape: the line is no longer the bytes hashed.
      const subject = String(e.subject);
      const escaped = `\\u${subject.charCodeAt(0).toString(16).padStart(4, "0")}${subject.slice(1)}`;
      return canonicalJson(e).replace(`"subject":"${subject}"`, `"subject":"${escaped}"`);
    },
    (e) => `${canonicalJson(e).slice(0, -1)},"seq":${e.seq}}`,
  ];
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: last }),
      fc.integer({ min: 0, max: breakers.length - 1 }),
      (index, b) => {
        const broken = (breakers[b] as (e: Record<string, Json>) => string)(parse(lines[index] as string));
        const report = verify(lines.map((l, i) => (i === index ? broken : l)));
        t.is(report.failure?.reason, AuditReason.AuditMalformedLine, `breaker ${b} on line ${index + 1}`);
        t.is(report.failure?.line, index + 1);
      },
    ),
    { numRuns: 200 },
  );
});

test("dropping any entry but the last is an AuditSequenceGap where it was", (t) => {
  for (let i = 0; i < last; i++) {
    const report = verify(lines.filter((_, j) => j !== i));
    t.is(report.failure?.reason, AuditReason.AuditSequenceGap, `drop ${i}`);
    t.is(report.failure?.line, i + 1);
  }
});

test("dropping entries from the end shows only against a checkpoint the auditor holds", (t) => {
  const heldSize = held?.size ?? 0;
  for (let keep = 1; keep <= last; keep++) {
    const kept = lines.slice(0, keep);
    t.true(verify(kept).ok, "without a held checkpoint a shorter export looks complete");
    const report = verify(kept, held);
    if (keep >= heldSize)
      t.true(report.ok, `keep ${keep}: the tail after the held checkpoint is not covered`);
    else {
      t.is(report.failure?.reason, AuditReason.AuditTruncated, `keep ${keep}`);
      t.regex(report.failure?.message ?? "", new RegExp(`entr(y|ies) ${keep}\\b.* dropped from the end`));
    }
  }
});

test("swapping any two adjacent entries is AuditReordered at the first of them", (t) => {
  for (let i = 0; i < last; i++) {
    const swapped = [...lines];
    [swapped[i], swapped[i + 1]] = [swapped[i + 1] as string, swapped[i] as string];
    const report = verify(swapped);
    t.is(report.failure?.reason, AuditReason.AuditReordered, `swap ${i}`);
    t.is(report.failure?.line, i + 1);
  }
});

test("moving any entry anywhere is AuditReordered; a copy after the original is AuditDuplicateEntry", (t) => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: last }), fc.integer({ min: 0, max: last }), (from, to) => {
      fc.pre(from !== to);
      const moved = [...lines];
      const [line] = moved.splice(from, 1);
      moved.splice(to, 0, line as string);
      t.is(verify(moved).failure?.reason, AuditReason.AuditReordered, `move ${from} → ${to}`);
    }),
    { numRuns: 200 },
  );
  fc.assert(
    fc.property(fc.integer({ min: 0, max: last }), fc.integer({ min: 0, max: last + 1 }), (i, at) => {
      const copied = [...lines];
      copied.splice(at, 0, lines[i] as string);
      const report = verify(copied);
      if (at > i) {
        t.is(report.failure?.reason, AuditReason.AuditDuplicateEntry, `copy ${i} to ${at}`);
        t.is(report.failure?.line, at + 1);
      } else if (at < i) t.is(report.failure?.reason, AuditReason.AuditReordered);
      else t.is(report.failure?.reason, AuditReason.AuditDuplicateEntry);
    }),
    { numRuns: 200 },
  );
});

test("rewriting history and recomputing the whole chain is caught by the next checkpoint", (t) => {
  for (const target of [1, 7, 12, 20]) {
    const rewritten = [...lines];
    let prev = "";
    for (let i = target; i < rewritten.length; i++) {
      const { hash: _, ...entry } = parse(rewritten[i] as string);
      if (i === target) entry.subject = "node/region-a/someone-else";
      else entry.prev = prev;
      const sealed = reseal(entry);
      prev = sealed.hash;
      rewritten[i] = canonicalJson(sealed);
    }
    const report = verify(rewritten);
    const nextCheckpoint = [5, 11, 17, 23].find((s) => s > target);
    t.is(report.failure?.reason, AuditReason.AuditCheckpointInvalid, `rewrite from ${target}`);
    t.is(report.failure?.seq, nextCheckpoint);
    t.regex(report.failure?.message ?? "", /head it signs is not the hash of the entry before it/);
  }
});

test("checkpoints signed by an untrusted key are refused, whatever key id they claim", async (t) => {
  const { lines: foreign } = await buildLog(6, {
    checkpointEveryEntries: 5,
    signer: ed25519CheckpointSigner(otherKey),
  });
  const report = verify(foreign);
  t.is(report.failure?.reason, AuditReason.AuditCheckpointUnknownKey);
  t.is(report.failure?.line, 6);
  t.regex(report.failure?.message ?? "", /not among the 1 trusted key/);
  // Same log, its checkpoint claiming the trusted key's id and public key: the signature fails.
  const trustedSigner = ed25519CheckpointSigner(otherKey);
  const { lines: impostor } = await buildLog(6, {
    checkpointEveryEntries: 5,
    signer: {
      keyId: trusted[0]?.keyId ?? "",
      publicKey: trusted[0]?.publicKey ?? "",
      sign: trustedSigner.sign,
    },
  });
  const forged = verify(impostor);
  t.is(forged.failure?.reason, AuditReason.AuditCheckpointInvalid);
  t.regex(forged.failure?.message ?? "", /does not verify with trusted key/);
});

test("a held checkpoint that signs another history than the export is AuditCheckpointMismatch", async (t) => {
  // The log's own key can fork its log; the checkpoint an auditor kept shows it.
  const { lines: fork } = await buildLog(22, { checkpointEveryEntries: 5, openedBy: "someone-else" });
  const report = verify(fork, held);
  t.is(report.failure?.reason, AuditReason.AuditCheckpointMismatch);
  t.is(report.failure?.seq, (held?.size ?? 0) - 1);
  const otherLog = await buildLog(22, { checkpointEveryEntries: 5, logId: "hub-us" });
  t.is(verify(otherLog.lines, held).failure?.reason, AuditReason.AuditLogIdMismatch);
  t.is(
    verify(lines, { ...held, size: 3 }).failure?.reason,
    AuditReason.AuditCheckpointInvalid,
    "a held checkpoint altered by hand fails its signature",
  );
});

test("time: entries after the evaluation time, or dated before their predecessor, fail", (t) => {
  const early = verifyAuditExport(`${lines.join("\n")}\n`, {
    trustedKeys: trusted,
    at: new Date("2026-03-01T10:00:03.000Z"),
    clockSkewSeconds: 0,
  });
  t.is(early.failure?.reason, AuditReason.AuditTimeInFuture);
  t.is(early.failure?.seq, 4);
  const backdated = [...lines];
  const { hash: _, ...entry } = parse(lines[3] as string);
  entry.time = "2026-03-01T09:00:00.000Z";
  backdated[3] = canonicalJson(reseal(entry));
  const report = verify(backdated);
  t.is(report.failure?.reason, AuditReason.AuditTimeReversed);
  t.is(report.failure?.line, 4);
});
