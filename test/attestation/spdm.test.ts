import test from "ava";
import fc from "fast-check";
import { toHex } from "../../attestation/bytes.ts";
import { EvidenceParseError, isEvidenceParseError } from "../../attestation/errors.ts";
import {
  formatVbiosVersion,
  parseAttestationReport,
  parseOpaqueData,
  parseReportText,
} from "../../attestation/spdm.ts";
import { NONCE_931D, vector, vectorBytes, vectorsPresent, vectorTest } from "./vectors.ts";

const SET_A = "nvtrust/gpu-h100-550.90.07/hopperAttestationReport.txt";

vectorTest("SET A: request, measurements and NVIDIA opaque fields", (t) => {
  const report = parseReportText(vector(SET_A));
  t.is(toHex(report.request.nonce), NONCE_931D);
  t.is(report.request.version, 0x11);
  t.is(report.response.blocks.length, 64);
  t.is(report.response.blocks.filter((b) => b.value.some((x) => x !== 0)).length, 26);
  const o = report.response.opaque;
  t.like(o, {
    driverVersion: "550.90.07",
    vbiosVersion: "96.00.9F.00.01",
    project: "1010",
    projectSku: "0200",
    chipSku: "882",
    boardId: 0x3b1,
    nvdec0Status: 0x55,
    protectedPcieStatus: 0x55,
  });
  t.is(toHex(o.fwid as Uint8Array).slice(0, 8), "f5c384ae");
  t.is(report.signature.length, 96);
  t.is(report.trailingZeroBytes, 0);
  // The binary copy of the same report parses identically.
  const binary = parseAttestationReport(vectorBytes("go-nvattest-tools/test_raw_gpu_attestation_report.dat"));
  t.deepEqual(binary.signedBytes, report.signedBytes);
});

for (const [dir, report, oracle, request] of [
  [
    "gpu-h100-580.159.03",
    "hopperAttestationReport.txt",
    "spdm_parsed_output.json",
    "spdm_req_parsed_output.json",
  ],
  [
    "switch-ls10-96.10.55.00.01",
    "switchAttestationReport.txt",
    "switch_spdm_parsed_output.json",
    "switch_spdm_req_parsed_output.json",
  ],
] as const) {
  vectorTest(`parser agrees with NVIDIA's parsed output for ${dir}`, (t) => {
    const parsed = parseReportText(vector(`attestation-sdk/${dir}/${report}`));
    const want = JSON.parse(vector(`attestation-sdk/${dir}/${oracle}`));
    const wantReq = JSON.parse(vector(`attestation-sdk/${dir}/${request}`));
    t.is(`0x${toHex(parsed.request.nonce)}`, wantReq.Nonce);
    t.is(parsed.request.param2, Number(wantReq.Param2));
    t.is(`0x${toHex(parsed.response.responderNonce)}`, want.Nonce);
    t.is(`0x${toHex(parsed.signature)}`, want.Signature);
    t.is(parsed.response.blocks.length, want.NumberOfBlocks);
    for (const block of parsed.response.blocks) {
      const w = want.MeasurementRecord.MeasurementBlocks[String(block.index)];
      t.is(`0x${toHex(block.value)}`, w.DMTFSpecMeasurementValue, `block ${block.index}`);
      t.is(block.valueType, w.DMTFSpecMeasurementValueType);
    }
    const fields = want.OpaqueData.OpaqueDataField as Record<string, unknown>;
    for (const field of parsed.response.opaque.fields) {
      const w = fields[`OPAQUE_FIELD_ID_${field.name}`];
      if (w === undefined) continue; // NVIDIA's dump omits some fields (e.g. switch PDIs)
      if (field.name === "MSRSCNT") t.deepEqual(parsed.response.opaque.measurementCounts, w, field.name);
      else if (typeof w === "string") t.is(`0x${toHex(field.value)}`, w, field.name);
    }
    t.true(Object.keys(fields).length >= 8);
  });
}

