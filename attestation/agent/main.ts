// The node attestation agent's command (the chart's DaemonSet runs `node attestation/agent/main.ts`):
// serves the challenge protocol on the host network for the node in NODE_NAME, on
// SOVEREIGN_ATTESTATION_AGENT_PORT (default 9444; 0 picks a free port, for tests).
//
//   --collector=nvml            where evidence comes from (only nvml today: NVML via nvml_collector.py)
//   --python=<interpreter>      the python3 with nvidia-ml-py (env SOVEREIGN_NVML_PYTHON; default python3)
//   --collector-timeout=<s>     longest one collection may take (default 45)
//
// The agent starts even when NVML is not usable, so its health endpoint answers and every
// challenge gets a 503 saying what is missing (the member logs it and retries).
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { parseArgs } from "node:util";
import { agentHandler } from "./handler.ts";
import { DEFAULT_COLLECTOR_TIMEOUT_MS, NVML_COLLECTOR_SCRIPT, nvmlCollector } from "./nvml-collector.ts";

const log = (level: string, msg: string, fields: Record<string, unknown> = {}) =>
  process.stderr.write(
    `${JSON.stringify({ ts: new Date().toISOString(), level, msg, logger: "attestation-agent", ...fields })}\n`,
  );
const refuse = (msg: string): never => {
  log("error", msg);
  process.exit(2);
};

let flags: { collector?: string; python?: string; "collector-timeout"?: string };
try {
  flags = parseArgs({
    options: {
      collector: { type: "string" },
      python: { type: "string" },
      "collector-timeout": { type: "string" },
    },
    strict: true,
  }).values;
} catch (err) {
  refuse(`${(err as Error).message}; the agent takes --collector=nvml, --python, --collector-timeout`);
  flags = {};
}

const node = process.env.NODE_NAME ?? "";
const portText = process.env.SOVEREIGN_ATTESTATION_AGENT_PORT ?? "9444";
const port = Number(portText);
if (!node) refuse("NODE_NAME is not set; give the agent its node through the downward API (spec.nodeName)");
if (!Number.isInteger(port) || port < 0 || port > 65535)
  refuse(`SOVEREIGN_ATTESTATION_AGENT_PORT "${portText}" is not a port`);
const collectorName = flags.collector ?? "nvml";
if (collectorName !== "nvml") refuse(`--collector=${collectorName} is not a collector; the agent has nvml`);
const python = flags.python ?? process.env.SOVEREIGN_NVML_PYTHON ?? "python3";
const timeoutText = flags["collector-timeout"];
const timeoutMs = timeoutText === undefined ? DEFAULT_COLLECTOR_TIMEOUT_MS : Number(timeoutText) * 1000;
if (!(timeoutMs > 0 && timeoutMs <= 600_000))
  refuse(`--collector-timeout=${timeoutText} is not a number of seconds from 1 to 600`);

const server = createServer(
  agentHandler({
    node,
    collect: nvmlCollector({ python, timeoutMs }),
    // The handler gives up a little after the collector does, so the collector's own reason is answered.
    timeoutMs: timeoutMs + 5_000,
    onError: (err) =>
      log("warn", "a challenge got no evidence", {
        code: (err as { code?: unknown }).code,
        err: (err as Error).message,
      }),
  }),
);
server.listen(port, () => {
  log("info", "serving attestation challenges", {
    node,
    port: (server.address() as AddressInfo).port,
    collector: collectorName,
    python,
    script: NVML_COLLECTOR_SCRIPT,
  });
});
for (const signal of ["SIGTERM", "SIGINT"] as const) {
  process.once(signal, () => {
    log("info", "shutting down", { signal });
    server.close(() => process.exit(0));
  });
}
