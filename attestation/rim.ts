/**
 * Reference Integrity Manifests: ISO/IEC 19770-2 SWID tags with TCG RIM attributes, signed with an
 * enveloped XML-DSig (ECDSA P-384). Signatures are checked with xmldsigjs (WebCrypto underneath);
 * the DOM comes from @xmldom/xmldom.
 */
import { webcrypto, type X509Certificate } from "node:crypto";
import { DOMImplementation, DOMParser, XMLSerializer, type Element as XmlElement } from "@xmldom/xmldom";
import { setNodeDependencies } from "xml-core";
import * as xmldsig from "xmldsigjs";
import xpath from "xpath";
import { toHex } from "./bytes.ts";
import { parseCertificate } from "./certchain.ts";
import { AttestationError } from "./errors.ts";
import { Reason } from "./reasons.ts";
import type { AttestationReport } from "./spdm.ts";

const SWID_NS = "http://standards.iso.org/iso/19770/-2/2015/schema.xsd";
const DSIG_NS = "http://www.w3.org/2000/09/xmldsig#";
const SHA384_NS = "http://www.w3.org/2001/04/xmlenc#sha384";
const C14N11 = "http://www.w3.org/2006/12/xml-c14n11";
const ECDSA_SHA384 = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384";
const ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";
/** NVDEC0_STATUS value meaning "disabled": NVIDIA then skips golden index 35. */
const NVDEC0_DISABLED = 0x55;
const NVDEC0_INDEX = 35;

let xmlConfigured = false;
function configureXmlDsig(): void {
  if (xmlConfigured) return;
  setNodeDependencies({ DOMParser, XMLSerializer, DOMImplementation, xpath });
  xmldsig.Application.setEngine("NodeJS", webcrypto as unknown as Crypto);
  // C14N 1.1 differs from 1.0 only in how xml:id / xml:base are inherited into a document subset;
  // NVIDIA signs the whole document (Reference URI=""), where the two produce identical bytes.
  xmldsig.CryptoConfig.RegisterTransform(C14N11, xmldsig.XmlDsigC14NTransform);
  xmlConfigured = true;
}

export interface RimDocument {
  /** Identifier as NVIDIA's RIM service names it, e.g. NV_GPU_DRIVER_GH100_550.90.07. */
  id?: string;
  xml: string;
}

export interface GoldenMeasurement {
  /** 0-based; compared with SPDM block index + 1. */
  index: number;
  active: boolean;
  size: number;
  /** Lower-case hex, Hash0..Hash(alternatives-1). */
  alternatives: string[];
}

export interface ParsedRim {
  id?: string;
  tagId: string;
  /** SoftwareIdentity name: GH100, GB100, LS10. */
  name: string;
  /** Meta colloquialVersion: driver version or dotted VBIOS version. */
  version: string;
  edition: string;
  measurements: GoldenMeasurement[];
  /** KeyInfo certificates, leaf first (the embedded root is ignored in favour of the pinned one). */
  signerChain: X509Certificate[];
  document: Document;
  signature: Element;
}

const malformed = (id: string, message: string, cause?: unknown): AttestationError =>
  new AttestationError(Reason.RimMalformed, `RIM ${id}: ${message}`, { cause });

