/**
 * Writes NVIDIA's attestation report layout (the one spdm.ts reads): the 37-byte SPDM 1.1
 * GET_MEASUREMENTS request with our nonce, then the MEASUREMENTS response with 64 DMTF blocks of
 * SHA-384 values, NVIDIA's opaque TLVs, and an ECDSA P-384 r‖s signature over SHA-384(request ‖
 * response-so-far) by the device's attestation key. Field order and lengths copy an H100 report
 * (nvtrust gpu-h100-550.90.07), so a parser that reads real reports reads these.
 */
import { createHash } from "node:crypto";
import {
  formatVbiosVersion,
  OpaqueFieldType,
  REQUEST_LENGTH,
  SPDM_GET_MEASUREMENTS,
  SPDM_MEASUREMENTS,
} from "../spdm.ts";
import { type P384Key, signP384 } from "./ecdsa.ts";
import { TestbedMintError } from "./errors.ts";

const SPDM_VERSION_1_1 = 0x11;
/** Param1 bit 0: the requester asks for a signed response. */
const PARAM1_SIGNATURE_REQUESTED = 0x01;
/** Param2 0xFF: all measurement blocks. */
const PARAM2_ALL_BLOCKS = 0xff;
export const MEASUREMENT_BLOCKS = 64;
const DMTF_SPEC = 0x01;
/** DMTF value type 0x01: digest of mutable firmware (what NVIDIA reports). */
const VALUE_TYPE = 0x01;
const DIGEST_LENGTH = 48;
export const NVDEC0_DISABLED = 0x55;
export const PROTECTED_PCIE_OFF = 0x55;
export const PROTECTED_PCIE_ON = 0xaa;

export interface ReportContent {
  nonce: Uint8Array;
  /** 64 SHA-384 values; index i is SPDM block i+1 (RIM index i). */
  measurements: Uint8Array[];
  responderNonce: Uint8Array;
  driverVersion: string;
  /** Dotted, e.g. 96.00.9F.00.01. */
  vbiosVersion: string;
  project: string;
  projectSku: string;
  chipSku: string;
  boardId: number;
  fwid: Uint8Array;
  protectedPcie: boolean;
}

const u16 = (n: number) => Buffer.from([n & 0xff, (n >> 8) & 0xff]);
const u24 = (n: number) => Buffer.from([n & 0xff, (n >> 8) & 0xff, (n >> 16) & 0xff]);
const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
};
/** NUL-padded ASCII of a fixed width, as NVIDIA pads SKU and project fields. */
const padded = (text: string, width: number) =>
  Buffer.concat([Buffer.from(text, "latin1"), Buffer.alloc(width)]).subarray(0, width);

/**
 * Inverse of spdm.ts formatVbiosVersion: "96.00.9F.00.01" is the little-endian 64-bit number whose
 * 16 hex digits are 000000 01 96 00 9F 00 (last part first, then the first four).
 */
export function encodeVbiosVersion(version: string): Uint8Array {
  const parts = version.toUpperCase().split(".");
  if (parts.length !== 5 || !parts.every((p) => /^[0-9A-F]{2}$/.test(p))) {
    throw new TestbedMintError(
      `VBIOS version "${version}" is not five dotted hex bytes such as 96.00.9F.00.01`,
    );
  }
  const [a, b, c, d, e] = parts as [string, string, string, string, string];
  const bytes = new Uint8Array(Buffer.from(`000000${e}${a}${b}${c}${d}`, "hex").reverse());
  if (formatVbiosVersion(bytes) !== parts.join(".")) {
    // The field is read as ASCII when every byte is printable (NVSwitch style), so such a version cannot round-trip.
    throw new TestbedMintError(
      `VBIOS version "${version}" would read back as "${formatVbiosVersion(bytes)}"; use a real-looking one such as 96.00.9F.00.01`,
    );
  }
  return bytes;
}

