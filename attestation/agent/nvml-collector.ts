/**
 * The agent's NVIDIA evidence collector. NVML is a C library with a Python binding NVIDIA maintains
 * (nvidia-ml-py, i.e. pynvml) and uses in its own verifier, so the agent runs a small Python
 * program (nvml_collector.py) for every challenge rather than binding the C ABI from Node. That
 * program asks each GPU for its SPDM attestation report over the nonce
 * (nvmlDeviceGetConfComputeGpuAttestationReport) and its attestation certificate chain
 * (nvmlDeviceGetConfComputeGpuCertificate), and prints one JSON document. This side runs it with
 * a time limit and a size limit, refuses any document that is not exactly the expected shape, and
 * turns it into the evidence the member verifies.
 *
 * Every failure is an AgentError "EvidenceUnavailable" (the member retries, the node keeps its
 * standing until its evidence ages out) with a finer `code` from NVML_COLLECTOR_CODES. The agent does
 * not judge the evidence: a report for the wrong nonce or a chain to the wrong root is passed on
 * for the verifier to refuse with its own reason. RIMs and OCSP answers are not collected here.
 */
import { spawn } from "node:child_process";
import { join } from "node:path";
import type { DeclaredCcMode } from "../facts.ts";
import type { LocalDeviceEvidence } from "../verify.ts";
import type { EvidenceCollector } from "./handler.ts";
import { AgentError, MAX_DEVICES } from "./protocol.ts";

export const NVML_COLLECTOR_API_VERSION = "sovereign.ai/nvml-collector/v1";
export const NVML_COLLECTOR_SCRIPT = join(import.meta.dirname, "nvml_collector.py");
/** pynvml's NVML_CC_GPU_ATTESTATION_REPORT_SIZE: the report buffer NVML fills. */
export const MAX_REPORT_BYTES = 0x2000;
/** pynvml's NVML_GPU_ATTESTATION_CERT_CHAIN_SIZE: the attestation chain buffer NVML fills. */
export const MAX_CHAIN_BYTES = 0x1400;
/** NVIDIA's chains have 5 certificates; more than this is not a GPU's chain. */
export const MAX_CHAIN_CERTS = 8;
/** 64 GPUs × (16 KiB of report hex + 5 KiB of chain) is about 1.4 MiB. */
export const MAX_COLLECTOR_OUTPUT_BYTES = 4 * 1024 * 1024;
/** NVIDIA's verifier gives each NVML call 30 s; a whole node's collection gets this long. */
export const DEFAULT_COLLECTOR_TIMEOUT_MS = 45_000;

/** What the program itself reports (its error document's `code`). */
const PROGRAM_CODES = [
  "PynvmlMissing",
  "NvmlLibraryNotFound",
  "NvmlDriverNotLoaded",
  "NvmlNoPermission",
  "NvmlDriverMismatch",
  "NvmlInitFailed",
  "NvmlNoConfCompute",
  "NvmlFailed",
  "CcOff",
  "NoGpu",
  "GpuUnanswered",
  "CertChainNotPem",
] as const;

/** Every code a collection can fail with; each is grep-able in the agent's answer and log. */
export const NVML_COLLECTOR_CODES = [
  ...PROGRAM_CODES,
  "PythonNotFound",
  "CollectorTimeout",
  "CollectorFailed",
  "OutputTooLarge",
  "OutputNotJson",
  "OutputMalformed",
  "NonceNotEchoed",
  "GpuCountInvalid",
  "ReportNotHex",
  "ReportTooLarge",
] as const;
export type NvmlCollectorCode = (typeof NVML_COLLECTOR_CODES)[number];

/** Codes that mean the node cannot run the collector at all (set-up, not a passing fault). */
const SETUP_CODES: ReadonlySet<NvmlCollectorCode> = new Set([
  "PythonNotFound",
  "PynvmlMissing",
  "NvmlLibraryNotFound",
  "NvmlDriverNotLoaded",
  "NvmlNoPermission",
  "NvmlDriverMismatch",
  "NvmlInitFailed",
  "NvmlNoConfCompute",
  "CcOff",
  "NoGpu",
]);