export function parseRim(input: RimDocument): ParsedRim {
  const label = input.id ?? "(unnamed)";
  if (/<!DOCTYPE/i.test(input.xml))
    throw malformed(label, "has a DOCTYPE; RIMs never do and entities are refused");
  let document: Document;
  try {
    document = new DOMParser({
      onError: (level, message) => {
        if (level !== "warning") throw new Error(message);
      },
    }).parseFromString(input.xml, "application/xml") as unknown as Document;
  } catch (cause) {
    throw malformed(label, "is not well-formed XML", cause);
  }
  const root = document.documentElement;
  if (root?.localName !== "SoftwareIdentity" || root.namespaceURI !== SWID_NS) {
    throw malformed(label, "root element is not a SWID SoftwareIdentity");
  }
  const meta = root.getElementsByTagNameNS(SWID_NS, "Meta")[0];
  const version = meta?.getAttribute("colloquialVersion");
  if (!meta || !version) throw malformed(label, "has no Meta colloquialVersion");
  const measurements: GoldenMeasurement[] = [];
  const seen = new Set<number>();
  for (const resource of Array.from(root.getElementsByTagNameNS(SWID_NS, "Resource"))) {
    if (resource.getAttribute("type") !== "Measurement") continue;
    const index = Number(resource.getAttribute("index"));
    const count = Number(resource.getAttribute("alternatives"));
    const size = Number(resource.getAttribute("size"));
    if (
      !Number.isInteger(index) ||
      index < 0 ||
      !Number.isInteger(count) ||
      count < 1 ||
      !Number.isInteger(size)
    ) {
      throw malformed(
        label,
        `Resource ${resource.getAttribute("name")} has a bad index, alternatives or size`,
      );
    }
    if (seen.has(index)) throw malformed(label, `measurement index ${index} appears twice`);
    seen.add(index);
    const alternatives: string[] = [];
    for (let k = 0; k < count; k++) {
      const value = resource.getAttributeNS(SHA384_NS, `Hash${k}`);
      if (!value || !/^[0-9a-fA-F]+$/.test(value)) throw malformed(label, `index ${index} lacks Hash${k}`);
      alternatives.push(value.toLowerCase());
    }
    measurements.push({ index, active: resource.getAttribute("active") === "True", size, alternatives });
  }
  const signature = Array.from(root.childNodes).find(
    (n): n is Element => (n as Element).localName === "Signature" && (n as Element).namespaceURI === DSIG_NS,
  );
  if (!signature) throw malformed(label, "has no enveloped ds:Signature as a child of the root");
  const signerChain = Array.from(signature.getElementsByTagNameNS(DSIG_NS, "X509Certificate")).map((el, i) =>
    parseCertificate(
      Buffer.from((el.textContent ?? "").replace(/\s+/g, ""), "base64"),
      `RIM ${label} certificate ${i}`,
    ),
  );
  if (signerChain.length === 0) throw malformed(label, "KeyInfo carries no X509Certificate");
  return {
    ...(input.id === undefined ? {} : { id: input.id }),
    tagId: root.getAttribute("tagId") ?? "",
    name: root.getAttribute("name") ?? "",
    version,
    edition: meta.getAttribute("edition") ?? "",
    measurements,
    signerChain,
    document,
    signature,
  };
}

/**
 * Checks the XML signature with the signer certificate's key (the chain is checked separately).
 * Returns a problem description, or undefined when the signature holds.
 */
export async function checkRimSignature(rim: ParsedRim): Promise<string | undefined> {
  configureXmlDsig();
  const signedInfo = rim.signature.getElementsByTagNameNS(DSIG_NS, "SignedInfo")[0];
  const method = signedInfo?.getElementsByTagNameNS(DSIG_NS, "SignatureMethod")[0]?.getAttribute("Algorithm");
  if (method !== ECDSA_SHA384) return `signature method ${method} is not ECDSA-SHA384`;
  const references = Array.from(signedInfo?.getElementsByTagNameNS(DSIG_NS, "Reference") ?? []);
  // One reference to the whole document, so no unsigned element can carry measurements.
  if (references.length !== 1 || references[0]?.getAttribute("URI") !== "") {
    return 'the signature must cover the whole document with exactly one Reference URI=""';
  }
  const transforms = Array.from(references[0]?.getElementsByTagNameNS(DSIG_NS, "Transform") ?? []).map((t) =>
    t.getAttribute("Algorithm"),
  );
  if (!transforms.includes(ENVELOPED)) return "the reference lacks the enveloped-signature transform";
  const leaf = rim.signerChain[0] as X509Certificate;
  try {
    const key = await webcrypto.subtle.importKey(
      "spki",
      leaf.publicKey.export({ type: "spki", format: "der" }),
      { name: "ECDSA", namedCurve: "P-384" },
      true, // xmldsigjs exports the key to match it against KeyInfo
      ["verify"],
    );
    const signed = new xmldsig.SignedXml(rim.document as unknown as Document);
    signed.LoadXml(rim.signature as unknown as XmlElement as unknown as Element);
    // xmldsigjs re-imports the key with the signature method's parameters, which lack the curve.
    signed.Algorithm = { ...signed.Algorithm, namedCurve: "P-384" } as unknown as Algorithm;
    return (await signed.Verify(key as unknown as CryptoKey))
      ? undefined
      : "the signature value does not verify with the signer certificate's key";
  } catch (e) {
    return `the signature does not verify: ${(e as Error).message}`;
  }
}

