/**
 * `sovereign attest …`: the offline verifier an auditor runs on stored evidence files (no cluster,
 * no network), and the testbed minter that produces such files. Exit codes: 0 the evidence
 * passes the policy, 1 it is refused (the verdict says why), 2 the command itself is wrong.
 */
import { readFile } from "node:fs/promises";
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { parse as parseYaml } from "yaml";
import { parseAttestationPolicySpec } from "../../crds/validate.ts";
import { fromHex } from "../bytes.ts";
import { isAttestationError } from "../errors.ts";
import type { DeclaredCcMode } from "../facts.ts";
import { evaluatePolicy } from "../policy.ts";
import { canonicalJson } from "../verdict.ts";
import { type TrustAnchors, verifyLocalEvidence } from "../verify.ts";
import { isTestbedMintError } from "./errors.ts";
import { writeEvidenceSet } from "./files.ts";
import { isTestbedFault, mintTestbedEvidence, TESTBED_FAULTS, type TestbedFault } from "./mint.ts";
import { nvidiaTrustAnchors, testbedTrustAnchors } from "./trust.ts";

export const ATTEST_USAGE = `usage:
  sovereign attest verify --report <file> --chain <file> --rim <file>... [--ocsp <file>...]
        --nonce <hex> --policy <AttestationPolicy yaml> [--at <RFC3339>] [--collected-at <RFC3339>]
        [--ocsp-nonce <hex>] [--cc-mode on|off|devtools|ppcie]
        [--trust nvidia --device-root <pem> --rim-root <pem> | --trust testbed]
      prints the verdict as JSON; exit 0 passed, 1 refused, 2 usage error
  sovereign attest mint-testbed --out <dir> --nonce <hex> [--at <RFC3339>] [--fault <name>...]
        [--gpu-uuid <id>] [--driver <version>] [--vbios <version>] [--cc-mode on|off|devtools|ppcie]
      writes testbed evidence and evidence.json with the verify command for it
      faults: ${TESTBED_FAULTS.join(", ")}`;

const CC_MODES: readonly DeclaredCcMode[] = ["on", "off", "devtools", "ppcie"];

export interface CommandIo {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
}

const processIo: CommandIo = {
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
};

/** A mistake in how the command was called: reported with exit code 2, never as a verdict. */
class UsageError extends Error {
  override name = "UsageError";
}

export async function attestCommand(argv: string[], io: CommandIo = processIo): Promise<number> {
  const [sub, ...args] = argv;
  try {
    if (sub === "verify") return await verifyCommand(args, io);
    if (sub === "mint-testbed") return await mintCommand(args, io);
    throw new UsageError(sub === undefined ? "missing subcommand" : `unknown subcommand "${sub}"`);
  } catch (e) {
    if (e instanceof UsageError || (e as { code?: string }).code?.startsWith("ERR_PARSE_ARGS")) {
      io.stderr(`AttestUsage: ${(e as Error).message}\n${ATTEST_USAGE}\n`);
      return 2;
    }
    throw e;
  }
}

function time(flag: string, value: string | undefined, fallback: Date): Date {
  if (value === undefined) return fallback;
  const date = new Date(value);
  if (!/^\d{4}-\d{2}-\d{2}T/.test(value) || Number.isNaN(date.getTime())) {
    throw new UsageError(`--${flag} "${value}" is not an RFC 3339 time such as 2025-08-21T12:00:00Z`);
  }
  return date;
}

function hex(flag: string, value: string | undefined, bytes?: number): Uint8Array | undefined {
  if (value === undefined) return undefined;
  let out: Uint8Array;
  try {
    out = fromHex(value, `--${flag}`);
  } catch {
    throw new UsageError(`--${flag} must be hex digits, got "${value}"`);
  }
  if (bytes !== undefined && out.length !== bytes) {
    throw new UsageError(`--${flag} must be ${bytes} bytes (${bytes * 2} hex digits), got ${out.length}`);
  }
  return out;
}

