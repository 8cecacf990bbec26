/**
 * The member side of the agent protocol: send the challenge to the agent on a node and read its
 * answer, within a time limit and a size limit. Everything it returns is still unverified
 * evidence; `verifyLocalEvidence` decides what it is worth.
 */
import type { LocalDeviceEvidence } from "../verify.ts";
import {
  AGENT_API_VERSION,
  AgentError,
  EVIDENCE_PATH,
  type EvidenceRequest,
  MAX_RESPONSE_BYTES,
  parseEvidenceResponse,
} from "./protocol.ts";

export interface RequestEvidenceOptions {
  /** Default 60 s: eight GPUs sign in well under a second each, RIM and OCSP fetches dominate. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** Challenges the agent at `baseUrl` (e.g. http://10.0.3.7:9444); throws AgentError. */
export async function requestEvidence(
  baseUrl: string,
  challenge: { nonce: Uint8Array; gpus: number; node: string },
  options: RequestEvidenceOptions = {},
): Promise<LocalDeviceEvidence[]> {
  const body: EvidenceRequest = {
    apiVersion: AGENT_API_VERSION,
    nonce: Buffer.from(challenge.nonce).toString("hex"),
    gpus: challenge.gpus,
  };
  const timeout = AbortSignal.timeout(options.timeoutMs ?? 60_000);
  const signal = options.signal ? AbortSignal.any([options.signal, timeout]) : timeout;
  const url = new URL(EVIDENCE_PATH, baseUrl);
  let res: Response;
  try {
    res = await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
      signal,
    });
  } catch (cause) {
    throw new AgentError(
      "EvidenceUnavailable",
      `the agent at ${url.origin} did not answer: ${(cause as Error).message}; is the attestation agent running on ${challenge.node}?`,
      { cause },
    );
  }
  const text = await readLimited(res, url.origin);
  if (!res.ok) {
    let message = text.slice(0, 512);
    try {
      message = String((JSON.parse(text) as { message?: unknown }).message ?? message);
    } catch {}
    throw new AgentError(
      "EvidenceUnavailable",
      `the agent on ${challenge.node} answered ${res.status}: ${message}`,
      {
        status: res.status,
      },
    );
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (cause) {
    throw new AgentError(
      "EvidenceMalformed",
      `the agent on ${challenge.node} answered with something that is not JSON`,
      {
        cause,
      },
    );
  }
  const answer = parseEvidenceResponse(json);
  if (answer.node !== challenge.node) {
    throw new AgentError(
      "EvidenceMalformed",
      `the agent reached for node ${challenge.node} says it runs on ${answer.node}; check the agent's address`,
    );
  }
  return answer.devices;
}

async function readLimited(res: Response, origin: string): Promise<string> {
  const declared = Number(res.headers.get("content-length") ?? 0);
  if (declared > MAX_RESPONSE_BYTES) {
    await res.body?.cancel();
    throw new AgentError(
      "EvidenceMalformed",
      `the agent at ${origin} sends ${declared} bytes, more than ${MAX_RESPONSE_BYTES}`,
    );
  }
  const chunks: Uint8Array[] = [];
  let size = 0;
  if (res.body) {
    for await (const chunk of res.body) {
      size += chunk.length;
      if (size > MAX_RESPONSE_BYTES) {
        await res.body.cancel().catch(() => undefined);
        throw new AgentError(
          "EvidenceMalformed",
          `the agent at ${origin} sends more than ${MAX_RESPONSE_BYTES} bytes`,
        );
      }
      chunks.push(chunk);
    }
  }
  return Buffer.concat(chunks).toString("utf8");
}
