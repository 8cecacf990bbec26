// `kubectl sovereign audit export` and `audit verify`: the regulator's path. The audit log lives
// on the operator's volume; the operator serves it read-only at /audit/export on its metrics
// port. Reached through the API server's service proxy (so RBAC on services/proxy decides who
// may read it, and no port has to be opened), or directly with --url (e.g. after kubectl
// port-forward). Verification runs offline, on the exported file, with attestation/audit's
// verifier, exactly as `sovereign audit verify` does.
import { once } from "node:events";
import { createWriteStream } from "node:fs";
import { rename, rm } from "node:fs/promises";
import { request as httpRequest, type IncomingMessage, type RequestOptions } from "node:http";
import { request as httpsRequest } from "node:https";
import type { Writable } from "node:stream";
import type { KubeConfig } from "@kubernetes/client-node";
import { auditCommand, type CommandIo } from "../attestation/audit/cli.ts";
import { type Options, outputFormat, stringOption } from "./args.ts";
import { EXIT_OK, PluginError, usageError } from "./errors.ts";
import { loadKubeConfig, namespaceOf } from "./kube.ts";

export const AUDIT_EXPORT_HELP = `Download an operator's audit log (JSON lines), for audit verify.

Usage:
  kubectl sovereign audit export [-f FILE] [-n NAMESPACE] [--service NAME] [--port PORT]
      [--kubeconfig FILE] [--context NAME]
  kubectl sovereign audit export --url http://HOST:PORT [-f FILE]

By default through the API server's service proxy of this kubeconfig context: service
sovereign-metrics (the chart's, for a release named sovereign), port "metrics", namespace
sovereign-system (or -n). That needs "get" on services/proxy in that namespace. --url reads an
operator's metrics address directly instead (kubectl port-forward, or a test).
The hub's log and each region's log are separate: export each from its own cluster.

Writes FILE whole or not at all (default: stdout). The operator must run with --audit-log.

Example:
  kubectl sovereign audit export --context hub -f hub-audit.jsonl
  kubectl sovereign audit verify hub-audit.jsonl --keys audit-keys.pem
`;

export const AUDIT_VERIFY_HELP = `Verify an exported audit log offline: hash chain, order and signed checkpoints.

Usage:
  kubectl sovereign audit verify EXPORT.jsonl --keys PUBLIC-KEYS.pem|jwks.json
      [--checkpoint CHECKPOINT.json] [--at RFC3339] [--log-id ID] [-o json]

Needs no cluster. --keys: the operator's checkpoint public keys (PEM PUBLIC KEY blocks or JWKs),
obtained out of band. --checkpoint: a checkpoint you kept from an earlier export, so a shortened
export is caught. Exit 0 when intact, 1 with the reason code (AuditHashMismatch, AuditTruncated,
…) and line when not, 2 for a wrong command line. docs/audit.md lists every reason.
`;

const DEFAULT_SERVICE = "sovereign-metrics";
const DEFAULT_PORT = "metrics";
const DEFAULT_NAMESPACE = "sovereign-system";
const EXPORT_PATH = "/audit/export";
const NAME = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const PORT = /^([a-z0-9]([-a-z0-9]{0,13}[a-z0-9])?|[1-9][0-9]{0,4})$/;

/** Where the export is read from, and with which TLS and credentials. */
export async function exportRequest(
  options: Options,
  kc?: KubeConfig,
): Promise<{ url: URL; init: RequestOptions; via: string }> {
  const direct = stringOption(options, "url");
  if (direct !== undefined) {
    for (const flag of ["service", "port", "namespace", "kubeconfig", "context"] as const) {
      if (options[flag] !== undefined)
        throw usageError(`--url reads the operator directly; --${flag} does not apply`);
    }
    let url: URL;
    try {
      url = new URL(direct);
    } catch {
      throw usageError(`--url ${JSON.stringify(direct)} is not a URL; write it like http://127.0.0.1:8080`);
    }
    if (url.protocol !== "http:" && url.protocol !== "https:")
      throw usageError("--url must be http:// or https://");
    url.pathname = `${url.pathname.replace(/\/+$/, "")}${EXPORT_PATH}`;
    return { url, init: {}, via: url.origin };
  }
  const service = stringOption(options, "service") ?? DEFAULT_SERVICE;
  const port = stringOption(options, "port") ?? DEFAULT_PORT;
  if (!NAME.test(service)) throw usageError(`--service ${JSON.stringify(service)} is not a Service name`);
  if (!PORT.test(port)) throw usageError(`--port ${JSON.stringify(port)} is not a port name or number`);
  const config = kc ?? loadKubeConfig(options);
  const namespace = namespaceOf(config, options, DEFAULT_NAMESPACE);
  if (!NAME.test(namespace))
    throw usageError(`namespace ${JSON.stringify(namespace)} is not a namespace name`);
  const server = config.getCurrentCluster()?.server ?? "";
  const url = new URL(
    `${server.replace(/\/+$/, "")}/api/v1/namespaces/${namespace}/services/${service}:${port}/proxy${EXPORT_PATH}`,
  );
  const init: RequestOptions = {};
  await config.applyToHTTPSOptions(init);
  return { url, init, via: `service ${namespace}/${service}:${port} through ${url.origin}` };
}

async function get(url: URL, init: RequestOptions): Promise<IncomingMessage> {
  const send = url.protocol === "https:" ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const req = send(
      url,
      { ...init, method: "GET", headers: { ...init.headers, accept: "application/jsonl" } },
      resolve,
    );
    req.setTimeout(30_000, () => req.destroy(new Error("no answer within 30s")));
    req.on("error", reject);
    req.end();
  });
}

