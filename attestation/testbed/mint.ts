/**
 * The software evidence source for the testbed's kwok GPUs: given the challenge nonce, it mints
 * what a real H100 in CC mode plus NVIDIA's RIM service and OCSP responders would hand the
 * verifier (report, device chain, driver and VBIOS RIMs, OCSP answers), under the testbed PKI.
 *
 * Faults reproduce, one reason code each, the ways real evidence fails, so the scheduling gate
 * can be tested against every refusal without a GPU.
 */
import { createHash } from "node:crypto";
import { fromHex, toHex } from "../bytes.ts";
import type { DeclaredCcMode } from "../facts.ts";
import { Reason, type ReasonCode } from "../reasons.ts";
import type { RimDocument } from "../rim.ts";
import type { LocalDeviceEvidence, LocalVerificationInput, TrustAnchors } from "../verify.ts";
import { TestbedMintError } from "./errors.ts";
import { buildOcspResponse, type OcspTarget } from "./ocsp.ts";
import {
  type Authority,
  gpuIdentity,
  type Signer,
  TESTBED_SEED,
  TESTBED_VALIDITY,
  type TestbedPki,
  testbedPki,
} from "./pki.ts";
import { buildReport, encodeVbiosVersion, MEASUREMENT_BLOCKS, measurementValue } from "./report.ts";
import { rimXml, signRim } from "./rim.ts";

/** Ways minted evidence can be wrong, each refused with exactly one reason code (FAULT_REASONS). */
export const TESTBED_FAULTS = [
  "wrong-nonce",
  "cc-off",
  "measurement-mismatch",
  "revoked",
  "stale",
  "bad-signature",
] as const;
export type TestbedFault = (typeof TESTBED_FAULTS)[number];

export const FAULT_REASONS: Readonly<Record<TestbedFault, ReasonCode>> = {
  "wrong-nonce": Reason.NonceMismatch,
  "cc-off": Reason.CcModeOff,
  "measurement-mismatch": Reason.MeasurementMismatch,
  revoked: Reason.CertRevoked,
  stale: Reason.EvidenceStale,
  "bad-signature": Reason.SignatureInvalid,
};

export const isTestbedFault = (value: string): value is TestbedFault =>
  (TESTBED_FAULTS as readonly string[]).includes(value);

/**
 * RIM indices (0-based) each RIM covers: NVIDIA's split for an H100 (driver 21 indices, VBIOS 12,
 * none in both), so the comparison exercises the same paths as real evidence.
 */
export const DRIVER_INDICES = [
  7, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40,
];
export const VBIOS_INDICES = [0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12];
/** Indices whose RIM lists two values with the runtime one second, as 550.90.07's indices 23 and 24 do. */
const TWO_ALTERNATIVES = new Set([23, 24]);
/** The index the measurement-mismatch fault changes (a VBIOS index, like NVIDIA's re-signed index 9). */
export const MISMATCH_INDEX = 9;
/** Older than the largest maxEvidenceAgeSeconds the schema allows (7 days). */
const STALE_BY_MS = 8 * 86_400_000;
const OCSP_ISSUED_BEFORE_MS = 5 * 60_000;
const CRL_REASON_KEY_COMPROMISE = 1;

export interface TestbedGpu {
  /** NVIDIA-style "GPU-xxxxxxxx-…"; derived from `index` when absent. */
  uuid?: string;
  index?: number;
  driverVersion?: string;
  /** Dotted hex, e.g. 96.00.9F.00.01. */
  vbiosVersion?: string;
  architecture?: "HOPPER";
}

export const TESTBED_GPU_DEFAULTS = {
  driverVersion: "570.133.20",
  vbiosVersion: "96.00.CF.00.02",
  architecture: "HOPPER",
  /** H100 SXM5 board identity as the RIM id uses it: PROJECT_PROJECTSKU_CHIPSKU. */
  project: "1010",
  projectSku: "0200",
  chipSku: "882",
} as const;

export interface MintOptions {
  /** The challenge: 32 bytes, hex or raw; see nonce.ts for how the hub derives it. */
  nonce: string | Uint8Array;
  gpu?: TestbedGpu;
  /** When the challenge was answered (RFC 3339 or Date): OCSP answers are fresh at this instant. */
  at: string | Date;
  /** What the node agent reports (unsigned); "ppcie" also sets the signed protected-PCIe status. Default "on". */
  ccMode?: DeclaredCcMode;
  tamper?: TestbedFault | readonly TestbedFault[];
  /** Another seed gives an unrelated PKI (a different "vendor"); default TESTBED_SEED. */
  seed?: string;
}

