// Where a GPU node's evidence comes from. The member issues the challenge (a nonce) and judges
// what comes back; a source only carries it. Production: the attestation agent, a DaemonSet on
// every GPU node (host network) answering on the node's InternalIP (attestation/agent/). The
// testbed: attestation-testbed-source.ts mints evidence for kwok nodes.
import { isAgentError, requestEvidence } from "../../attestation/agent/mod.ts";
import type { EvidenceFacts, LocalDeviceEvidence } from "../../attestation/mod.ts";

export interface EvidenceRequest {
  node: string;
  /** The node's InternalIP, where a host-network agent listens. */
  address?: string;
  /** The 32-byte challenge every device must sign. */
  nonce: Uint8Array;
  /** GPUs the node advertises (allocatable nvidia.com/gpu): evidence must cover each of them. */
  gpus: number;
  signal?: AbortSignal;
}

export interface NodeEvidence {
  /** One evidence set per device (GPUs, and NVSwitches in protected-PCIe systems). */
  devices: LocalDeviceEvidence[];
  /**
   * When the source says the evidence was collected (RFC 3339). Only an earlier time than the
   * challenge counts: the nonce already proves the evidence is no older than the challenge.
   */
  collectedAt?: string;
}

export interface EvidenceSource {
  /** For logs and Events: "agent", "testbed". */
  readonly name: string;
  collect(request: EvidenceRequest): Promise<NodeEvidence>;
}

/**
 * Turns a node's evidence into facts for the policy: the local verifier (verification.mode Local)
 * or NVIDIA's Remote Attestation Service (NRAS, nras-appraiser.ts). An appraiser that cannot be
 * reached throws EvidenceError("EvidenceUnavailable"), so the node is treated as if its agent had
 * not answered; evidence it refuses comes back as facts with failures.
 */
export type EvidenceAppraiser = (input: {
  devices: LocalDeviceEvidence[];
  nonce: Uint8Array;
  /** When the challenge was issued (RFC 3339). */
  collectedAt: string;
}) => Promise<EvidenceFacts>;

/**
 * The evidence could not be had: Unavailable (no answer; retried with backoff, the node keeps
 * its standing until its evidence ages out) or Malformed (an answer that is not evidence; the
 * node fails, as a node that answers garbage to a challenge cannot be trusted).
 */
export class EvidenceError extends Error {
  override name = "EvidenceError";
  readonly reason: "EvidenceUnavailable" | "EvidenceMalformed";
  constructor(reason: EvidenceError["reason"], message: string, options?: { cause?: unknown }) {
    super(`${reason}: ${message}`, options);
    this.reason = reason;
  }
}

export const isEvidenceError = (e: unknown): e is EvidenceError => e instanceof EvidenceError;

export const DEFAULT_AGENT_PORT = 9444;

/** Challenges the attestation agent on the node (attestation/agent/handler.ts) over HTTP. */
export class AgentEvidenceSource implements EvidenceSource {
  readonly name = "agent";
  readonly #port: number;
  readonly #timeoutMs: number;

  constructor(opts: { port?: number; timeoutMs?: number } = {}) {
    this.#port = opts.port ?? DEFAULT_AGENT_PORT;
    this.#timeoutMs = opts.timeoutMs ?? 60_000;
  }

  async collect(request: EvidenceRequest): Promise<NodeEvidence> {
    if (!request.address) {
      throw new EvidenceError(
        "EvidenceUnavailable",
        `node ${request.node} reports no InternalIP to reach its agent at`,
      );
    }
    const host = request.address.includes(":") ? `[${request.address}]` : request.address;
    try {
      const devices = await requestEvidence(
        `http://${host}:${this.#port}`,
        { nonce: request.nonce, gpus: request.gpus, node: request.node },
        { timeoutMs: this.#timeoutMs, signal: request.signal },
      );
      return { devices };
    } catch (err) {
      if (isAgentError(err)) {
        throw new EvidenceError(
          err.reason === "EvidenceMalformed" ? "EvidenceMalformed" : "EvidenceUnavailable",
          err.message,
          { cause: err },
        );
      }
      throw err;
    }
  }
}
