/**
 * Facts: what mechanical verification established about each device, before any policy is applied.
 * Everything here is plain data (no certificate objects), so facts can be logged and re-judged.
 */
import type { CertSummary } from "./certchain.ts";
import type { OcspMatch } from "./ocsp.ts";
import type { MeasurementComparison } from "./rim.ts";
import type { Finding } from "./verdict.ts";

export type DeclaredCcMode = "on" | "off" | "devtools" | "ppcie";

export interface OcspTarget {
  /** e.g. "device-chain[1]" or "rim:NV_GPU_DRIVER_GH100_550.90.07[0]". */
  subject: string;
  commonName: string;
  serial: string;
  /** Every supplied response about this certificate (valid answers and invalid ones). */
  matches: OcspMatch[];
}

export interface DeviceFacts {
  source: "Local" | "NRAS";
  deviceId: string;
  kind: "gpu" | "switch";
  /** From the device certificate (Hopper, Blackwell, LS10) or the NRAS hwmodel; "unknown" otherwise. */
  architecture: string;
  driverVersion?: string;
  vbiosVersion?: string;
  /** Unsigned statement of the node agent (nvidia-smi / GPU operator); only a pre-filter. */
  declaredCcMode?: DeclaredCcMode;
  /** Signed by the device: 0xAA protected PCIe, 0x55 not. */
  protectedPcieStatus?: number;
  /** NRAS dbgstat: "disabled" unless the GPU runs in CC DevTools mode. */
  debugStatus?: string;
  deviceCerts: CertSummary[];
  rimCerts: { rim: string; certs: CertSummary[] }[];
  rimIds: string[];
  ocspTargets: OcspTarget[];
  measurements?: MeasurementComparison;
  /** Failures no policy can excuse: parse, chain, signature, nonce, FWID, RIM signature/chain. */
  failures: Finding[];
}

export interface EvidenceFacts {
  mode: "Local" | "NRAS";
  expectedNonce: string;
  collectedAt: string;
  evidenceDigest: string;
  devices: DeviceFacts[];
  /** NRAS only: the token's validity window and issuer, judged by the policy. */
  token?: { issuer: string; notBefore?: string; expires?: string };
}
