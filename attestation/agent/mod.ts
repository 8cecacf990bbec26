/** Public API of the node attestation agent (agent side and member client). See docs/attestation.md, "The gate". */
export { type RequestEvidenceOptions, requestEvidence } from "./client.ts";
export { type AgentHandlerOptions, agentHandler, type EvidenceCollector } from "./handler.ts";
export {
  DEFAULT_COLLECTOR_TIMEOUT_MS,
  isNvmlCollectorError,
  MAX_CHAIN_BYTES,
  MAX_CHAIN_CERTS,
  MAX_COLLECTOR_OUTPUT_BYTES,
  MAX_REPORT_BYTES,
  NVML_COLLECTOR_API_VERSION,
  NVML_COLLECTOR_CODES,
  NVML_COLLECTOR_SCRIPT,
  type NvmlCollection,
  type NvmlCollectorCode,
  NvmlCollectorError,
  type NvmlCollectorOptions,
  nvmlCollector,
  nvmlEvidence,
  parseNvmlCollectorOutput,
  runNvmlCollector,
} from "./nvml-collector.ts";
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
