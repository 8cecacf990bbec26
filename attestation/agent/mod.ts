/** Public API of the node attestation agent (agent side and member client). See docs/attestation.md, "The gate". */
export { type RequestEvidenceOptions, requestEvidence } from "./client.ts";
export { type AgentHandlerOptions, agentHandler, type EvidenceCollector, nvmlCollector } from "./handler.ts";
export {
  AGENT_API_VERSION,
  AgentError,
  type AgentReason,
  EVIDENCE_PATH,
  type EvidenceRequest,
  type EvidenceResponse,
  encodeDevice,
  HEALTH_PATH,
  isAgentError,
  MAX_DEVICES,
  MAX_REQUEST_BYTES,
  MAX_RESPONSE_BYTES,
  parseEvidenceRequest,
  parseEvidenceResponse,
  type WireDevice,
} from "./protocol.ts";
