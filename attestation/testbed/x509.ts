/**
 * A minimal X.509 issuer for the testbed PKI: @peculiar/asn1-x509 for the structures, the
 * deterministic signer of ecdsa.ts for the signatures (ecdsa-with-SHA384, as all of NVIDIA's are).
 */
import { createHash, X509Certificate } from "node:crypto";
import { AsnConvert, OctetString } from "@peculiar/asn1-schema";
import {
  AccessDescription,
  AlgorithmIdentifier,
  AttributeTypeAndValue,
  AttributeValue,
  AuthorityInfoAccessSyntax,
  AuthorityKeyIdentifier,
  BasicConstraints,
  Certificate,
  CRLDistributionPoints,
  DistributionPoint,
  DistributionPointName,
  ExtendedKeyUsage,
  Extension,
  Extensions,
  GeneralName,
  id_ce_authorityKeyIdentifier,
  id_ce_basicConstraints,
  id_ce_cRLDistributionPoints,
  id_ce_extKeyUsage,
  id_ce_keyUsage,
  id_ce_subjectAltName,
  id_ce_subjectKeyIdentifier,
  id_pe_authorityInfoAccess,
  KeyUsage,
  Name,
  OtherName,
  RelativeDistinguishedName,
  SubjectAlternativeName,
  SubjectKeyIdentifier,
  SubjectPublicKeyInfo,
  TBSCertificate,
  Validity,
  Version,
} from "@peculiar/asn1-x509";
import * as asn1js from "asn1js";
import { type P384Key, rawToDer, signP384 } from "./ecdsa.ts";

export const OID_ECDSA_SHA384 = "1.2.840.10045.4.3.3";
const OID_SHA384 = "2.16.840.1.101.3.4.2.2";
const OID_ID_AD_OCSP = "1.3.6.1.5.5.7.48.1";
export const OID_OCSP_NOCHECK = "1.3.6.1.5.5.7.48.1.5";
/** NVIDIA's Hopper FWID extension on the attestation (FMC) leaf. */
export const OID_FWID_HOPPER = "2.23.133.5.4.1";
/** SAN otherName type NVIDIA uses for the device's PDI ("NVIDIA:GH100:<hex>"). */
const OID_NVIDIA_SAN_PDI = "1.3.6.1.4.1.412.274.1";

const ATTRIBUTE = { CN: "2.5.4.3", O: "2.5.4.10", C: "2.5.4.6", serialNumber: "2.5.4.5" } as const;

/** Attributes in the order they appear; C and serialNumber are PrintableString, the rest UTF8String (as NVIDIA encodes them). */
export type NameSpec = [keyof typeof ATTRIBUTE, string][];

export function buildName(spec: NameSpec): Name {
  return new Name(
    spec.map(
      ([attr, value]) =>
        new RelativeDistinguishedName([
          new AttributeTypeAndValue({
            type: ATTRIBUTE[attr],
            value: new AttributeValue(
              attr === "C" || attr === "serialNumber" ? { printableString: value } : { utf8String: value },
            ),
          }),
        ]),
    ),
  );
}

const ext = (extnID: string, critical: boolean, value: unknown): Extension =>
  new Extension({ extnID, critical, extnValue: new OctetString(AsnConvert.serialize(value)) });

/** RFC 5280 §4.2.1.2 method 1: SHA-1 of the subjectPublicKey bits. */
export function keyIdentifier(spki: Uint8Array): Uint8Array {
  const parsed = AsnConvert.parse(spki, SubjectPublicKeyInfo);
  return new Uint8Array(createHash("sha1").update(Buffer.from(parsed.subjectPublicKey)).digest());
}

