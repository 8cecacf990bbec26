/**
 * The node agent's wire protocol: the member POSTs a challenge, the agent on the GPU node answers
 * with one evidence set per GPU. JSON, binary fields base64, so it reads in a debugger and a curl.
 *
 *   POST /v1/evidence  {"apiVersion": AGENT_API_VERSION, "nonce": "<64 hex>", "gpus": 8}
 *   200                {"apiVersion": AGENT_API_VERSION, "node": "gpu-0", "devices": [WireDevice…]}
 *   4xx/5xx            {"reason": "BadRequest" | "EvidenceUnavailable", "code"?: "…", "message": "…"}
 *
 * The channel needs no authentication for integrity: every report is signed by its GPU over the
 * member's nonce, so a man in the middle can only withhold evidence or replay old evidence, which
 * the nonce check refuses. It carries nothing secret.
 */
import type { DeclaredCcMode } from "../facts.ts";
import type { LocalDeviceEvidence } from "../verify.ts";

export const AGENT_API_VERSION = "sovereign.ai/attestation-agent/v1";
export const EVIDENCE_PATH = "/v1/evidence";
export const HEALTH_PATH = "/healthz";
/** A challenge is a few hundred bytes; anything larger is not one. */
export const MAX_REQUEST_BYTES = 4096;
/** A GPU's evidence (report, 5 certificates, 2 RIMs, 7 OCSP answers) is about 100 KiB; 8 GPUs and switches fit easily. */
export const MAX_RESPONSE_BYTES = 32 * 1024 * 1024;
/** The most devices one node can hold (8 GPUs and 4 NVSwitches on an HGX board, with room to spare). */
export const MAX_DEVICES = 64;

const CC_MODES: readonly DeclaredCcMode[] = ["on", "off", "devtools", "ppcie"];
const HEX32 = /^[0-9a-f]{64}$/;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

export type AgentReason = "BadRequest" | "EvidenceUnavailable" | "EvidenceMalformed";

/** Anything that goes wrong between the member and the agent, with a reason code to grep for. */
export class AgentError extends Error {
  override name = "AgentError";
  readonly reason: AgentReason;
  /** The HTTP status the agent answered with, when it answered. */
  readonly status: number | undefined;
  /** A finer code under the reason (e.g. the NVML collector's NvmlLibraryNotFound), when there is one. */
  readonly code: string | undefined;
  constructor(
    reason: AgentReason,
    message: string,
    options?: { cause?: unknown; status?: number; code?: string },
  ) {
    super(`${reason}: ${message}`, options);
    this.reason = reason;
    this.status = options?.status;
    this.code = options?.code;
  }
}

export const isAgentError = (e: unknown): e is AgentError => e instanceof AgentError;

export interface EvidenceRequest {
  apiVersion: typeof AGENT_API_VERSION;
  /** The 32-byte challenge nonce, lower-case hex. */
  nonce: string;
  /** GPUs the member expects on the node (its allocatable nvidia.com/gpu); the agent answers for all it has. */
  gpus: number;
}

export interface WireDevice {
  /** SPDM GET_MEASUREMENTS request ‖ response, base64. */
  report: string;
  /** PEM, leaf first. */
  certificateChain: string;
  rims: { id?: string; xml: string }[];
  /** DER OCSP responses, base64. */
  ocspResponses?: string[];
  /** The nonce the agent's OCSP requests carried, hex. */
  ocspRequestNonce?: string;
  /** What the agent reads from the driver (unsigned; the policy checks it against the signed report where it can). */
  declaredCcMode?: DeclaredCcMode;
}

export interface EvidenceResponse {
  apiVersion: typeof AGENT_API_VERSION;
  node: string;
  devices: WireDevice[];
}

const b64 = (bytes: Uint8Array | string): string =>
  typeof bytes === "string"
    ? Buffer.from(bytes, "utf8").toString("base64")
    : Buffer.from(bytes).toString("base64");

export function encodeDevice(device: LocalDeviceEvidence): WireDevice {
  return {
    report: b64(device.report),
    certificateChain: device.certificateChain,
    rims: device.rims.map((r) => (r.id === undefined ? { xml: r.xml } : { id: r.id, xml: r.xml })),
    ...(device.ocspResponses ? { ocspResponses: device.ocspResponses.map(b64) } : {}),
    ...(device.ocspRequestNonce
      ? { ocspRequestNonce: Buffer.from(device.ocspRequestNonce).toString("hex") }
      : {}),
    ...(device.declaredCcMode ? { declaredCcMode: device.declaredCcMode } : {}),
  };
}

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);

