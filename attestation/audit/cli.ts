/**
 * `sovereign audit verify <export.jsonl> --keys <file> [--checkpoint <file>] [--at <time>]
 * [--log-id <id>] [--json]`: what operator/cli.ts runs. Exit 0 when the export is intact, 1 with
 * the reason code when it is not, 2 when the command itself is wrong.
 */
import { readFile } from "node:fs/promises";
import { isAuditError } from "./errors.ts";
import { parseTrustedKeys } from "./keys.ts";
import { formatAuditReport } from "./report.ts";
import { verifyAuditFile } from "./verify.ts";

export const AUDIT_USAGE =
  "usage: sovereign audit verify <export.jsonl> --keys <public-keys.pem|jwks.json> [--checkpoint <checkpoint.json>] [--at <RFC 3339 time>] [--log-id <id>] [--json]";

export interface CommandIo {
  stdout(text: string): void | Promise<void>;
  stderr(text: string): void | Promise<void>;
  /** The evaluation time when --at is not given: the CLI's edge is the one place a clock is read. */
  now(): Date;
}

/** Waits for each write to be taken, so the process can exit right after without cutting a piped report short. */
const write = (stream: NodeJS.WriteStream) => (text: string) =>
  new Promise<void>((resolve, reject) => stream.write(text, (err) => (err ? reject(err) : resolve())));

export const processIo: CommandIo = {
  stdout: write(process.stdout),
  stderr: write(process.stderr),
  now: () => new Date(),
};

const VALUE_FLAGS = new Set(["keys", "checkpoint", "at", "log-id"]);

function parseArgs(args: string[]): { positional: string[]; flags: Map<string, string> } | string {
  const positional: string[] = [];
  const flags = new Map<string, string>();
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] as string;
    if (!arg.startsWith("--")) {
      positional.push(arg);
      continue;
    }
    const eq = arg.indexOf("=");
    const name = arg.slice(2, eq === -1 ? undefined : eq);
    if (name === "json" && eq === -1) {
      flags.set("json", "true");
    } else if (VALUE_FLAGS.has(name)) {
      const value = eq === -1 ? args[++i] : arg.slice(eq + 1);
      if (value === undefined || value === "") return `--${name} needs a value`;
      flags.set(name, value);
    } else {
      return `unknown flag ${arg}`;
    }
  }
  return { positional, flags };
}

export async function auditCommand(args: string[], io: CommandIo = processIo): Promise<number> {
  const parsed = parseArgs(args);
  const usage = async (problem: string): Promise<number> => {
    await io.stderr(`${problem}\n${AUDIT_USAGE}\n`);
    return 2;
  };
  if (typeof parsed === "string") return usage(parsed);
  const [sub, exportPath, ...extra] = parsed.positional;
  if (sub !== "verify" || exportPath === undefined || extra.length > 0)
    return usage("expected: audit verify <export.jsonl>");
  const keysPath = parsed.flags.get("keys");
  if (keysPath === undefined) return usage("--keys is required: the public keys whose checkpoints you trust");
  const atFlag = parsed.flags.get("at");
  const at = atFlag === undefined ? io.now() : new Date(atFlag);
  if (Number.isNaN(at.getTime()))
    return usage(`--at ${JSON.stringify(atFlag)} is not a time; write it like 2026-03-01T12:00:00Z`);
  try {
    const trustedKeys = parseTrustedKeys(await readFile(keysPath, "utf8"));
    const checkpointPath = parsed.flags.get("checkpoint");
    let heldCheckpoint: unknown;
    if (checkpointPath !== undefined) {
      try {
        heldCheckpoint = JSON.parse(await readFile(checkpointPath, "utf8"));
      } catch (err) {
        return usage(
          `--checkpoint ${checkpointPath}: ${err instanceof Error ? err.message : String(err)}; give a checkpoint JSON (or a Checkpoint line of an earlier export)`,
        );
      }
    }
    const report = await verifyAuditFile(exportPath, {
      trustedKeys,
      at,
      heldCheckpoint,
      logId: parsed.flags.get("log-id"),
    });
    await io.stdout(
      parsed.flags.has("json") ? `${JSON.stringify(report, null, 2)}\n` : formatAuditReport(report),
    );
    if (report.failure !== undefined) {
      const { reason, line, message } = report.failure;
      await io.stderr(`${reason}${line === undefined ? "" : ` at line ${line}`}: ${message}\n`);
      return 1;
    }
    return 0;
  } catch (err) {
    if (isAuditError(err)) return usage(`--keys ${keysPath}: ${err.message}`);
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "EACCES" || code === "EISDIR") return usage((err as Error).message);
    throw err;
  }
}
