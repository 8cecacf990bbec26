/**
 * NVIDIA GPU / NVSwitch attestation report: an SPDM 1.1 GET_MEASUREMENTS request (37 bytes)
 * followed by the MEASUREMENTS response, whose opaque data carries NVIDIA's TLV fields.
 * Hand-rolled because no library knows NVIDIA's layout; every read is bounds-checked and the
 * only error thrown is EvidenceParseError.
 */
import { ByteReader, toHex } from "./bytes.ts";
import { EvidenceParseError } from "./errors.ts";

const WHAT = "attestation report";
export const SPDM_GET_MEASUREMENTS = 0xe0;
export const SPDM_MEASUREMENTS = 0x60;
export const REQUEST_LENGTH = 37;
export const NONCE_LENGTH = 32;
/** ECDSA P-384 as raw r‖s. */
export const SIGNATURE_LENGTH = 96;
const DMTF_MEASUREMENT_SPECIFICATION = 0x01;

export interface SpdmRequest {
  version: number;
  requestCode: number;
  param1: number;
  param2: number;
  nonce: Uint8Array;
  slotId: number;
}

export interface MeasurementBlock {
  /** 1-based, as on the wire; RIM index i is block i+1. */
  index: number;
  valueType: number;
  value: Uint8Array;
}

/** Opaque-data field numbers (nvtrust OPAQUE_DATA_TYPES / attestation-sdk opaque data parsers). */
export const OpaqueFieldType = {
  CERT_ISSUER_NAME: 1,
  CERT_AUTHORITY_KEY_IDENTIFIER: 2,
  DRIVER_VERSION: 3,
  GPU_INFO: 4,
  SKU: 5,
  VBIOS_VERSION: 6,
  MANUFACTURER_ID: 7,
  TAMPER_DETECTION: 8,
  SMC: 9,
  VPR: 10,
  NVDEC0_STATUS: 11,
  MSRSCNT: 12,
  CPRINFO: 13,
  BOARD_ID: 14,
  CHIP_SKU: 15,
  CHIP_SKU_MOD: 16,
  PROJECT: 17,
  PROJECT_SKU: 18,
  PROJECT_SKU_MOD: 19,
  FWID: 20,
  PROTECTED_PCIE_STATUS: 21,
  SWITCH_PDI: 22,
  FLOORSWEPT_PORTS: 23,
  POSITION_ID: 24,
  LOCK_SWITCH_STATUS: 25,
  SWITCH_GPU_PDIS: 26,
  GPU_LINK_CONN: 32,
  SYS_ENABLE_STATUS: 33,
  OPAQUE_DATA_VERSION: 34,
  CHIP_INFO: 35,
  FEATURE_FLAG: 36,
} as const;

const OPAQUE_NAMES = new Map<number, string>(Object.entries(OpaqueFieldType).map(([name, n]) => [n, name]));

export interface OpaqueField {
  type: number;
  name: string;
  value: Uint8Array;
}

/** The NVIDIA fields a verifier and a policy need, decoded; absent fields stay undefined. */
export interface NvidiaOpaqueData {
  fields: OpaqueField[];
  driverVersion?: string;
  /** Dotted, upper-case hex, e.g. 96.00.9F.00.01 (what RIMs and policies use). */
  vbiosVersion?: string;
  project?: string;
  projectSku?: string;
  projectSkuMod?: string;
  chipSku?: string;
  chipSkuMod?: string;
  chipInfo?: string;
  boardId?: number;
  fwid?: Uint8Array;
  /** 0xAA enabled, 0x55 disabled. */
  nvdec0Status?: number;
  /** 0xAA protected PCIe (multi-GPU CC), 0x55 not. */
  protectedPcieStatus?: number;
  /** 0 single-GPU pass-through, 1 multi-GPU pass-through, 2 protected PCIe. */
  featureFlag?: number;
  opaqueDataVersion?: number;
  measurementCounts?: number[];
}

export interface SpdmMeasurementsResponse {
  version: number;
  responseCode: number;
  param1: number;
  param2: number;
  blocks: MeasurementBlock[];
  responderNonce: Uint8Array;
  opaque: NvidiaOpaqueData;
}

export interface AttestationReport {
  request: SpdmRequest;
  response: SpdmMeasurementsResponse;
  /** request ‖ response up to the signature: exactly what the device signed (SHA-384, ECDSA P-384). */
  signedBytes: Uint8Array;
  signature: Uint8Array;
  /** Zero bytes found after the signature (some captures carry one); not signed, reported for audit. */
  trailingZeroBytes: number;
}