export const X509Ext = {
  basicConstraints: (ca: boolean, pathLength?: number) =>
    ext(
      id_ce_basicConstraints,
      true,
      new BasicConstraints(
        ca ? { cA: true, ...(pathLength === undefined ? {} : { pathLenConstraint: pathLength }) } : {},
      ),
    ),
  keyUsage: (flags: number) => ext(id_ce_keyUsage, true, new KeyUsage(flags)),
  subjectKeyId: (spki: Uint8Array) =>
    ext(id_ce_subjectKeyIdentifier, false, new SubjectKeyIdentifier(keyIdentifier(spki))),
  authorityKeyId: (issuerSpki: Uint8Array) =>
    ext(
      id_ce_authorityKeyIdentifier,
      false,
      new AuthorityKeyIdentifier({ keyIdentifier: new OctetString(keyIdentifier(issuerSpki)) }),
    ),
  crlDistribution: (uri: string) =>
    ext(
      id_ce_cRLDistributionPoints,
      false,
      new CRLDistributionPoints([
        new DistributionPoint({
          distributionPoint: new DistributionPointName({
            fullName: [new GeneralName({ uniformResourceIdentifier: uri })],
          }),
        }),
      ]),
    ),
  ocspAccess: (uri: string) =>
    ext(
      id_pe_authorityInfoAccess,
      false,
      new AuthorityInfoAccessSyntax([
        new AccessDescription({
          accessMethod: OID_ID_AD_OCSP,
          accessLocation: new GeneralName({ uniformResourceIdentifier: uri }),
        }),
      ]),
    ),
  extendedKeyUsage: (oids: string[]) => ext(id_ce_extKeyUsage, false, new ExtendedKeyUsage(oids)),
  /** id-pkix-ocsp-nocheck: the value is NULL. */
  ocspNoCheck: () =>
    new Extension({
      extnID: OID_OCSP_NOCHECK,
      critical: false,
      extnValue: new OctetString(new asn1js.Null().toBER()),
    }),
  nvidiaPdi: (text: string) =>
    ext(
      id_ce_subjectAltName,
      false,
      new SubjectAlternativeName([
        new GeneralName({
          otherName: new OtherName({
            typeId: OID_NVIDIA_SAN_PDI,
            value: new asn1js.Utf8String({ value: text }).toBER(),
          }),
        }),
      ]),
    ),
  /**
   * Hopper FWID: SEQUENCE { INTEGER 1, SubjectPublicKeyInfo, SEQUENCE { sha384, OCTET STRING(48) } }.
   * NVIDIA puts the issuing BROM key in the SPKI slot; the verifier reads the last 48 bytes.
   */
  hopperFwid: (issuerSpki: Uint8Array, fwid: Uint8Array) =>
    new Extension({
      extnID: OID_FWID_HOPPER,
      critical: false,
      extnValue: new OctetString(
        new asn1js.Sequence({
          value: [
            new asn1js.Integer({ value: 1 }),
            asn1js.fromBER(issuerSpki).result,
            new asn1js.Sequence({
              value: [
                new asn1js.ObjectIdentifier({ value: OID_SHA384 }),
                new asn1js.OctetString({ valueHex: fwid }),
              ],
            }),
          ],
        }).toBER(),
      ),
    }),
};

export interface CertificateRequest {
  subject: NameSpec;
  issuer: NameSpec;
  /** Big-endian, positive (top bit clear). */
  serial: Uint8Array;
  notBefore: Date;
  notAfter: Date;
  subjectSpki: Uint8Array;
  extensions: Extension[];
}

export interface IssuedCertificate {
  der: Uint8Array;
  pem: string;
  x509: X509Certificate;
}

export const toPem = (der: Uint8Array, label = "CERTIFICATE"): string =>
  `-----BEGIN ${label}-----\n${(
    Buffer.from(der)
      .toString("base64")
      .match(/.{1,64}/g) ?? []
  ).join("\n")}\n-----END ${label}-----\n`;

export function issueCertificate(request: CertificateRequest, issuerKey: P384Key): IssuedCertificate {
  const algorithm = new AlgorithmIdentifier({ algorithm: OID_ECDSA_SHA384 });
  const tbs = new TBSCertificate({
    version: Version.v3,
    serialNumber: minimalPositiveInteger(request.serial).buffer as ArrayBuffer,
    signature: algorithm,
    issuer: buildName(request.issuer),
    validity: new Validity({ notBefore: request.notBefore, notAfter: request.notAfter }),
    subject: buildName(request.subject),
    subjectPublicKeyInfo: AsnConvert.parse(request.subjectSpki, SubjectPublicKeyInfo),
    extensions: new Extensions(request.extensions),
  });
  const tbsDer = new Uint8Array(AsnConvert.serialize(tbs));
  const signature = rawToDer(signP384(issuerKey, tbsDer));
  const der = new Uint8Array(
    AsnConvert.serialize(
      new Certificate({
        tbsCertificate: tbs,
        signatureAlgorithm: algorithm,
        signatureValue: signature.slice().buffer,
      }),
    ),
  );
  return { der, pem: toPem(der), x509: new X509Certificate(Buffer.from(der)) };
}

/**
 * DER wants an INTEGER in its shortest form: leading zero bytes go unless the next byte has its
 * top bit set (which would make the value negative). A serial taken from a key identifier with
 * its top bit cleared can start with 0x00; encoded as is, X.509 parsers refuse the certificate.
 */
function minimalPositiveInteger(bytes: Uint8Array): Uint8Array {
  let start = 0;
  while (start < bytes.length - 1 && bytes[start] === 0 && ((bytes[start + 1] as number) & 0x80) === 0)
    start++;
  return bytes.slice(start);
}

/** A positive serial number of `bytes` bytes derived from a label (deterministic like the keys). */
export function serialFrom(label: string, bytes = 16): Uint8Array {
  const serial = new Uint8Array(createHash("sha256").update(label).digest().subarray(0, bytes));
  serial[0] = ((serial[0] as number) & 0x7f) | 0x10;
  return serial;
}
