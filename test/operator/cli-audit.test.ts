// `sovereign audit verify` as a regulator runs it: the binary, an export file and a key file.
// The binary is spawned once per exit code (its start loads the Kubernetes client, ~1 s of CPU);
// the other cases run the same command in-process.
import { spawn } from "node:child_process";
import { createPublicKey } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import test from "ava";
import { type AuditReport, auditCommand } from "../../attestation/audit/mod.ts";
import { buildLog, logKey, otherKey } from "../attestation/audit/helpers.ts";
import { repoRoot } from "../testbed/topology.ts";

const cli = join(repoRoot, "operator", "cli.ts");

function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [cli, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("close", (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

/** The command in-process, with the same output and exit code the binary would give. */
async function runInProcess(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = "";
  let stderr = "";
  const code = await auditCommand(args.slice(1), {
    stdout: (text) => {
      stdout += text;
    },
    stderr: (text) => {
      stderr += text;
    },
    now: () => new Date("2026-03-02T00:00:00Z"),
  });
  return { code, stdout, stderr };
}

const dir = await mkdtemp(join(tmpdir(), "sovereign-cli-audit-"));
const { lines, log } = await buildLog(8, { checkpointEveryEntries: 4 });
const exportFile = join(dir, "audit.jsonl");
const keysFile = join(dir, "audit-keys.pem");
const otherKeysFile = join(dir, "other-keys.pem");
const checkpointFile = join(dir, "checkpoint.json");
await writeFile(exportFile, `${lines.join("\n")}\n`);
await writeFile(keysFile, createPublicKey(logKey).export({ format: "pem", type: "spki" }));
await writeFile(otherKeysFile, createPublicKey(otherKey).export({ format: "pem", type: "spki" }));
await writeFile(checkpointFile, JSON.stringify(log.latestCheckpoint));
const at = "--at=2026-03-02T00:00:00Z";
test.after.always(() => rm(dir, { recursive: true, force: true }));

test("an intact export: exit 0, one line per entry saying what it attests", async (t) => {
  const { code, stdout, stderr } = await run(["audit", "verify", exportFile, "--keys", keysFile, at]);
  t.is(code, 0, stderr);
  t.regex(
    stdout,
    /^audit log "hub-eu": 11 entries verified of 11 lines, verified as of 2026-03-02T00:00:00.000Z/,
  );
  t.regex(
    stdout,
    /AttestationVerdict {2}node gpu-node-0 in region-a PASSED Local attestation under policy strict/,
  );
  t.regex(stdout, /DeltaRefused {8}delta of learner learner-4 .* ManifestSignatureInvalid/);
  t.regex(stdout, /not yet checkpointed: entries 10\.\.10/);
  t.regex(stdout, /\nINTACT/);
  t.is(stdout.split("\n").filter((l) => /^ +\d+ {2}2026-/.test(l)).length, lines.length);
});

test("--json prints the report; --checkpoint checks the export against a held checkpoint", async (t) => {
  const { code, stdout } = await runInProcess([
    "audit",
    "verify",
    exportFile,
    `--keys=${keysFile}`,
    "--checkpoint",
    checkpointFile,
    at,
    "--json",
  ]);
  t.is(code, 0);
  const report = JSON.parse(stdout) as AuditReport;
  t.true(report.ok);
  t.is(report.entriesVerified, lines.length);
  t.is(report.heldCheckpoint?.size, log.latestCheckpoint?.size);
  const cut = join(dir, "cut.jsonl");
  await writeFile(cut, `${lines.slice(0, 4).join("\n")}\n`);
  const truncated = await runInProcess([
    "audit",
    "verify",
    cut,
    "--keys",
    keysFile,
    "--checkpoint",
    checkpointFile,
    at,
  ]);
  t.is(truncated.code, 1);
  t.regex(truncated.stderr, /^AuditTruncated at line 5: the export ends at seq 3/);
});

test("a tampered export: exit 1 and the reason code with the line", async (t) => {
  const tampered = join(dir, "tampered.jsonl");
  await writeFile(
    tampered,
    `${lines.map((l, i) => (i === 3 ? l.replace("gpu-node", "gpu-nodf") : l)).join("\n")}\n`,
  );
  const { code, stdout, stderr } = await run(["audit", "verify", tampered, "--keys", keysFile, at]);
  t.is(code, 1);
  t.regex(stderr, /^AuditHashMismatch at line 4: entry seq 3 does not hash/);
  t.regex(stdout, /FAILED AuditHashMismatch at line 4 \(seq 3\)/);
});

test("an untrusted key: exit 1 with AuditCheckpointUnknownKey; a bad command line: exit 2", async (t) => {
  const untrusted = await runInProcess(["audit", "verify", exportFile, "--keys", otherKeysFile, at]);
  t.is(untrusted.code, 1);
  t.regex(untrusted.stderr, /^AuditCheckpointUnknownKey at line 5/);
  const noKeys = await run(["audit", "verify", exportFile]);
  t.is(noKeys.code, 2);
  t.regex(noKeys.stderr, /--keys is required.*\nusage: sovereign audit verify/);
  const privateKey = join(dir, "private.pem");
  await writeFile(privateKey, logKey.export({ format: "pem", type: "pkcs8" }));
  const leaked = await runInProcess(["audit", "verify", exportFile, "--keys", privateKey]);
  t.is(leaked.code, 2);
  t.regex(leaked.stderr, /AuditKeysInvalid: the key file holds a 'PRIVATE KEY' block/);
  const missing = await runInProcess(["audit", "verify", join(dir, "nope.jsonl"), "--keys", keysFile]);
  t.is(missing.code, 2);
  t.regex(missing.stderr, /ENOENT/);
});