export function parseSpdmRequest(bytes: Uint8Array): SpdmRequest {
  const r = new ByteReader(bytes, "SPDM GET_MEASUREMENTS request");
  const version = r.u8("SPDMVersion");
  const requestCode = r.u8("RequestResponseCode");
  if (requestCode !== SPDM_GET_MEASUREMENTS) {
    throw new EvidenceParseError(
      r.what,
      `request code is 0x${requestCode.toString(16)}, expected 0xe0 (GET_MEASUREMENTS); is this an NVIDIA attestation report?`,
      1,
    );
  }
  const param1 = r.u8("Param1");
  const param2 = r.u8("Param2");
  if ((param1 & 0x01) === 0) {
    throw new EvidenceParseError(
      r.what,
      "Param1 does not request a signature, so the response is unsigned",
      2,
    );
  }
  const nonce = r.take(NONCE_LENGTH, "requester nonce");
  const slotId = r.u8("SlotIDParam");
  return { version, requestCode, param1, param2, nonce, slotId };
}

function parseMeasurementRecord(record: Uint8Array, count: number, base: number): MeasurementBlock[] {
  const r = new ByteReader(record, WHAT);
  const blocks: MeasurementBlock[] = [];
  const seen = new Set<number>();
  for (let i = 0; i < count; i++) {
    const at = base + r.offset;
    const index = r.u8("measurement block Index");
    const spec = r.u8("MeasurementSpecification");
    if (spec !== DMTF_MEASUREMENT_SPECIFICATION) {
      throw new EvidenceParseError(
        WHAT,
        `measurement block ${index} uses specification ${spec}, not DMTF (1)`,
        at,
      );
    }
    const size = r.u16("MeasurementSize");
    const body = new ByteReader(r.take(size, "measurement"), WHAT);
    const valueType = body.u8("DMTFSpecMeasurementValueType");
    const valueSize = body.u16("DMTFSpecMeasurementValueSize");
    const value = body.take(valueSize, "DMTFSpecMeasurementValue");
    if (body.remaining !== 0) {
      throw new EvidenceParseError(
        WHAT,
        `measurement block ${index} has ${body.remaining} bytes after its value`,
        at,
      );
    }
    if (index === 0 || seen.has(index)) {
      throw new EvidenceParseError(WHAT, `measurement block index ${index} is zero or repeated`, at);
    }
    seen.add(index);
    blocks.push({ index, valueType, value: value.slice() });
  }
  if (r.remaining !== 0) {
    throw new EvidenceParseError(
      WHAT,
      `MeasurementRecordLength leaves ${r.remaining} bytes after ${count} blocks; the length or the block count lies`,
      base + r.offset,
    );
  }
  return blocks;
}

function asciiField(field: OpaqueField, offset: number): string {
  const end = field.value.indexOf(0);
  const text = field.value.subarray(0, end === -1 ? field.value.length : end);
  if (!text.every((b) => b >= 0x20 && b < 0x7f)) {
    throw new EvidenceParseError(WHAT, `opaque field ${field.name} is not printable ASCII`, offset);
  }
  return Buffer.from(text).toString("latin1");
}

function littleEndian(field: OpaqueField, offset: number, maxBytes: number): number {
  if (field.value.length === 0 || field.value.length > maxBytes) {
    throw new EvidenceParseError(WHAT, `opaque field ${field.name} has ${field.value.length} bytes`, offset);
  }
  return field.value.reduceRight((acc, b) => acc * 256 + b, 0);
}

/**
 * GPU VBIOS versions arrive as a little-endian 64-bit number whose hex digits, regrouped, give the
 * dotted version (nvtrust format_vbios_version); NVSwitch BIOS versions arrive as plain ASCII.
 */
export function formatVbiosVersion(value: Uint8Array): string {
  const printable = value.length > 0 && value.every((b) => (b >= 0x20 && b < 0x7f) || b === 0);
  if (value.length === 8 && !printable) {
    const v = Buffer.from(value).reverse().toString("hex");
    return [v.slice(8, 10), v.slice(10, 12), v.slice(12, 14), v.slice(14, 16), v.slice(6, 8)]
      .join(".")
      .toUpperCase();
  }
  const end = value.indexOf(0);
  return Buffer.from(value.subarray(0, end === -1 ? value.length : end))
    .toString("latin1")
    .toUpperCase();
}

