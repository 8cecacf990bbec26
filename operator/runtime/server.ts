// The operator's HTTP endpoints: /metrics (Prometheus text), /healthz (the process
// is alive and its loops turn) and /readyz (caches synced; a follower is ready too, so
// a rolling update does not wait for leadership).
import { createServer, type Server } from "node:http";
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
