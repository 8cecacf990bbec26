/**
 * The agent side: an HTTP request listener for a DaemonSet pod on every GPU node. It takes the
 * member's challenge and hands it to a collector, which asks each GPU to sign an attestation
 * report over the nonce and gathers its certificate chain. In production that is `nvmlCollector()`
 * (nvml-collector.ts, NVML through nvidia-ml-py); tests plug in a collector that mints testbed
 * evidence.
 */
import type { IncomingMessage, RequestListener, ServerResponse } from "node:http";
import type { LocalDeviceEvidence } from "../verify.ts";
import {
  AGENT_API_VERSION,
  AgentError,
  EVIDENCE_PATH,
  type EvidenceResponse,
  encodeDevice,
  HEALTH_PATH,
  isAgentError,
  MAX_REQUEST_BYTES,
  parseEvidenceRequest,
} from "./protocol.ts";

/** Collects one evidence set per device on this node for the nonce. Throws when the GPUs cannot answer. */
export type EvidenceCollector = (challenge: {
  nonce: Uint8Array;
  gpus: number;
  signal: AbortSignal;
}) => Promise<LocalDeviceEvidence[]>;

export interface AgentHandlerOptions {
  /** The node this agent runs on (the downward API's spec.nodeName). */
  node: string;
  collect: EvidenceCollector;
  /** Longest a collection may take before the agent answers 503. Default 60 s. */
  timeoutMs?: number;
  /** Called on every failed collection, for the agent's log. */
  onError?: (err: unknown) => void;
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_REQUEST_BYTES)
      throw new AgentError("BadRequest", `a challenge is at most ${MAX_REQUEST_BYTES} bytes`, {
        status: 413,
      });
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString("utf8");
}

export function agentHandler(opts: AgentHandlerOptions): RequestListener {
  const timeoutMs = opts.timeoutMs ?? 60_000;
  return (req, res) => {
    void (async () => {
      const path = (req.url ?? "/").split("?")[0];
      if (path === HEALTH_PATH && req.method === "GET") return send(res, 200, { ok: true, node: opts.node });
      if (path !== EVIDENCE_PATH)
        return send(res, 404, { reason: "BadRequest", message: `no ${path}; POST ${EVIDENCE_PATH}` });
      if (req.method !== "POST")
        return send(res, 405, { reason: "BadRequest", message: `${EVIDENCE_PATH} takes POST` });
      try {
        let parsed: unknown;
        try {
          parsed = JSON.parse(await readBody(req));
        } catch (err) {
          if (isAgentError(err)) throw err;
          throw new AgentError("BadRequest", "the body is not JSON", { status: 400 });
        }
        const challenge = parseEvidenceRequest(parsed);
        const signal = AbortSignal.timeout(timeoutMs);
        const devices = await opts.collect({ ...challenge, signal });
        const body: EvidenceResponse = {
          apiVersion: AGENT_API_VERSION,
          node: opts.node,
          devices: devices.map(encodeDevice),
        };
        send(res, 200, body);
      } catch (err) {
        opts.onError?.(err);
        const agentErr = isAgentError(err)
          ? err
          : new AgentError("EvidenceUnavailable", `collecting evidence failed: ${(err as Error).message}`, {
              status: 503,
            });
        send(res, agentErr.status ?? 503, {
          reason: agentErr.reason,
          ...(agentErr.code ? { code: agentErr.code } : {}),
          message: agentErr.message,
        });
      }
    })();
  };
}