export class NvmlCollectorError extends AgentError {
  override name = "NvmlCollectorError";
  declare readonly code: NvmlCollectorCode;
  /** The GPU index that failed, when one did. */
  readonly gpu: number | undefined;
  constructor(code: NvmlCollectorCode, message: string, options: { cause?: unknown; gpu?: number } = {}) {
    const lead = SETUP_CODES.has(code)
      ? "no NVIDIA evidence collector can run on this node"
      : code.startsWith("Output") || code.startsWith("Report") || code === "NonceNotEchoed"
        ? "the NVIDIA evidence collector's output is refused"
        : "the NVIDIA evidence collector got no evidence";
    super("EvidenceUnavailable", `${code}: ${lead}: ${message}`, {
      status: 503,
      code,
      cause: options.cause,
    });
    this.gpu = options.gpu;
  }
}

export const isNvmlCollectorError = (e: unknown): e is NvmlCollectorError => e instanceof NvmlCollectorError;

export interface NvmlGpuEvidence {
  index: number;
  uuid: string;
  report: Uint8Array;
  /** PEM text, leaf first, exactly as NVML gave it. */
  certificateChain: string;
}

export interface NvmlCollection {
  driverVersion: string;
  /** nvmlSystemGetConfComputeState, the settings' multiGpuMode and the ready state (null: unknown). */
  confidentialCompute: {
    environment: number;
    ccFeature: number;
    devToolsMode: number;
    multiGpuMode: number | null;
    gpusReadyState: number | null;
  };
  declaredCcMode: DeclaredCcMode;
  gpus: NvmlGpuEvidence[];
}

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);
const isU32 = (v: unknown): v is number =>
  Number.isSafeInteger(v) && (v as number) >= 0 && (v as number) <= 0xffffffff;
const HEX_BYTES = /^(?:[0-9a-f]{2})+$/;
const UUID = /^GPU-[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;
const DRIVER = /^\d{1,4}(?:\.\d{1,4}){1,3}$/;
const PEM_BLOCK = /-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]*)-----END CERTIFICATE-----/g;
const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;
/** NVML_CC_SYSTEM_MULTIGPU_PROTECTED_PCIE. */
const MULTIGPU_PROTECTED_PCIE = 1;

function sameKeys(o: Record<string, unknown>, keys: readonly string[]): boolean {
  const have = Object.keys(o);
  return have.length === keys.length && keys.every((k) => Object.hasOwn(o, k));
}

/** Why a chain is not PEM certificates only, or undefined when it is. */
function pemProblem(text: string): string | undefined {
  if (text.length > MAX_CHAIN_BYTES)
    return `it is ${text.length} bytes, NVML's buffer holds ${MAX_CHAIN_BYTES}`;
  if (text.replace(PEM_BLOCK, "").trim() !== "") return "it holds text outside CERTIFICATE blocks";
  const bodies = [...text.matchAll(PEM_BLOCK)].map((m) => (m[1] ?? "").replace(/\s+/g, ""));
  if (bodies.length === 0) return "it holds no certificate";
  if (bodies.length > MAX_CHAIN_CERTS)
    return `it holds ${bodies.length} certificates, more than ${MAX_CHAIN_CERTS}`;
  for (const [i, body] of bodies.entries()) {
    const der = BASE64.test(body) && body.length % 4 === 0 ? Buffer.from(body, "base64") : undefined;
    // Re-encoding must give the same text, or the base64 was not canonical (stray padding, bits).
    if (!der || der.toString("base64") !== body) return `certificate ${i} is not base64`;
    if (der[0] !== 0x30) return `certificate ${i} is not DER (no SEQUENCE)`;
  }
  return undefined;
}

