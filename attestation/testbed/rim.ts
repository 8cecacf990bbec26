/**
 * Writes Reference Integrity Manifests the way NVIDIA's RIM service serves them: a SWID tag
 * (ISO/IEC 19770-2:2015 with TCG RIM-IM attributes) with 64 Measurement resources, and an
 * enveloped XML-DSig (C14N 1.1, ECDSA-SHA384, one Reference URI="", KeyInfo certificates leaf
 * first, root last). Signed with xmldsigjs, the library the verifier checks them with.
 */
import { webcrypto } from "node:crypto";
import { DOMImplementation, DOMParser, XMLSerializer } from "@xmldom/xmldom";
import { setNodeDependencies } from "xml-core";
import * as xmldsig from "xmldsigjs";
import xpath from "xpath";
import { type Signer, TESTBED_ORGANIZATION } from "./pki.ts";

const SWID_NS = "http://standards.iso.org/iso/19770/-2/2015/schema.xsd";
const SHA384_NS = "http://www.w3.org/2001/04/xmlenc#sha384";
const TCG_RIM_NS =
  "https://trustedcomputinggroup.org/resource/tcg-reference-integrity-manifest-rim-information-model/";
const C14N11 = "http://www.w3.org/2006/12/xml-c14n11";
const SHA384_DIGEST = "http://www.w3.org/2001/04/xmldsig-more#sha384";
const ZERO_HASH = "0".repeat(96);

let configured = false;
function configureXmlDsig(): void {
  if (configured) return;
  // The same global settings rim.ts (the verifier) makes; whichever runs first, the result is identical.
  setNodeDependencies({ DOMParser, XMLSerializer, DOMImplementation, xpath });
  xmldsig.Application.setEngine("NodeJS", webcrypto as unknown as Crypto);
  xmldsig.CryptoConfig.RegisterTransform(C14N11, xmldsig.XmlDsigC14NTransform);
  configured = true;
}

export interface RimContent {
  /** SoftwareIdentity name and Meta product, e.g. GH100. */
  chip: string;
  /** Meta colloquialVersion: the driver version or the dotted VBIOS version. */
  version: string;
  /** Active indices (0-based) and their allowed values, lower-case hex; all others are inactive. */
  golden: Map<number, string[]>;
  /** 64 for GPUs. */
  resources: number;
}

const escapeAttr = (text: string) =>
  text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/"/g, "&quot;").replace(/>/g, "&gt;");

/** The unsigned tag, formatted like NVIDIA's files (4-space indent, prefixes ns0/ns1/ns2). */
export function rimXml(content: RimContent, tagId: string): string {
  const lines = [
    `<SoftwareIdentity xmlns="${SWID_NS}" xmlns:ns0="${SWID_NS}" xmlns:ns2="${SHA384_NS}" corpus="false" name="${escapeAttr(content.chip)}" patch="false" supplemental="false" tagId="${tagId}" version="1.0" tagVersion="0">`,
    `    <ns0:Entity name="${TESTBED_ORGANIZATION}" role="softwareCreator tagCreator"/>`,
    `    <ns0:Meta xmlns:ns1="${TCG_RIM_NS}" colloquialVersion="${escapeAttr(content.version)}" edition="GPU" product="${escapeAttr(content.chip)}" revision="r1" PayloadType="direct" ns1:BindingSpec="RIMIM" ns1:BindingSpecVersion="1.01" ns1:PlatformManufacturerId="5703" ns1:PlatformManufacturerStr="NVIDIA Corporation" ns1:PlatformModel="${escapeAttr(content.chip)}" ns1:FirmwareManufacturer="NVIDIA Corporation" ns1:FirmwareManufacturerId="5703"/>`,
    `    <ns0:Payload xmlns:SHA384="${SHA384_NS}">`,
  ];
  for (let index = 0; index < content.resources; index++) {
    const alternatives = content.golden.get(index);
    const hashes = (alternatives ?? [ZERO_HASH]).map((h, k) => `ns2:Hash${k}="${h}"`).join(" ");
    lines.push(
      `        <ns0:Resource type="Measurement" index="${index}" active="${alternatives ? "True" : "False"}" alternatives="${alternatives?.length ?? 1}" ${hashes} name="Measurement_${index}" size="48"/>`,
    );
  }
  lines.push("    </ns0:Payload>", "</SoftwareIdentity>");
  return lines.join("\n");
}

/**
 * Signs `xml` with `signer` and appends the signature as the root's last child, carrying
 * `chain` (signer first, root last) in one X509Data as NVIDIA does.
 */
export async function signRim(xml: string, signer: Signer, chain: Signer[]): Promise<string> {
  configureXmlDsig();
  const document = new DOMParser().parseFromString(xml, "application/xml") as unknown as Document;
  const signed = new xmldsig.SignedXml();
  signed.XmlSignature.SignedInfo.CanonicalizationMethod.Algorithm = C14N11;
  const reference = new xmldsig.Reference();
  // The constructor ignores an empty URI; NVIDIA signs the whole document with URI="".
  reference.Uri = "";
  reference.DigestMethod.Algorithm = SHA384_DIGEST;
  const c14n = new xmldsig.XmlDsigC14NTransform();
  c14n.Algorithm = C14N11;
  reference.Transforms = new xmldsig.Transforms();
  reference.Transforms.Add(new xmldsig.XmlDsigEnvelopedSignatureTransform());
  reference.Transforms.Add(c14n);
  signed.XmlSignature.SignedInfo.References.Add(reference);
  const x509Data = new xmldsig.KeyInfoX509Data();
  for (const cert of chain)
    x509Data.AddCertificate(new xmldsig.X509Certificate(new Uint8Array(cert.cert.der)));
  signed.XmlSignature.KeyInfo.Add(x509Data);
  const key = signer.key.privateKey.toCryptoKey({ name: "ECDSA", namedCurve: "P-384" }, false, ["sign"]);
  await signed.Sign(
    { name: "ECDSA", hash: { name: "SHA-384" } } as Algorithm,
    key as unknown as CryptoKey,
    document,
  );
  const signature = new XMLSerializer().serializeToString(
    signed.GetXml() as unknown as Parameters<XMLSerializer["serializeToString"]>[0],
  );
  // The enveloped transform drops exactly this element, so the digest computed over `xml` holds.
  return xml.replace(/<\/SoftwareIdentity>$/, `${wrapCertificates(signature)}</SoftwareIdentity>`);
}

/**
 * The certificates' base64 as NVIDIA's RIMs carry it: 64-character lines, each ending in a
 * newline. KeyInfo is outside what the signature covers, so this changes no digest, but
 * NVIDIA's verifier turns the text into PEM by appending "-----END CERTIFICATE-----" to it
 * and refuses certificates written on one line (found by test/attestation/nvidia-differential.test.ts).
 */
function wrapCertificates(signature: string): string {
  return signature.replace(
    /<((?:\w+:)?X509Certificate)>([A-Za-z0-9+/=\s]+)<\/\1>/g,
    (_whole, tag: string, b64: string) =>
      `<${tag}>${(b64.replace(/\s+/g, "").match(/.{1,64}/g) ?? []).map((line) => `${line}\n`).join("")}</${tag}>`,
  );
}
