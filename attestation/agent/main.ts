// The node attestation agent's command (the chart's DaemonSet runs `node attestation/agent/main.ts`):
// serves the challenge protocol on the host network for the node in NODE_NAME, on
// SOVEREIGN_ATTESTATION_AGENT_PORT (default 9444; 0 picks a free port, for tests). Until NVIDIA's
// tooling is wired in, its collector refuses every challenge with EvidenceUnavailable and says why.
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { agentHandler, nvmlCollector } from "./handler.ts";

const log = (level: string, msg: string, fields: Record<string, unknown> = {}) =>
  process.stderr.write(
    `${JSON.stringify({ ts: new Date().toISOString(), level, msg, logger: "attestation-agent", ...fields })}\n`,
  );

const node = process.env.NODE_NAME ?? "";
const portText = process.env.SOVEREIGN_ATTESTATION_AGENT_PORT ?? "9444";
const port = Number(portText);
if (!node) {
  log("error", "NODE_NAME is not set; give the agent its node through the downward API (spec.nodeName)");
  process.exit(2);
}
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  log("error", `SOVEREIGN_ATTESTATION_AGENT_PORT "${portText}" is not a port`);
  process.exit(2);
}

const server = createServer(
  agentHandler({
    node,
    collect: nvmlCollector(),
    onError: (err) => log("warn", "a challenge got no evidence", { err: (err as Error).message }),
  }),
);
server.listen(port, () => {
  log(
    "warn",
    "no NVIDIA evidence collector is built in: every challenge is answered 503 EvidenceUnavailable",
    {
      node,
    },
  );
  log("info", "serving attestation challenges", { node, port: (server.address() as AddressInfo).port });
});
for (const signal of ["SIGTERM", "SIGINT"] as const) {
  process.once(signal, () => {
    log("info", "shutting down", { signal });
    server.close(() => process.exit(0));
  });
}