/** RIM ids NVIDIA's RIM service would serve for this report (nvtrust cc_admin_utils). */
export function expectedRimIds(report: AttestationReport, chip: string): { driver?: string; vbios?: string } {
  const o = report.response.opaque;
  const out: { driver?: string; vbios?: string } = {};
  if (o.driverVersion !== undefined) {
    out.driver = o.chipInfo
      ? `NV_GPU_CC_DRIVER_${o.chipInfo}_${o.driverVersion}`
      : `NV_GPU_DRIVER_${chip}_${o.driverVersion}`;
  }
  if (o.vbiosVersion !== undefined) {
    const v = o.vbiosVersion.replace(/\./g, "").toUpperCase();
    out.vbios =
      o.project === undefined
        ? `NV_SWITCH_BIOS_5612_0002_890_${v}`
        : `NV_GPU_VBIOS_${o.project}_${o.projectSku}_${o.chipSku}_${v}`;
  }
  return out;
}

export type MeasurementOutcome =
  | { index: number; rim: string; status: "match"; alternative: number }
  | { index: number; rim: string; status: "mismatch"; runtime: string; expected: string[] }
  | { index: number; rim: string; status: "missing"; expected: string[] };

export interface MeasurementComparison {
  outcomes: MeasurementOutcome[];
  /** Indices active in more than one RIM (NVIDIA: x-nvidia-gpu-vbios-index-no-conflict). */
  conflicts: number[];
  /** Indices skipped by NVIDIA's rule (NVDEC0 disabled → 35). */
  skipped: number[];
}

/** NVIDIA's rule: each active golden index i must equal one alternative of SPDM block i+1. */
export function compareMeasurements(
  report: AttestationReport,
  rims: { label: string; rim: ParsedRim }[],
): MeasurementComparison {
  const runtime = new Map(report.response.blocks.map((b) => [b.index - 1, b.value]));
  const owner = new Map<number, string>();
  const conflicts = new Set<number>();
  const skipped: number[] = [];
  const outcomes: MeasurementOutcome[] = [];
  for (const { label, rim } of rims) {
    for (const golden of rim.measurements) {
      if (!golden.active) continue;
      if (owner.has(golden.index)) conflicts.add(golden.index);
      owner.set(golden.index, label);
      if (golden.index === NVDEC0_INDEX && report.response.opaque.nvdec0Status === NVDEC0_DISABLED) {
        skipped.push(golden.index);
        continue;
      }
      const value = runtime.get(golden.index);
      if (value === undefined) {
        outcomes.push({ index: golden.index, rim: label, status: "missing", expected: golden.alternatives });
        continue;
      }
      const hex = toHex(value);
      const alternative = value.length === golden.size ? golden.alternatives.indexOf(hex) : -1;
      outcomes.push(
        alternative >= 0
          ? { index: golden.index, rim: label, status: "match", alternative }
          : {
              index: golden.index,
              rim: label,
              status: "mismatch",
              runtime: hex,
              expected: golden.alternatives,
            },
      );
    }
  }
  outcomes.sort((a, b) => a.index - b.index);
  return { outcomes, conflicts: [...conflicts].sort((a, b) => a - b), skipped };
}
