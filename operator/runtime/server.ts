// The operator's HTTP endpoints: /metrics (Prometheus text), /healthz (the process
// is alive and its loops turn) and /readyz (caches synced; a follower is ready too, so
// a rolling update does not wait for leadership), and /audit/export, the audit log as
// JSON lines, because the file lives on the operator's volume and an auditor has no
// other way to it (kubectl sovereign audit export reads it through the service proxy).
import { createServer, type Server, type ServerResponse } from "node:http";
import type { OperatorMetrics } from "./metrics.ts";

export type Check = () => { ok: boolean; reason?: string };

export interface ProbeServer {
  server: Server;
  port: number;
  close(): Promise<void>;
}

export async function startProbeServer(opts: {
  host: string;
  port: number;
  metrics: OperatorMetrics;
  healthz: Record<string, Check>;
  readyz: Record<string, Check>;
  /** The audit log's export lines; without it /audit/export answers 404 AuditLogNotConfigured. */
  /** undefined from the call: the log is not open here now (a hub replica that is not leading). */
  auditExport?: () => AsyncIterable<string> | undefined;
}): Promise<ProbeServer> {
  const report = (checks: Record<string, Check>) => {
    const lines: string[] = [];
    let ok = true;
    for (const [name, check] of Object.entries(checks)) {
      const r = check();
      ok &&= r.ok;
      lines.push(`[${r.ok ? "+" : "-"}]${name} ${r.ok ? "ok" : `failed: ${r.reason ?? "not ready"}`}`);
    }
    return { ok, body: `${lines.join("\n")}\n${ok ? "ok" : "not ok"}\n` };
  };
  const server = createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405).end();
      return;
    }
    if (path === "/metrics") {
      opts.metrics.registry.metrics().then(
        (text) => res.writeHead(200, { "content-type": opts.metrics.registry.contentType }).end(text),
        (err: unknown) => res.writeHead(500).end(String(err)),
      );
      return;
    }
    if (path === "/healthz" || path === "/readyz") {
      const { ok, body } = report(path === "/healthz" ? opts.healthz : opts.readyz);
      res.writeHead(ok ? 200 : 503, { "content-type": "text/plain" }).end(body);
      return;
    }
    if (path === "/audit/export") {
      if (!opts.auditExport) {
        res
          .writeHead(404, { "content-type": "text/plain" })
          .end(
            "AuditLogNotConfigured: this operator keeps no audit store it can export; start it with --audit-log <file>\n",
          );
        return;
      }
      const lines = opts.auditExport();
      if (!lines) {
        res
          .writeHead(503, { "content-type": "text/plain" })
          .end(
            "AuditLogNotLeading: this hub replica is not leading, so its audit log is not open; ask the leader (the holder of the hub's Lease)\n",
          );
        return;
      }
      void streamExport(res, lines, req.method === "HEAD");
      return;
    }
    res.writeHead(404).end();
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port, opts.host, () => resolve());
  });
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : opts.port;
  return {
    server,
    port,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

/**
 * Chunked, so a log read failure mid-way aborts the response instead of ending it: an export
 * that stops at a line boundary would otherwise look complete to the client.
 */
async function streamExport(res: ServerResponse, lines: AsyncIterable<string>, headOnly: boolean) {
  res.writeHead(200, { "content-type": "application/jsonl; charset=utf-8", "cache-control": "no-store" });
  if (headOnly) {
    res.end();
    return;
  }
  try {
    for await (const line of lines) {
      if (res.destroyed) return;
      if (!res.write(line)) await new Promise((resolve) => res.once("drain", resolve));
    }
    res.end();
  } catch {
    res.destroy();
  }
}