async function bodyText(res: IncomingMessage, max = 4096): Promise<string> {
  let text = "";
  for await (const chunk of res) {
    if (text.length < max) text += String(chunk);
  }
  return text.slice(0, max).trim();
}

/** The reason for a refused export, from the answer of the operator or of the API server. */
function refusal(status: number, body: string, via: string): PluginError {
  const own = /^(AuditLogNotConfigured): (.*)$/s.exec(body);
  if (own) return new PluginError(own[1] as string, own[2] as string);
  let message = body;
  try {
    message = (JSON.parse(body) as { message?: string }).message ?? body;
  } catch {
    // not a Status object: the operator's or a proxy's plain text
  }
  if (status === 401)
    return new PluginError(
      "Unauthorized",
      `the API server did not accept this context's credential (${message})`,
    );
  if (status === 403)
    return new PluginError(
      "NoHubAccess",
      `reading the audit log through ${via} is not allowed (${message}); it needs "get" on services/proxy in that namespace`,
    );
  if (status === 404)
    return new PluginError(
      "OperatorNotFound",
      `${via} answered 404 (${message}); check -n, --service and --port (kubectl get svc -n NAMESPACE), and that the operator serves /audit/export`,
    );
  if (status === 503 || status === 502)
    return new PluginError(
      "OperatorUnreachable",
      `${via} answered ${status} (${message}); is an operator pod running and ready behind the service?`,
    );
  return new PluginError("AuditExportFailed", `${via} answered HTTP ${status}: ${message}`);
}

/** Copies the export to `out`; resolves to the number of lines, rejects if the transfer is cut. */
async function copyExport(res: IncomingMessage, out: Writable): Promise<{ lines: number; bytes: number }> {
  let lines = 0;
  let bytes = 0;
  let last = 10;
  for await (const chunk of res as AsyncIterable<Buffer>) {
    bytes += chunk.length;
    for (const b of chunk) if (b === 10) lines++;
    last = chunk.at(-1) ?? last;
    if (!out.write(chunk)) await once(out, "drain");
  }
  // A chunked response the server aborted ends the iteration with an error above; this is the
  // last guard for a body cut off at any other point.
  if (!res.complete)
    throw new PluginError("AuditExportIncomplete", "the export was cut off before its end; run it again");
  if (bytes > 0 && last !== 10)
    throw new PluginError("AuditExportIncomplete", "the export does not end with a whole line; run it again");
  return { lines, bytes };
}

export async function auditExportCommand(
  args: string[],
  options: Options,
  io: { stdout: Writable; stderr(text: string): void },
  kc?: KubeConfig,
): Promise<number> {
  if (args.length > 0)
    throw usageError(`audit export takes no arguments (got ${args.join(" ")}); write to a file with -f FILE`);
  const file = stringOption(options, "file");
  const { url, init, via } = await exportRequest(options, kc);
  let res: IncomingMessage;
  try {
    res = await get(url, init);
  } catch (err) {
    throw new PluginError(
      "OperatorUnreachable",
      `cannot reach ${via}: ${(err as Error).message}; check the address (--url) or the kubeconfig context`,
    );
  }
  if (res.statusCode !== 200) throw refusal(res.statusCode ?? 0, await bodyText(res), via);
  if (file === undefined || file === "-") {
    const { lines } = await copyExport(res, io.stdout).catch((err: unknown) => {
      throw err instanceof PluginError
        ? err
        : new PluginError("AuditExportIncomplete", `the export was cut off: ${(err as Error).message}`);
    });
    io.stderr(`exported ${lines} audit entries from ${via}\n`);
    return EXIT_OK;
  }
  const temp = `${file}.${process.pid}.partial`;
  const out = createWriteStream(temp, { flags: "wx", mode: 0o644 });
  // A write failure (disk full) stops the download, and surfaces through the copy loop.
  out.on("error", (err) => res.destroy(err));
  try {
    await once(out, "open");
    const counted = await copyExport(res, out);
    out.end();
    await once(out, "finish");
    await rename(temp, file);
    io.stderr(
      `wrote ${counted.lines} audit entries (${counted.bytes} bytes) from ${via} to ${file}\nverify it with: kubectl sovereign audit verify ${file} --keys <the operator's public keys>\n`,
    );
    return EXIT_OK;
  } catch (err) {
    out.destroy();
    await rm(temp, { force: true });
    if (err instanceof PluginError) throw err;
    if ((err as NodeJS.ErrnoException).code && (err as NodeJS.ErrnoException).syscall)
      throw new PluginError("FileUnwritable", `cannot write ${file}: ${(err as Error).message}`);
    throw new PluginError(
      "AuditExportIncomplete",
      `the export was cut off: ${(err as Error).message}; run it again`,
    );
  }
}

/** Hands over to attestation/audit's verifier; `-o json` is its --json. */
export async function auditVerifyCommand(args: string[], options: Options, io: CommandIo): Promise<number> {
  const json = outputFormat(options) === "json";
  const passed: string[] = ["verify", ...args];
  for (const name of ["keys", "checkpoint", "at", "log-id"] as const) {
    const value = stringOption(options, name);
    if (value !== undefined) passed.push(`--${name}=${value}`);
  }
  if (json) passed.push("--json");
  return auditCommand(passed, io);
}