/** The mode the node states for the policy (unsigned; the signed report and NRAS check what they can). */
function declaredMode(cc: NvmlCollection["confidentialCompute"]): DeclaredCcMode {
  // DevTools first: it is the weaker state, and a policy that does not allow it must see it.
  if (cc.devToolsMode !== 0) return "devtools";
  if (cc.multiGpuMode === MULTIGPU_PROTECTED_PCIE) return "ppcie";
  if (cc.ccFeature !== 0) return "on";
  throw new NvmlCollectorError(
    "CcOff",
    "NVML says confidential computing is off (ccFeature 0, no protected-PCIe mode); turn CC mode on for the GPUs",
  );
}

/**
 * Reads the program's stdout for the challenge `nonce`: the evidence, or the program's own error
 * (thrown with its code). Anything else is refused with an Output… / Report… / GpuCount… code.
 */
export function parseNvmlCollectorOutput(text: string, nonce: Uint8Array): NvmlCollection {
  const malformed = (what: string) => new NvmlCollectorError("OutputMalformed", `the document ${what}`);
  if (Buffer.byteLength(text) > MAX_COLLECTOR_OUTPUT_BYTES)
    throw new NvmlCollectorError("OutputTooLarge", `it is more than ${MAX_COLLECTOR_OUTPUT_BYTES} bytes`);
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (cause) {
    throw new NvmlCollectorError("OutputNotJson", "nvml_collector.py printed something that is not JSON", {
      cause,
    });
  }
  if (!isObject(doc)) throw malformed("is not an object");
  if (doc.apiVersion !== NVML_COLLECTOR_API_VERSION)
    throw malformed(`has apiVersion ${JSON.stringify(doc.apiVersion)}, not ${NVML_COLLECTOR_API_VERSION}`);

  if (Object.hasOwn(doc, "error")) {
    const e = doc.error;
    if (!sameKeys(doc, ["apiVersion", "error"]) || !isObject(e)) throw malformed("has a bad error");
    const keys = e.gpu === undefined ? ["code", "message"] : ["code", "message", "gpu"];
    if (
      !sameKeys(e, keys) ||
      !PROGRAM_CODES.includes(e.code as (typeof PROGRAM_CODES)[number]) ||
      typeof e.message !== "string" ||
      e.message.length > 4096 ||
      (e.gpu !== undefined && !(isU32(e.gpu) && e.gpu < MAX_DEVICES))
    )
      throw malformed("has an error that is not {code, message, gpu?} with a known code");
    throw new NvmlCollectorError(e.code as NvmlCollectorCode, e.message, {
      ...(e.gpu === undefined ? {} : { gpu: e.gpu as number }),
    });
  }

  if (!sameKeys(doc, ["apiVersion", "nonce", "driverVersion", "confidentialCompute", "gpus"]))
    throw malformed("does not have exactly apiVersion, nonce, driverVersion, confidentialCompute, gpus");
  if (doc.nonce !== Buffer.from(nonce).toString("hex"))
    throw new NvmlCollectorError(
      "NonceNotEchoed",
      "the program answered another nonce than the challenge's; it is not this challenge's run",
    );
  if (typeof doc.driverVersion !== "string" || !DRIVER.test(doc.driverVersion))
    throw malformed("has a driverVersion that is not a version number");
  const cc = doc.confidentialCompute;
  if (
    !isObject(cc) ||
    !sameKeys(cc, ["environment", "ccFeature", "devToolsMode", "multiGpuMode", "gpusReadyState"]) ||
    !isU32(cc.environment) ||
    !isU32(cc.ccFeature) ||
    !isU32(cc.devToolsMode) ||
    !(cc.multiGpuMode === null || isU32(cc.multiGpuMode)) ||
    !(cc.gpusReadyState === null || isU32(cc.gpusReadyState))
  )
    throw malformed("has a confidentialCompute that is not NVML's state");
  const confidentialCompute = cc as NvmlCollection["confidentialCompute"];
  if (!Array.isArray(doc.gpus)) throw malformed("has no gpus list");
  if (doc.gpus.length === 0 || doc.gpus.length > MAX_DEVICES)
    throw new NvmlCollectorError(
      "GpuCountInvalid",
      `the program lists ${doc.gpus.length} GPUs; a node has 1 to ${MAX_DEVICES}`,
    );
  const uuids = new Set<string>();
  const gpus = doc.gpus.map((g: unknown, i: number): NvmlGpuEvidence => {
    if (!isObject(g) || !sameKeys(g, ["index", "uuid", "attestationReport", "certificateChain"]))
      throw malformed(`has GPU ${i} that is not {index, uuid, attestationReport, certificateChain}`);
    if (g.index !== i) throw malformed(`lists GPU ${String(g.index)} at position ${i}`);
    if (typeof g.uuid !== "string" || !UUID.test(g.uuid) || uuids.has(g.uuid))
      throw malformed(`has GPU ${i} without a UUID of its own`);
    uuids.add(g.uuid);
    if (typeof g.attestationReport !== "string" || !HEX_BYTES.test(g.attestationReport))
      throw new NvmlCollectorError("ReportNotHex", `GPU ${i}'s attestation report is not hex bytes`, {
        gpu: i,
      });
    if (g.attestationReport.length > 2 * MAX_REPORT_BYTES)
      throw new NvmlCollectorError(
        "ReportTooLarge",
        `GPU ${i}'s attestation report is ${g.attestationReport.length / 2} bytes, NVML's buffer holds ${MAX_REPORT_BYTES}`,
        { gpu: i },
      );
    const problem =
      typeof g.certificateChain === "string" ? pemProblem(g.certificateChain) : "it is not text";
    if (problem !== undefined)
      throw new NvmlCollectorError("CertChainNotPem", `GPU ${i}'s certificate chain is refused: ${problem}`, {
        gpu: i,
      });
    return {
      index: i,
      uuid: g.uuid,
      report: new Uint8Array(Buffer.from(g.attestationReport, "hex")),
      certificateChain: g.certificateChain as string,
    };
  });
  return {
    driverVersion: doc.driverVersion,
    confidentialCompute,
    declaredCcMode: declaredMode(confidentialCompute),
    gpus,
  };
}

