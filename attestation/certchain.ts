/**
 * X.509 chains for device identity and RIM signing. Signatures and issuance are checked with
 * node:crypto (OpenSSL); extensions are decoded with @peculiar/asn1-x509. Validity periods are
 * recorded, not judged: the policy judges them at the evaluation time it is given.
 */
import { createHash, X509Certificate } from "node:crypto";
import { AsnConvert } from "@peculiar/asn1-schema";
import { BasicConstraints, Certificate, id_ce_basicConstraints } from "@peculiar/asn1-x509";
import * as asn1js from "asn1js";
import { EvidenceParseError } from "./errors.ts";

/** Hopper: SEQUENCE { INTEGER, SubjectPublicKeyInfo, SEQUENCE { sha384, OCTET STRING(48) } }. */
export const OID_FWID_HOPPER = "2.23.133.5.4.1";
/** Blackwell and later: TCG DICE TcbInfo, fwids in [6]. */
export const OID_TCB_INFO = "2.23.133.5.4.1.1";
const FWID_LENGTH = 48;

const PEM_BLOCK = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

export function parseCertificate(pemOrDer: string | Uint8Array, what: string): X509Certificate {
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(typeof pemOrDer === "string" ? pemOrDer : Buffer.from(pemOrDer));
  } catch (cause) {
    throw new EvidenceParseError(what, "not a PEM or DER X.509 certificate", undefined, { cause });
  }
  // OpenSSL accepts some validity fields it cannot read as a time: it prints them as "Bad time
  // value", and Node then gives validFromDate/validToDate as an Invalid Date or an arbitrary one
  // (which made every later toISOString() throw, or judged the certificate against a random
  // date). Such a certificate is malformed evidence.
  if (!readableTime(cert.validFrom, cert.validFromDate) || !readableTime(cert.validTo, cert.validToDate)) {
    throw new EvidenceParseError(
      what,
      `its validity period (${cert.validFrom} .. ${cert.validTo}) is not a readable time`,
    );
  }
  return cert;
}

/** The time OpenSSL printed, as JavaScript reads it, is the Date Node gives (to the second). */
function readableTime(printed: string, date: Date): boolean {
  const parsed = Date.parse(printed);
  return !Number.isNaN(parsed) && !Number.isNaN(date.getTime()) && Math.abs(parsed - date.getTime()) < 1000;
}

/** PEM certificates concatenated, leaf first (how NVIDIA's tools write device chains). */
export function parsePemChain(text: string, what: string): X509Certificate[] {
  const blocks = text.match(PEM_BLOCK) ?? [];
  if (blocks.length === 0) throw new EvidenceParseError(what, "no PEM certificate found");
  return blocks.map((block, i) => parseCertificate(block, `${what} certificate ${i}`));
}

export interface CertSummary {
  /** 0 = leaf. */
  position: number;
  subject: string;
  issuer: string;
  serial: string;
  notBefore: string;
  notAfter: string;
  sha256: string;
}

export interface ChainCheck {
  /** The path actually verified: presented certificates, then the pinned root. */
  path: X509Certificate[];
  certs: CertSummary[];
  /** Empty when every link verified. */
  problems: string[];
}

export const commonName = (cert: X509Certificate): string =>
  /(?:^|\n)CN=([^\n]*)/.exec(cert.subject)?.[1] ?? cert.subject.replace(/\n/g, ", ");

export function summarise(cert: X509Certificate, position: number): CertSummary {
  return {
    position,
    subject: commonName(cert),
    issuer: /(?:^|\n)CN=([^\n]*)/.exec(cert.issuer)?.[1] ?? cert.issuer.replace(/\n/g, ", "),
    serial: cert.serialNumber.toUpperCase(),
    notBefore: cert.validFromDate.toISOString(),
    notAfter: cert.validToDate.toISOString(),
    sha256: createHash("sha256").update(cert.raw).digest("hex"),
  };
}

export const isSelfSigned = (cert: X509Certificate): boolean => {
  try {
    return cert.checkIssued(cert) && cert.verify(cert.publicKey);
  } catch {
    return false;
  }
};

function isCa(cert: X509Certificate): boolean {
  try {
    const ext = AsnConvert.parse(cert.raw, Certificate).tbsCertificate.extensions?.find(
      (e) => e.extnID === id_ce_basicConstraints,
    );
    return ext !== undefined && AsnConvert.parse(ext.extnValue, BasicConstraints).cA;
  } catch {
    return false;
  }
}