function ccMode(value: string | undefined): DeclaredCcMode | undefined {
  if (value === undefined) return undefined;
  if (!(CC_MODES as readonly string[]).includes(value)) {
    throw new UsageError(`--cc-mode must be one of ${CC_MODES.join(", ")}, got "${value}"`);
  }
  return value as DeclaredCcMode;
}

async function read(flag: string, path: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (e) {
    throw new UsageError(
      `cannot read --${flag} ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
    );
  }
}

const required = (flag: string, value: string | undefined): string => {
  if (value === undefined || value === "") throw new UsageError(`--${flag} is required`);
  return value;
};

async function loadPolicy(path: string) {
  // YAML 1.1, as kubectl reads it: a bare `ccMode: On` is then `true` here too, and refused, rather
  // than passing offline and failing at the API server.
  let doc: unknown;
  try {
    doc = parseYaml((await read("policy", path)).toString("utf8"), { version: "1.1" });
  } catch (e) {
    if (e instanceof UsageError) throw e;
    throw new UsageError(`--policy ${path} is not YAML: ${(e as Error).message}`);
  }
  const object = (typeof doc === "object" && doc !== null ? doc : {}) as { kind?: unknown; spec?: unknown };
  if (object.kind !== undefined && object.kind !== "AttestationPolicy") {
    throw new UsageError(`--policy ${path} holds a ${String(object.kind)}, not an AttestationPolicy`);
  }
  // A whole AttestationPolicy object (as applied with kubectl) or its bare spec.
  const spec = "spec" in object ? object.spec : doc;
  const parsed = parseAttestationPolicySpec(spec);
  if (!parsed.ok) {
    throw new UsageError(
      `--policy ${path} is not a valid AttestationPolicy spec:\n${parsed.errors.map((e) => `  ${e.path}: ${e.message} [${e.reason}]`).join("\n")}`,
    );
  }
  return parsed.value;
}

async function anchors(trust: string, deviceRoot?: string, rimRoot?: string): Promise<TrustAnchors> {
  if (trust === "testbed") {
    if (deviceRoot !== undefined || rimRoot !== undefined) {
      throw new UsageError(
        "--device-root and --rim-root apply to --trust nvidia; --trust testbed uses the testbed roots",
      );
    }
    return testbedTrustAnchors();
  }
  if (trust !== "nvidia") throw new UsageError(`--trust must be nvidia or testbed, got "${trust}"`);
  if (deviceRoot === undefined || rimRoot === undefined) {
    throw new UsageError(
      "--trust nvidia needs NVIDIA's roots: --device-root <nvtrust roots/verifier_device_root.pem> --rim-root <nvtrust roots/verifier_RIM_root.pem>",
    );
  }
  const [devicePem, rimPem] = [
    (await read("device-root", deviceRoot)).toString(),
    (await read("rim-root", rimRoot)).toString(),
  ];
  try {
    return nvidiaTrustAnchors(devicePem, rimPem);
  } catch (e) {
    if (isAttestationError(e)) throw new UsageError(e.message);
    throw e;
  }
}

async function verifyCommand(args: string[], io: CommandIo): Promise<number> {
  const { values } = parseArgs({
    args,
    strict: true,
    options: {
      report: { type: "string" },
      chain: { type: "string" },
      rim: { type: "string", multiple: true },
      ocsp: { type: "string", multiple: true },
      nonce: { type: "string" },
      "ocsp-nonce": { type: "string" },
      at: { type: "string" },
      "collected-at": { type: "string" },
      "cc-mode": { type: "string" },
      policy: { type: "string" },
      trust: { type: "string" },
      "device-root": { type: "string" },
      "rim-root": { type: "string" },
    },
  });
  const nonce = hex("nonce", required("nonce", values.nonce), 32) as Uint8Array;
  const ocspNonce = hex("ocsp-nonce", values["ocsp-nonce"]);
  const at = time("at", values.at, new Date());
  const collectedAt = time("collected-at", values["collected-at"], at);
  // The report does not sign the CC mode; it is the node agent's statement, "on" unless told otherwise.
  const declared = ccMode(values["cc-mode"]) ?? "on";
  const spec = await loadPolicy(required("policy", values.policy));
  const trust = await anchors(values.trust ?? "nvidia", values["device-root"], values["rim-root"]);
  const reportBytes = await read("report", required("report", values.report));
  const reportText = reportBytes.toString("latin1").trim();
  const chain = (await read("chain", required("chain", values.chain))).toString("utf8");
  const rims = [];
  for (const file of values.rim ?? []) rims.push({ xml: (await read("rim", file)).toString("utf8") });
  const ocsp: (Uint8Array | string)[] = [];
  for (const file of values.ocsp ?? []) {
    const bytes = await read("ocsp", file);
    // DER starts with a SEQUENCE tag; NVIDIA's tools store base64 text instead.
    ocsp.push(bytes[0] === 0x30 ? new Uint8Array(bytes) : bytes.toString("latin1"));
  }
  if (values.trust === "testbed") {
    io.stderr(
      "attest: trusting the testbed roots; anyone can mint evidence under them, never use this in production\n",
    );
  }
  const facts = await verifyLocalEvidence({
    devices: [
      {
        report: /^[0-9a-fA-F]+$/.test(reportText) ? reportText : new Uint8Array(reportBytes),
        certificateChain: chain,
        rims,
        ocspResponses: ocsp,
        ...(ocspNonce ? { ocspRequestNonce: ocspNonce } : {}),
        declaredCcMode: declared,
      },
    ],
    expectedNonce: nonce,
    collectedAt: collectedAt.toISOString(),
    anchors: trust,
  });
  const verdict = evaluatePolicy(facts, spec, { at });
  io.stdout(`${JSON.stringify(JSON.parse(canonicalJson(verdict)), null, 2)}\n`);
  io.stderr(
    verdict.passed
      ? `attest: PASSED as of ${verdict.evaluatedAt}\n`
      : `attest: REFUSED as of ${verdict.evaluatedAt}: ${verdict.reasons.join(", ")}\n`,
  );
  return verdict.passed ? 0 : 1;
}

async function mintCommand(args: string[], io: CommandIo): Promise<number> {
  const { values } = parseArgs({
    args,
    strict: true,
    options: {
      out: { type: "string" },
      nonce: { type: "string" },
      at: { type: "string" },
      fault: { type: "string", multiple: true },
      "gpu-uuid": { type: "string" },
      driver: { type: "string" },
      vbios: { type: "string" },
      "cc-mode": { type: "string" },
    },
  });
  const out = resolve(required("out", values.out));
  const nonce = hex("nonce", required("nonce", values.nonce), 32) as Uint8Array;
  const faults: TestbedFault[] = [];
  for (const fault of values.fault ?? []) {
    if (!isTestbedFault(fault))
      throw new UsageError(`--fault "${fault}" is not one of ${TESTBED_FAULTS.join(", ")}`);
    faults.push(fault);
  }
  const mode = ccMode(values["cc-mode"]);
  let minted: Awaited<ReturnType<typeof mintTestbedEvidence>>;
  try {
    minted = await mintTestbedEvidence({
      nonce,
      at: time("at", values.at, new Date()),
      tamper: faults,
      gpu: {
        ...(values["gpu-uuid"] ? { uuid: values["gpu-uuid"] } : {}),
        ...(values.driver ? { driverVersion: values.driver } : {}),
        ...(values.vbios ? { vbiosVersion: values.vbios } : {}),
      },
      ...(mode ? { ccMode: mode } : {}),
    });
  } catch (e) {
    if (isTestbedMintError(e)) throw new UsageError(e.message);
    throw e;
  }
  const written = await writeEvidenceSet(minted, out);
  io.stdout(
    `${JSON.stringify({ dir: written.dir, manifest: written.manifest, verify: ["sovereign", "attest", "verify", ...written.verifyArgs] }, null, 2)}\n`,
  );
  io.stderr(
    `attest: minted testbed evidence for ${minted.gpu.uuid}${faults.length ? ` with faults ${faults.join(", ")}` : ""} in ${written.dir}\n`,
  );
  return 0;
}
