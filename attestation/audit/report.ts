/** The verification report as an auditor reads it on a terminal. */
import type { AuditReport } from "./verify.ts";

export function formatAuditReport(report: AuditReport): string {
  const out: string[] = [];
  const asOf = report.evaluatedAt === undefined ? "" : `, verified as of ${report.evaluatedAt}`;
  out.push(
    `audit log ${JSON.stringify(report.logId ?? "?")}: ${report.entriesVerified} entries verified of ${report.linesRead} lines${asOf}`,
  );
  if (report.entries.length > 0) {
    const kindWidth = Math.max(4, ...report.entries.map((e) => e.kind.length));
    const seqWidth = Math.max(3, String(report.entries.at(-1)?.seq ?? 0).length);
    out.push(`  ${"seq".padStart(seqWidth)}  ${"time".padEnd(24)}  cp  ${"kind".padEnd(kindWidth)}  attests`);
    for (const e of report.entries) {
      out.push(
        `  ${String(e.seq).padStart(seqWidth)}  ${e.time}  ${e.checkpointed ? "✓ " : "· "}  ${e.kind.padEnd(kindWidth)}  ${e.attests}`,
      );
    }
  }
  const keys = [...new Set(report.checkpoints.map((c) => c.keyId))];
  out.push(
    report.checkpointedEntries > 0
      ? `checkpointed: entries 0..${report.checkpointedEntries - 1} (${report.checkpoints.length} checkpoint(s) in the export, key ${keys.join(", ") || "-"}${report.heldCheckpoint && report.ok ? `; the checkpoint you hold covers ${report.heldCheckpoint.size} entries and matches` : ""})`
      : "checkpointed: none",
  );
  if (report.ok && report.uncheckpointed !== undefined) {
    const { fromSeq, toSeq } = report.uncheckpointed;
    out.push(
      `not yet checkpointed: entries ${fromSeq}..${toSeq} (only the hash chain vouches for them: had they been dropped from the end, nothing here would show it)`,
    );
  }
  if (report.heldCheckpoint === undefined && report.ok) {
    out.push(
      "no held checkpoint given (--checkpoint): entries dropped after the export's last checkpoint would not show",
    );
  }
  const f = report.failure;
  if (f === undefined) {
    out.push(
      "INTACT: every entry links to the one before it, and every checkpoint verifies with a trusted key",
    );
  } else {
    const where =
      f.line === undefined ? "" : ` at line ${f.line}${f.seq === undefined ? "" : ` (seq ${f.seq})`}`;
    out.push(`FAILED ${f.reason}${where}: ${f.message}`);
    out.push("The entries listed above verified; nothing from the failure on is vouched for.");
  }
  return `${out.join("\n")}\n`;
}