export interface MintedEvidence {
  /** Exactly what verifyLocalEvidence takes for one device. */
  device: LocalDeviceEvidence & {
    report: Uint8Array;
    rims: Required<RimDocument>[];
    ocspResponses: Uint8Array[];
    ocspRequestNonce: Uint8Array;
  };
  /** The nonce the verifier must expect (the requested one, also under the wrong-nonce fault), hex. */
  expectedNonce: string;
  /** When the challenge was issued (RFC 3339): `at`, or 8 days earlier under the stale fault. */
  collectedAt: string;
  /** The instant the evidence is current at (RFC 3339); verify as of this time. */
  at: string;
  gpu: { uuid: string; driverVersion: string; vbiosVersion: string; architecture: "HOPPER" };
  rimIds: { driver: string; vbios: string };
  /** What each OCSP answer is about, parallel to device.ocspResponses (e.g. "device-chain-1", "rim-l2"). */
  ocspLabels: string[];
  faults: TestbedFault[];
}

const uuidFromIndex = (index: number): string => {
  const h = createHash("sha256").update(`sovereign-testbed/gpu/${index}`).digest("hex");
  return `GPU-${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
};

function parseAt(at: string | Date): Date {
  const date = typeof at === "string" ? new Date(at) : at;
  if (Number.isNaN(date.getTime()))
    throw new TestbedMintError(`"${String(at)}" is not a time; give an RFC 3339 instant`);
  if (date < TESTBED_VALIDITY.notBefore || date > TESTBED_VALIDITY.notAfter) {
    throw new TestbedMintError(
      `${date.toISOString()} is outside the testbed PKI's validity (${TESTBED_VALIDITY.notBefore.toISOString()}..${TESTBED_VALIDITY.notAfter.toISOString()})`,
    );
  }
  return new Date(Math.floor(date.getTime() / 1000) * 1000);
}

const derive = (label: string, bytes: number): Uint8Array =>
  new Uint8Array(createHash("sha256").update(label).digest().subarray(0, bytes));