/** The agent's reading of a challenge; throws AgentError BadRequest. */
export function parseEvidenceRequest(body: unknown): { nonce: Uint8Array; gpus: number } {
  const bad = (message: string) => new AgentError("BadRequest", message, { status: 400 });
  if (!isObject(body)) throw bad("the body must be a JSON object");
  if (body.apiVersion !== AGENT_API_VERSION) throw bad(`apiVersion must be ${AGENT_API_VERSION}`);
  if (typeof body.nonce !== "string" || !HEX32.test(body.nonce))
    throw bad("nonce must be 64 lower-case hex digits (32 bytes)");
  if (
    typeof body.gpus !== "number" ||
    !Number.isSafeInteger(body.gpus) ||
    body.gpus < 0 ||
    body.gpus > MAX_DEVICES
  )
    throw bad(`gpus must be a whole number from 0 to ${MAX_DEVICES}`);
  return { nonce: new Uint8Array(Buffer.from(body.nonce, "hex")), gpus: body.gpus };
}

/** The member's reading of an answer: every field checked, binary fields decoded; throws AgentError EvidenceMalformed. */
export function parseEvidenceResponse(body: unknown): { node: string; devices: LocalDeviceEvidence[] } {
  const bad = (message: string) => new AgentError("EvidenceMalformed", `the agent's answer ${message}`);
  if (!isObject(body)) throw bad("is not a JSON object");
  if (body.apiVersion !== AGENT_API_VERSION) throw bad(`has apiVersion ${String(body.apiVersion)}`);
  if (typeof body.node !== "string") throw bad("names no node");
  if (!Array.isArray(body.devices) || body.devices.length > MAX_DEVICES)
    throw bad(`must list at most ${MAX_DEVICES} devices`);
  const base64 = (v: unknown, what: string): Uint8Array => {
    if (typeof v !== "string" || !BASE64.test(v)) throw bad(`has a ${what} that is not base64`);
    return new Uint8Array(Buffer.from(v, "base64"));
  };
  const devices = body.devices.map((d: unknown, i: number): LocalDeviceEvidence => {
    if (!isObject(d)) throw bad(`has device ${i} that is not an object`);
    if (typeof d.certificateChain !== "string") throw bad(`has device ${i} without a certificate chain`);
    if (!Array.isArray(d.rims)) throw bad(`has device ${i} without a RIM list`);
    const rims = d.rims.map((r: unknown) => {
      if (!isObject(r) || typeof r.xml !== "string" || (r.id !== undefined && typeof r.id !== "string"))
        throw bad(`has device ${i} with a RIM that is not {id?, xml}`);
      return r.id === undefined ? { xml: r.xml } : { id: r.id as string, xml: r.xml };
    });
    if (d.ocspResponses !== undefined && !Array.isArray(d.ocspResponses))
      throw bad(`has device ${i} whose ocspResponses is not a list`);
    if (
      d.ocspRequestNonce !== undefined &&
      (typeof d.ocspRequestNonce !== "string" || !/^([0-9a-f]{2})+$/.test(d.ocspRequestNonce))
    )
      throw bad(`has device ${i} whose ocspRequestNonce is not hex`);
    if (d.declaredCcMode !== undefined && !CC_MODES.includes(d.declaredCcMode as DeclaredCcMode))
      throw bad(`has device ${i} with ccMode ${String(d.declaredCcMode)}`);
    return {
      report: base64(d.report, `device ${i} report`),
      certificateChain: d.certificateChain,
      rims,
      ...(d.ocspResponses
        ? {
            ocspResponses: (d.ocspResponses as unknown[]).map((o, j) =>
              base64(o, `device ${i} OCSP answer ${j}`),
            ),
          }
        : {}),
      ...(d.ocspRequestNonce
        ? { ocspRequestNonce: new Uint8Array(Buffer.from(d.ocspRequestNonce as string, "hex")) }
        : {}),
      ...(d.declaredCcMode ? { declaredCcMode: d.declaredCcMode as DeclaredCcMode } : {}),
    };
  });
  return { node: body.node, devices };
}