vectorTest(
  "a report with one trailing zero byte parses; the signature is found at its parsed offset",
  (t) => {
    const report = parseReportText(vector("trustee/hopper_coco_report1.txt"));
    t.is(report.trailingZeroBytes, 1);
    t.is(report.response.opaque.vbiosVersion, "96.00.74.00.1A");
  },
);

test("VBIOS versions: GPU binary and NVSwitch ASCII encodings", (t) => {
  t.is(formatVbiosVersion(Uint8Array.from([0x00, 0x9f, 0x00, 0x96, 0x01, 0, 0, 0])), "96.00.9F.00.01");
  t.is(formatVbiosVersion(new Uint8Array(Buffer.from("96.10.55.00.01"))), "96.10.55.00.01");
});

test("unknown or repeated opaque field types are refused with a typed error", (t) => {
  const tlv = (type: number, value: number[]) => [type & 0xff, type >> 8, value.length, 0, ...value];
  const unknown = t.throws(() => parseOpaqueData(Uint8Array.from(tlv(99, [1]))), {
    instanceOf: EvidenceParseError,
  });
  t.regex(unknown.message, /EvidenceMalformed: .*unknown opaque field type 99/);
  t.throws(() => parseOpaqueData(Uint8Array.from([...tlv(11, [0x55]), ...tlv(11, [0xaa])])), {
    message: /appears twice/,
  });
});

/** The only acceptable failure of a parser is its typed error. */
function parsesOrRefuses(bytes: Uint8Array): boolean {
  try {
    parseAttestationReport(bytes);
    return true;
  } catch (e) {
    if (isEvidenceParseError(e)) return true;
    throw e;
  }
}

const seed = (): Uint8Array => parseReportTextBytes(vectorsPresent ? vector(SET_A) : "");
function parseReportTextBytes(hex: string): Uint8Array {
  return new Uint8Array(Buffer.from(hex.trim(), "hex"));
}

test("fuzz: random bytes never throw anything but EvidenceParseError", (t) => {
  fc.assert(fc.property(fc.uint8Array({ maxLength: 5000 }), parsesOrRefuses), { numRuns: 2000 });
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 37, maxLength: 400 }), (tail) =>
      parsesOrRefuses(Uint8Array.from([0x11, 0xe0, 0x01, 0xff, ...new Uint8Array(33), 0x11, 0x60, ...tail])),
    ),
    { numRuns: 2000 },
  );
  t.pass();
});

vectorTest("fuzz: truncations, bit flips and lying lengths of a real report", (t) => {
  const base = seed();
  const start = performance.now();
  fc.assert(
    fc.property(fc.nat({ max: base.length - 1 }), (cut) => {
      t.throws(() => parseAttestationReport(base.subarray(0, cut)), { instanceOf: EvidenceParseError });
      return true;
    }),
    { numRuns: 500 },
  );
  fc.assert(
    fc.property(fc.nat({ max: base.length - 1 }), fc.integer({ min: 0, max: 7 }), (at, bit) => {
      const mutated = base.slice();
      mutated[at] = (mutated[at] as number) ^ (1 << bit);
      return parsesOrRefuses(mutated);
    }),
    { numRuns: 3000 },
  );
  // Length fields: NumberOfBlocks (41), MeasurementRecordLength (42..44), OpaqueLength (37+40+L1).
  const opaqueLengthAt = 37 + 8 + 3520 + 32;
  fc.assert(
    fc.property(
      fc.constantFrom(41, 42, 43, 44, opaqueLengthAt, opaqueLengthAt + 1),
      fc.integer({ min: 0, max: 255 }),
      (at, value) => {
        const mutated = base.slice();
        mutated[at] = value;
        return parsesOrRefuses(mutated);
      },
    ),
    { numRuns: 1000 },
  );
  t.true(performance.now() - start < 60_000, "parsing must never hang");
});