/** Mints one GPU's evidence. Deterministic except for the RIM signature values. */
export async function mintTestbedEvidence(options: MintOptions): Promise<MintedEvidence> {
  const faults = new Set<TestbedFault>(
    options.tamper === undefined
      ? []
      : typeof options.tamper === "string"
        ? [options.tamper]
        : options.tamper,
  );
  for (const fault of faults) {
    if (!isTestbedFault(fault))
      throw new TestbedMintError(`unknown fault "${fault}"; use one of ${TESTBED_FAULTS.join(", ")}`);
  }
  let nonce: Uint8Array;
  try {
    nonce = typeof options.nonce === "string" ? fromHex(options.nonce, "nonce") : options.nonce;
  } catch {
    throw new TestbedMintError(`the nonce "${String(options.nonce)}" is not hex; give 64 hex digits`);
  }
  if (nonce.length !== 32)
    throw new TestbedMintError(`the nonce must be 32 bytes (64 hex digits), got ${nonce.length}`);
  const at = parseAt(options.at);
  const gpuIn = options.gpu ?? {};
  if (gpuIn.architecture !== undefined && gpuIn.architecture !== "HOPPER") {
    throw new TestbedMintError(`architecture ${String(gpuIn.architecture)} is not minted; only HOPPER is`);
  }
  const gpu = {
    uuid: gpuIn.uuid ?? uuidFromIndex(gpuIn.index ?? 0),
    driverVersion: gpuIn.driverVersion ?? TESTBED_GPU_DEFAULTS.driverVersion,
    vbiosVersion: (gpuIn.vbiosVersion ?? TESTBED_GPU_DEFAULTS.vbiosVersion).toUpperCase(),
    architecture: "HOPPER" as const,
  };
  if (!/^[0-9]+(\.[0-9]+){1,3}$/.test(gpu.driverVersion)) {
    throw new TestbedMintError(
      `driver version "${gpu.driverVersion}" is not dotted decimal such as 570.133.20`,
    );
  }
  encodeVbiosVersion(gpu.vbiosVersion);
  const pki = testbedPki(options.seed ?? TESTBED_SEED);
  const identity = gpuIdentity(pki, gpu.uuid, gpu.vbiosVersion);
  const { project, projectSku, chipSku } = TESTBED_GPU_DEFAULTS;
  const rimIds = testbedRimIds(gpu);

  const driverGolden = goldenValues("driver", gpu.driverVersion, DRIVER_INDICES);
  const vbiosGolden = goldenValues("vbios", gpu.vbiosVersion, VBIOS_INDICES);
  const measurements = Array.from({ length: MEASUREMENT_BLOCKS }, (_, i) => {
    const alternatives = driverGolden.get(i) ?? vbiosGolden.get(i);
    return alternatives === undefined ? new Uint8Array(48) : fromHex(alternatives.at(-1) as string, "golden");
  });
  if (faults.has("measurement-mismatch")) {
    measurements[MISMATCH_INDEX] = measurementValue("tampered-vbios", gpu.vbiosVersion, MISMATCH_INDEX);
  }

  const reportNonce = faults.has("wrong-nonce")
    ? derive(`sovereign-testbed/other-challenge/${toHex(nonce)}`, 32)
    : nonce;
  const report = buildReport(
    {
      nonce: reportNonce,
      measurements,
      responderNonce: derive(`sovereign-testbed/responder-nonce/${gpu.uuid}/${toHex(reportNonce)}`, 32),
      driverVersion: gpu.driverVersion,
      vbiosVersion: gpu.vbiosVersion,
      project,
      projectSku,
      chipSku,
      boardId: 0x3b1,
      fwid: identity.fwid,
      protectedPcie: options.ccMode === "ppcie",
    },
    identity.leaf.key,
  );
  if (faults.has("bad-signature")) report[report.length - 1] = (report[report.length - 1] as number) ^ 0x01;

  const ocspRequestNonce = derive(`sovereign-testbed/ocsp-nonce/${toHex(nonce)}`, 32);
  const [rims, ocsp] = await Promise.all([
    testbedRims(gpu, options.seed),
    testbedOcspAnswers({
      brom: identity.brom,
      at,
      nonce: ocspRequestNonce,
      revoked: faults.has("revoked"),
      seed: options.seed,
    }),
  ]);

  return {
    device: {
      report,
      certificateChain: identity.chainPem,
      rims,
      ocspResponses: ocsp.answers,
      ocspRequestNonce,
      declaredCcMode: faults.has("cc-off") ? "off" : (options.ccMode ?? "on"),
    },
    ocspLabels: ocsp.labels,
    expectedNonce: toHex(nonce),
    collectedAt: new Date(faults.has("stale") ? at.getTime() - STALE_BY_MS : at.getTime()).toISOString(),
    at: at.toISOString(),
    gpu,
    rimIds,
    faults: TESTBED_FAULTS.filter((f) => faults.has(f)),
  };
}

const tagId = (rimId: string) => createHash("sha384").update(`sovereign-testbed/rim/${rimId}`).digest("hex");

const goldenValues = (component: "driver" | "vbios", version: string, indices: number[]) =>
  new Map(
    indices.map((i) => {
      const value = toHex(measurementValue(component, version, i));
      return [
        i,
        TWO_ALTERNATIVES.has(i)
          ? [toHex(measurementValue(`${component}-previous`, version, i)), value]
          : [value],
      ];
    }),
  );

/** NVIDIA's RIM ids for the testbed board (H100 SXM5) at these versions. */
export function testbedRimIds(versions: { driverVersion: string; vbiosVersion: string }): {
  driver: string;
  vbios: string;
} {
  const { project, projectSku, chipSku } = TESTBED_GPU_DEFAULTS;
  return {
    driver: `NV_GPU_DRIVER_GH100_${versions.driverVersion}`,
    vbios: `NV_GPU_VBIOS_${project}_${projectSku}_${chipSku}_${versions.vbiosVersion.toUpperCase().replace(/\./g, "")}`,
  };
}

/**
 * The testbed's stand-in for NVIDIA's RIM service: the signed driver and VBIOS RIMs with the
 * golden values of these versions. A verifier that fetches RIMs by the versions a report names
 * (as NRAS does) gets what the minter handed out with the evidence.
 */