export function parseOpaqueData(bytes: Uint8Array, base = 0): NvidiaOpaqueData {
  const r = new ByteReader(bytes, WHAT);
  const out: NvidiaOpaqueData = { fields: [] };
  const seen = new Set<number>();
  while (r.remaining > 0) {
    const at = base + r.offset;
    const type = r.u16("opaque field type");
    const length = r.u16("opaque field length");
    const value = r.take(length, "opaque field value").slice();
    const name = OPAQUE_NAMES.get(type);
    if (name === undefined) {
      // NVIDIA's own Python parser fails on unknown types; a field we cannot name is one we cannot judge.
      throw new EvidenceParseError(
        WHAT,
        `unknown opaque field type ${type}; update the parser if NVIDIA added it`,
        at,
      );
    }
    if (seen.has(type)) {
      throw new EvidenceParseError(WHAT, `opaque field ${name} appears twice`, at);
    }
    seen.add(type);
    const field: OpaqueField = { type, name, value };
    out.fields.push(field);
    switch (type) {
      case OpaqueFieldType.DRIVER_VERSION:
        out.driverVersion = asciiField(field, at);
        break;
      case OpaqueFieldType.VBIOS_VERSION:
        out.vbiosVersion = formatVbiosVersion(value);
        break;
      case OpaqueFieldType.PROJECT:
        out.project = asciiField(field, at);
        break;
      case OpaqueFieldType.PROJECT_SKU:
        out.projectSku = asciiField(field, at);
        break;
      case OpaqueFieldType.PROJECT_SKU_MOD:
        out.projectSkuMod = asciiField(field, at);
        break;
      case OpaqueFieldType.CHIP_SKU:
        out.chipSku = asciiField(field, at);
        break;
      case OpaqueFieldType.CHIP_SKU_MOD:
        out.chipSkuMod = asciiField(field, at);
        break;
      case OpaqueFieldType.CHIP_INFO:
        out.chipInfo = asciiField(field, at);
        break;
      case OpaqueFieldType.BOARD_ID:
        out.boardId = littleEndian(field, at, 4);
        break;
      case OpaqueFieldType.FWID:
        out.fwid = value;
        break;
      case OpaqueFieldType.NVDEC0_STATUS:
        out.nvdec0Status = littleEndian(field, at, 1);
        break;
      case OpaqueFieldType.PROTECTED_PCIE_STATUS:
        out.protectedPcieStatus = littleEndian(field, at, 1);
        break;
      case OpaqueFieldType.FEATURE_FLAG:
        out.featureFlag = littleEndian(field, at, 4);
        break;
      case OpaqueFieldType.OPAQUE_DATA_VERSION:
        out.opaqueDataVersion = littleEndian(field, at, 4);
        break;
      case OpaqueFieldType.MSRSCNT: {
        if (length % 4 !== 0) {
          throw new EvidenceParseError(WHAT, `MSRSCNT length ${length} is not a multiple of 4`, at);
        }
        const view = new DataView(value.buffer, value.byteOffset, value.byteLength);
        out.measurementCounts = Array.from({ length: length / 4 }, (_, i) => view.getUint32(i * 4, true));
        break;
      }
    }
  }
  return out;
}

/** Parses `request ‖ response` as NVIDIA's tools capture it (raw bytes; see parseReportText for hex). */
export function parseAttestationReport(bytes: Uint8Array): AttestationReport {
  if (bytes.length < REQUEST_LENGTH) {
    throw new EvidenceParseError(WHAT, `${bytes.length} bytes is shorter than the 37-byte request`, 0);
  }
  const request = parseSpdmRequest(bytes.subarray(0, REQUEST_LENGTH));
  const r = new ByteReader(bytes, WHAT, REQUEST_LENGTH);
  const version = r.u8("response SPDMVersion");
  const responseCode = r.u8("response code");
  if (responseCode !== SPDM_MEASUREMENTS) {
    throw new EvidenceParseError(
      WHAT,
      `response code 0x${responseCode.toString(16)} is not MEASUREMENTS (0x60)`,
      38,
    );
  }
  if (version !== request.version) {
    throw new EvidenceParseError(
      WHAT,
      `response SPDM version ${version} differs from request ${request.version}`,
      37,
    );
  }
  const param1 = r.u8("response Param1");
  const param2 = r.u8("response Param2");
  const count = r.u8("NumberOfBlocks");
  const recordLength = r.u24("MeasurementRecordLength");
  const recordBase = r.offset;
  const blocks = parseMeasurementRecord(r.take(recordLength, "measurement record"), count, recordBase);
  const responderNonce = r.take(NONCE_LENGTH, "responder nonce").slice();
  const opaqueLength = r.u16("OpaqueLength");
  const opaqueBase = r.offset;
  const opaque = parseOpaqueData(r.take(opaqueLength, "opaque data"), opaqueBase);
  const signedEnd = r.offset;
  const signature = r.take(SIGNATURE_LENGTH, "signature").slice();
  const trailing = bytes.subarray(r.offset);
  if (!trailing.every((b) => b === 0)) {
    // Zero padding appears in real captures; anything else is unsigned data someone appended.
    throw new EvidenceParseError(
      WHAT,
      `${trailing.length} unsigned non-zero bytes follow the signature`,
      r.offset,
    );
  }
  return {
    request: { ...request, nonce: request.nonce.slice() },
    response: { version, responseCode, param1, param2, blocks, responderNonce, opaque },
    signedBytes: bytes.slice(0, signedEnd),
    signature,
    trailingZeroBytes: trailing.length,
  };
}

/** Reports are usually shipped as one line of hex. */
export function parseReportText(text: string): AttestationReport {
  const clean = text.trim();
  if (clean.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(clean)) {
    throw new EvidenceParseError(WHAT, "expected the report as hex digits only (even length, no separators)");
  }
  return parseAttestationReport(new Uint8Array(Buffer.from(clean, "hex")));
}

export const reportNonceHex = (report: AttestationReport): string => toHex(report.request.nonce);