const tlv = (type: number, value: Uint8Array) => Buffer.concat([u16(type), u16(value.length), value]);

function opaqueData(c: ReportContent): Buffer {
  const counts = Buffer.concat(c.measurements.map((m) => u32(m.some((b) => b !== 0) ? 1 : 0)));
  return Buffer.concat([
    tlv(OpaqueFieldType.VBIOS_VERSION, encodeVbiosVersion(c.vbiosVersion)),
    tlv(OpaqueFieldType.BOARD_ID, u32(c.boardId)),
    tlv(OpaqueFieldType.CHIP_SKU, padded(c.chipSku, 9)),
    tlv(OpaqueFieldType.CHIP_SKU_MOD, padded("0", 5)),
    tlv(OpaqueFieldType.PROJECT, padded(c.project, 5)),
    tlv(OpaqueFieldType.PROJECT_SKU, padded(c.projectSku, 5)),
    tlv(OpaqueFieldType.PROJECT_SKU_MOD, Buffer.alloc(2)),
    tlv(OpaqueFieldType.DRIVER_VERSION, Buffer.from(`${c.driverVersion}\0`, "latin1")),
    tlv(OpaqueFieldType.GPU_INFO, Buffer.from("8001000000000000", "hex")),
    tlv(OpaqueFieldType.MSRSCNT, counts),
    tlv(OpaqueFieldType.CPRINFO, Buffer.from("00c00100", "hex")),
    tlv(OpaqueFieldType.NVDEC0_STATUS, Buffer.of(NVDEC0_DISABLED)),
    tlv(OpaqueFieldType.FWID, c.fwid),
    tlv(
      OpaqueFieldType.PROTECTED_PCIE_STATUS,
      Buffer.of(c.protectedPcie ? PROTECTED_PCIE_ON : PROTECTED_PCIE_OFF),
    ),
  ]);
}

/** request ‖ response ‖ signature, signed by `attestationKey`. */
export function buildReport(content: ReportContent, attestationKey: P384Key): Uint8Array {
  if (content.nonce.length !== 32) throw new Error(`the nonce must be 32 bytes, got ${content.nonce.length}`);
  if (
    content.measurements.length !== MEASUREMENT_BLOCKS ||
    content.measurements.some((m) => m.length !== DIGEST_LENGTH)
  ) {
    throw new Error(`expected ${MEASUREMENT_BLOCKS} SHA-384 measurements`);
  }
  const request = Buffer.concat([
    Buffer.of(SPDM_VERSION_1_1, SPDM_GET_MEASUREMENTS, PARAM1_SIGNATURE_REQUESTED, PARAM2_ALL_BLOCKS),
    content.nonce,
    Buffer.of(0x00),
  ]);
  if (request.length !== REQUEST_LENGTH) throw new Error("request layout drifted from spdm.ts");
  const record = Buffer.concat(
    content.measurements.map((value, i) =>
      Buffer.concat([
        Buffer.of(i + 1, DMTF_SPEC),
        u16(3 + DIGEST_LENGTH),
        Buffer.of(VALUE_TYPE),
        u16(DIGEST_LENGTH),
        value,
      ]),
    ),
  );
  const opaque = opaqueData(content);
  const signed = Buffer.concat([
    request,
    Buffer.of(SPDM_VERSION_1_1, SPDM_MEASUREMENTS, 0x00, 0x00, MEASUREMENT_BLOCKS),
    u24(record.length),
    record,
    content.responderNonce,
    u16(opaque.length),
    opaque,
  ]);
  return new Uint8Array(Buffer.concat([signed, signP384(attestationKey, signed)]));
}

/** A golden value as the testbed's "firmware" would measure it: stable per component, version and index. */
export const measurementValue = (component: string, version: string, index: number): Uint8Array =>
  new Uint8Array(
    createHash("sha384").update(`sovereign-testbed/measurement/${component}/${version}/${index}`).digest(),
  );