export async function testbedRims(
  versions: { driverVersion: string; vbiosVersion: string },
  seed = TESTBED_SEED,
): Promise<Required<RimDocument>[]> {
  const vbiosVersion = versions.vbiosVersion.toUpperCase();
  const rimIds = testbedRimIds(versions);
  const { l3, l2, root: rimRoot, driverSigner, vbiosSigner } = testbedPki(seed).rim;
  const [driverRim, vbiosRim] = await Promise.all([
    signRim(
      rimXml(
        {
          chip: "GH100",
          version: versions.driverVersion,
          golden: goldenValues("driver", versions.driverVersion, DRIVER_INDICES),
          resources: MEASUREMENT_BLOCKS,
        },
        tagId(rimIds.driver),
      ),
      driverSigner,
      [driverSigner, l3, l2, rimRoot],
    ),
    signRim(
      rimXml(
        {
          chip: "GH100",
          version: vbiosVersion,
          golden: goldenValues("vbios", vbiosVersion, VBIOS_INDICES),
          resources: MEASUREMENT_BLOCKS,
        },
        tagId(rimIds.vbios),
      ),
      vbiosSigner,
      [vbiosSigner, l3, l2, rimRoot],
    ),
  ]);
  return [
    { id: rimIds.driver, xml: driverRim },
    { id: rimIds.vbios, xml: vbiosRim },
  ];
}

/**
 * The testbed's stand-in for NVIDIA's OCSP responders: an answer, echoing `nonce`, for every
 * certificate the verifier asks about, fresh at `at`. `revoked` revokes the GPU's BROM.
 */
export async function testbedOcspAnswers(options: {
  brom: { cert: { der: Uint8Array } };
  at: Date;
  nonce: Uint8Array;
  revoked?: boolean;
  seed?: string;
}): Promise<{ labels: string[]; answers: Uint8Array[] }> {
  const targets = ocspTargets(testbedPki(options.seed ?? TESTBED_SEED), options.brom);
  const answers = targets.map(({ target, issuer, responder, revocable }) =>
    buildOcspResponse({
      target,
      issuer,
      responder,
      thisUpdate: new Date(options.at.getTime() - OCSP_ISSUED_BEFORE_MS),
      status:
        revocable && options.revoked
          ? {
              kind: "revoked",
              at: new Date(options.at.getTime() - 86_400_000),
              reason: CRL_REASON_KEY_COMPROMISE,
            }
          : { kind: "good" },
      nonce: options.nonce,
    }),
  );
  return { labels: targets.map((t) => t.label), answers };
}

/**
 * Every certificate the verifier asks OCSP about: device-chain [1]..[3] (the leaf and the pinned
 * root are not checked, as NVIDIA does not), and each RIM signing chain below its root. The
 * revoked fault revokes the GPU's own identity (BROM), the certificate a stolen key would lose.
 */
function ocspTargets(
  pki: TestbedPki,
  brom: OcspTarget,
): { label: string; target: OcspTarget; issuer: Signer; responder: Signer; revocable: boolean }[] {
  const { root, identity, provisioner } = pki.device;
  const { root: rimRoot, l2, l3, driverSigner, vbiosSigner } = pki.rim;
  const pairs: [string, OcspTarget, Authority, boolean][] = [
    ["device-chain-1", brom, provisioner, true],
    ["device-chain-2", provisioner, identity, false],
    ["device-chain-3", identity, root, false],
    ["rim-driver-l4", driverSigner, l3, false],
    ["rim-vbios-l4", vbiosSigner, l3, false],
    ["rim-l3", l3, l2, false],
    ["rim-l2", l2, rimRoot, false],
  ];
  return pairs.map(([label, target, issuer, revocable]) => {
    if (issuer.responder === undefined) throw new Error(`testbed CA for ${label} has no OCSP responder`);
    return { label, target, issuer, responder: issuer.responder, revocable };
  });
}

/** The verifier input for minted devices (one challenge: their nonces and times must agree). */
export function testbedVerificationInput(
  minted: MintedEvidence | MintedEvidence[],
  anchors: TrustAnchors,
): LocalVerificationInput {
  const all = Array.isArray(minted) ? minted : [minted];
  const first = all[0];
  if (first === undefined) throw new Error("no minted evidence given");
  return {
    devices: all.map((m) => m.device),
    expectedNonce: first.expectedNonce,
    collectedAt: first.collectedAt,
    anchors,
  };
}