export interface ChainOptions {
  label: string;
  /** Device chains have exactly 5 certificates (NVIDIA rejects any other count). */
  exactLength?: number;
  /**
   * RIMs embed a root that NVIDIA ignores in favour of the pinned one; a device chain's root must
   * be the pinned root byte for byte.
   */
  ignorePresentedRoot: boolean;
}

/**
 * The path verifyChain checks: the presented certificates less a last one that is self-signed (a
 * root that came with the evidence), then the pinned root. Nothing along it is verified.
 * `pinnedRootSelfSigned` spares a signature check for the usual last certificate, the pinned root
 * itself.
 */
export function chainPath(
  presented: readonly X509Certificate[],
  pinnedRoot: X509Certificate,
  pinnedRootSelfSigned?: boolean,
): X509Certificate[] {
  const last = presented.at(-1);
  const rootCame =
    last !== undefined &&
    (Buffer.from(last.raw).equals(pinnedRoot.raw)
      ? (pinnedRootSelfSigned ?? isSelfSigned(last))
      : isSelfSigned(last));
  return [...(rootCame ? presented.slice(0, -1) : presented), pinnedRoot];
}

/** Verifies each link up to `pinnedRoot`; never trusts a root that merely came with the evidence. */
export function verifyChain(
  presented: X509Certificate[],
  pinnedRoot: X509Certificate,
  options: ChainOptions,
): ChainCheck {
  const problems: string[] = [];
  const { label } = options;
  if (options.exactLength !== undefined && presented.length !== options.exactLength) {
    problems.push(
      `${label} has ${presented.length} certificates, expected ${options.exactLength} (leaf first, root last)`,
    );
  }
  const path = chainPath(presented, pinnedRoot);
  const chain = path.slice(0, -1);
  const last = presented.at(-1);
  if (last !== undefined && chain.length < presented.length) {
    if (!options.ignorePresentedRoot && !Buffer.from(last.raw).equals(pinnedRoot.raw)) {
      problems.push(
        `${label} ends in root "${commonName(last)}" (sha256 ${summarise(last, 0).sha256}), which is not the pinned root "${commonName(pinnedRoot)}"`,
      );
    }
  }
  if (chain.length === 0) problems.push(`${label} holds no certificate below the root`);
  for (let i = 0; i < path.length; i++) {
    const cert = path[i] as X509Certificate;
    const issuer = path[i + 1] ?? cert;
    const where = `${label}[${i}] "${commonName(cert)}"`;
    let signed = false;
    try {
      signed = cert.checkIssued(issuer) && cert.verify(issuer.publicKey);
    } catch {
      signed = false;
    }
    if (!signed) {
      problems.push(
        i + 1 < path.length
          ? `${where} is not issued and signed by "${commonName(issuer)}"; a certificate is missing, out of order or forged`
          : `${where}: the pinned root is not self-signed`,
      );
    }
    if (i > 0 && !isCa(cert))
      problems.push(`${where} issues certificates but is not a CA (basicConstraints)`);
  }
  return { path, certs: path.map(summarise), problems };
}

/** The firmware id NVIDIA binds into the attestation key's certificate; undefined if the extension is absent. */
export function extractFwid(leaf: X509Certificate): Uint8Array | undefined {
  let extensions: { extnID: string; extnValue: { buffer: ArrayBuffer } }[] | undefined;
  try {
    extensions = AsnConvert.parse(leaf.raw, Certificate).tbsCertificate.extensions;
  } catch {
    return undefined;
  }
  const hopper = extensions?.find((e) => e.extnID === OID_FWID_HOPPER);
  if (hopper !== undefined) {
    const value = new Uint8Array(hopper.extnValue.buffer);
    return value.length >= FWID_LENGTH ? value.slice(value.length - FWID_LENGTH) : undefined;
  }
  const tcb = extensions?.find((e) => e.extnID === OID_TCB_INFO);
  return tcb === undefined ? undefined : firstTcbFwid(new Uint8Array(tcb.extnValue.buffer));
}

function firstTcbFwid(der: Uint8Array): Uint8Array | undefined {
  const parsed = asn1js.fromBER(der);
  if (parsed.offset === -1) return undefined;
  const fields = (parsed.result.valueBlock as { value?: asn1js.AsnType[] }).value ?? [];
  const fwids = fields.find((f) => f.idBlock.tagClass === 3 && f.idBlock.tagNumber === 6);
  const first = (fwids?.valueBlock as { value?: asn1js.AsnType[] } | undefined)?.value?.[0];
  const digest = (first?.valueBlock as { value?: asn1js.AsnType[] } | undefined)?.value?.[1];
  if (!(digest instanceof asn1js.OctetString)) return undefined;
  return new Uint8Array(digest.valueBlock.valueHexView);
}