/** One evidence set per GPU, in NVML's index order. RIMs and OCSP answers are not NVML's to give. */
export function nvmlEvidence(collection: NvmlCollection): LocalDeviceEvidence[] {
  return collection.gpus.map((g) => ({
    report: g.report,
    certificateChain: g.certificateChain,
    rims: [],
    declaredCcMode: collection.declaredCcMode,
  }));
}

export interface NvmlCollectorOptions {
  /** The interpreter that has nvidia-ml-py. Default `python3`. */
  python?: string;
  /** Default nvml_collector.py next to this file; tests point it elsewhere. */
  script?: string;
  /** Default DEFAULT_COLLECTOR_TIMEOUT_MS. */
  timeoutMs?: number;
  /** Default MAX_COLLECTOR_OUTPUT_BYTES. */
  maxOutputBytes?: number;
  /** The program's environment. Default the agent's. */
  env?: NodeJS.ProcessEnv;
}

/** Runs nvml_collector.py once for `nonce`; throws NvmlCollectorError. */
export function runNvmlCollector(
  nonce: Uint8Array,
  options: NvmlCollectorOptions & { signal?: AbortSignal } = {},
): Promise<NvmlCollection> {
  const python = options.python ?? "python3";
  const timeoutMs = options.timeoutMs ?? DEFAULT_COLLECTOR_TIMEOUT_MS;
  const maxBytes = options.maxOutputBytes ?? MAX_COLLECTOR_OUTPUT_BYTES;
  return new Promise((resolve, reject) => {
    if (options.signal?.aborted)
      return reject(
        new NvmlCollectorError("CollectorTimeout", "the challenge was given up before it started"),
      );
    // -B: the agent's root filesystem is read-only; do not try to write bytecode caches.
    const child = spawn(
      python,
      ["-B", options.script ?? NVML_COLLECTOR_SCRIPT, Buffer.from(nonce).toString("hex")],
      {
        stdio: ["ignore", "pipe", "pipe"],
        env: options.env ?? process.env,
      },
    );
    let settled = false;
    const settle = (err: NvmlCollectorError | undefined, value?: NvmlCollection) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      options.signal?.removeEventListener("abort", onAbort);
      if (err) {
        child.kill("SIGKILL");
        reject(err);
      } else resolve(value as NvmlCollection);
    };
    const timer = setTimeout(
      () =>
        settle(
          new NvmlCollectorError(
            "CollectorTimeout",
            `nvml_collector.py did not finish within ${timeoutMs} ms; an NVML call hangs: check nvidia-smi and the driver's log`,
          ),
        ),
      timeoutMs,
    );
    const onAbort = () =>
      settle(
        new NvmlCollectorError("CollectorTimeout", "the challenge was given up before the GPUs answered"),
      );
    options.signal?.addEventListener("abort", onAbort, { once: true });

    const out: Buffer[] = [];
    let outBytes = 0;
    let errTail = "";
    child.stdout.on("data", (chunk: Buffer) => {
      outBytes += chunk.length;
      if (outBytes > maxBytes)
        return settle(
          new NvmlCollectorError(
            "OutputTooLarge",
            `nvml_collector.py printed more than ${maxBytes} bytes; no node's evidence is that large`,
          ),
        );
      out.push(chunk);
    });
    child.stderr.on("data", (chunk: Buffer) => {
      errTail = (errTail + chunk.toString("utf8")).slice(-2048);
    });
    child.on("error", (err: NodeJS.ErrnoException) =>
      settle(
        err.code === "ENOENT"
          ? new NvmlCollectorError(
              "PythonNotFound",
              `the interpreter ${python} is not found; install python3 with nvidia-ml-py in the agent image, or give --python`,
              { cause: err },
            )
          : new NvmlCollectorError("CollectorFailed", `cannot start ${python}: ${err.message}`, {
              cause: err,
            }),
      ),
    );
    child.on("close", (code, signal) => {
      if (settled) return;
      if (code !== 0 && code !== 3)
        return settle(
          new NvmlCollectorError(
            "CollectorFailed",
            `nvml_collector.py exited ${code ?? signal}: ${errTail.trim().split("\n").slice(-3).join(" | ") || "no message"}`,
          ),
        );
      let text: string;
      try {
        text = new TextDecoder("utf-8", { fatal: true }).decode(Buffer.concat(out));
      } catch (cause) {
        return settle(
          new NvmlCollectorError("OutputNotJson", "nvml_collector.py printed bytes that are not UTF-8", {
            cause,
          }),
        );
      }
      try {
        const collection = parseNvmlCollectorOutput(text, nonce);
        if (code !== 0)
          return settle(new NvmlCollectorError("OutputMalformed", "evidence came with exit status 3"));
        settle(undefined, collection);
      } catch (err) {
        settle(err as NvmlCollectorError);
      }
    });
  });
}

/**
 * The production collector. Collections run one at a time: concurrent SPDM requests to the same GPU
 * gain nothing, and two members' challenges must not race inside the driver.
 */
export function nvmlCollector(options: NvmlCollectorOptions = {}): EvidenceCollector {
  let queue: Promise<unknown> = Promise.resolve();
  return ({ nonce, signal }) => {
    const run = queue.then(() => runNvmlCollector(nonce, { ...options, signal }));
    queue = run.catch(() => undefined);
    return run.then(nvmlEvidence);
  };
}
