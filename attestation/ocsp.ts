/**
 * OCSP answers supplied offline (cached, stapled or fetched by someone else). Parsed with
 * @peculiar/asn1-ocsp; signatures checked with node:crypto. The answer's freshness is recorded and
 * judged later by the policy at the evaluation time.
 */
import { createHash, verify as verifySignature, X509Certificate } from "node:crypto";
import {
  BasicOCSPResponse,
  id_kp_OCSPSigning,
  id_pkix_ocsp_basic,
  id_pkix_ocsp_nonce,
  OCSPResponse,
  OCSPResponseStatus,
} from "@peculiar/asn1-ocsp";
import { AsnConvert } from "@peculiar/asn1-schema";
import { Certificate } from "@peculiar/asn1-x509";
import { toHex } from "./bytes.ts";
import { commonName, parseCertificate } from "./certchain.ts";
import { EvidenceParseError } from "./errors.ts";

const WHAT = "OCSP response";

const HASHES: Record<string, string> = {
  "1.3.14.3.2.26": "sha1",
  "2.16.840.1.101.3.4.2.1": "sha256",
  "2.16.840.1.101.3.4.2.2": "sha384",
  "2.16.840.1.101.3.4.2.3": "sha512",
};
const SIGNATURE_HASHES: Record<string, string> = {
  "1.2.840.10045.4.3.2": "sha256",
  "1.2.840.10045.4.3.3": "sha384",
  "1.2.840.10045.4.3.4": "sha512",
  "1.2.840.113549.1.1.11": "sha256",
  "1.2.840.113549.1.1.12": "sha384",
  "1.2.840.113549.1.1.13": "sha512",
};
const CRL_REASONS = [
  "unspecified",
  "keyCompromise",
  "cACompromise",
  "affiliationChanged",
  "superseded",
  "cessationOfOperation",
  "certificateHold",
  "unused",
  "removeFromCRL",
  "privilegeWithdrawn",
  "aACompromise",
];

export interface ParsedOcspResponse {
  basic: BasicOCSPResponse;
  tbs: Uint8Array;
  /** The nonce extension's value, if any (hex of the extension's OCTET STRING content). */
  nonce?: string;
}

/** Accepts DER bytes or the base64 text NVIDIA's tools store. */
export function parseOcspResponse(input: Uint8Array | string): ParsedOcspResponse {
  const der = typeof input === "string" ? Buffer.from(input.trim(), "base64") : Buffer.from(input);
  let outer: OCSPResponse;
  let basic: BasicOCSPResponse;
  try {
    outer = AsnConvert.parse(der, OCSPResponse);
  } catch (cause) {
    throw new EvidenceParseError(
      WHAT,
      "not a DER OCSPResponse (base64 text or raw DER expected)",
      undefined,
      { cause },
    );
  }
  if (outer.responseStatus !== OCSPResponseStatus.successful || outer.responseBytes === undefined) {
    throw new EvidenceParseError(WHAT, `responder answered status ${outer.responseStatus}, not successful`);
  }
  if (outer.responseBytes.responseType !== id_pkix_ocsp_basic) {
    throw new EvidenceParseError(
      WHAT,
      `response type ${outer.responseBytes.responseType} is not id-pkix-ocsp-basic`,
    );
  }
  try {
    basic = AsnConvert.parse(outer.responseBytes.response.buffer, BasicOCSPResponse);
  } catch (cause) {
    throw new EvidenceParseError(WHAT, "BasicOCSPResponse does not decode", undefined, { cause });
  }
  if (basic.tbsResponseDataRaw === undefined) throw new EvidenceParseError(WHAT, "response data missing");
  const nonceExt = basic.tbsResponseData.responseExtensions?.find((e) => e.extnID === id_pkix_ocsp_nonce);
  return {
    basic,
    tbs: new Uint8Array(basic.tbsResponseDataRaw),
    ...(nonceExt ? { nonce: toHex(new Uint8Array(nonceExt.extnValue.buffer)) } : {}),
  };
}

export interface OcspAnswer {
  status: "good" | "revoked" | "unknown";
  producedAt: string;
  thisUpdate: string;
  nextUpdate?: string;
  revokedAt?: string;
  revocationReason?: string;
  responder: string;
  responderNotBefore: string;
  responderNotAfter: string;
  /** Whether the response echoes the nonce we sent (false when we sent none or it has none). */
  nonceEchoed: boolean;
}

export type OcspMatch = { kind: "answer"; answer: OcspAnswer } | { kind: "invalid"; problem: string };

/** What a CertID names of an issuer, before hashing: its subject's DER and its public key's bits. */
export interface IssuerIdentity {
  nameDer: Uint8Array;
  keyBits: Uint8Array;
}

export function issuerIdentity(issuer: X509Certificate): IssuerIdentity {
  const issuerAsn = AsnConvert.parse(issuer.raw, Certificate);
  return {
    nameDer: new Uint8Array(AsnConvert.serialize(issuerAsn.tbsCertificate.subject)),
    keyBits: new Uint8Array(issuerAsn.tbsCertificate.subjectPublicKeyInfo.subjectPublicKey),
  };
}

/**
 * The single response about `target` by its CertID alone (RFC 6960 §4.1.1), undefined when the
 * response is about other certificates. Nothing is verified: answerFor checks the signature.
 */
export function certIdMatches(
  parsed: ParsedOcspResponse,
  target: X509Certificate,
  issuer: X509Certificate | IssuerIdentity,
): ParsedOcspResponse["basic"]["tbsResponseData"]["responses"][number] | undefined {
  const { nameDer, keyBits } = issuer instanceof X509Certificate ? issuerIdentity(issuer) : issuer;
  const serial = target.serialNumber.toLowerCase().replace(/^0+/, "");
  return parsed.basic.tbsResponseData.responses.find((single) => {
    const hash = HASHES[single.certID.hashAlgorithm.algorithm];
    if (hash === undefined) return false;
    const singleSerial = toHex(new Uint8Array(single.certID.serialNumber)).replace(/^0+/, "");
    return (
      singleSerial === serial &&
      Buffer.from(single.certID.issuerNameHash.buffer).equals(
        createHash(hash).update(Buffer.from(nameDer)).digest(),
      ) &&
      Buffer.from(single.certID.issuerKeyHash.buffer).equals(
        createHash(hash).update(Buffer.from(keyBits)).digest(),
      )
    );
  });
}

/**
 * The answer this response gives about `target` (issued by `issuer`), undefined when the response
 * is about another certificate. The signer must be the issuer itself or a responder certificate the
 * issuer signed for OCSP (RFC 6960 §4.2.2.2).
 */
export function answerFor(
  parsed: ParsedOcspResponse,
  target: X509Certificate,
  issuer: X509Certificate,
  requestNonce?: Uint8Array,
): OcspMatch | undefined {
  let single: ReturnType<typeof certIdMatches>;
  try {
    single = certIdMatches(parsed, target, issuer);
  } catch {
    return undefined;
  }
  if (single === undefined) return undefined;
  // An embedded certificate OpenSSL cannot read (or whose validity is no readable time) can
  // authorise nothing: it is left out rather than thrown on.
  const embedded = (parsed.basic.certs ?? []).flatMap((c) => {
    try {
      return [parseCertificate(Buffer.from(AsnConvert.serialize(c)), "OCSP responder certificate")];
    } catch {
      return [];
    }
  });
  const candidates = [issuer, ...embedded];
  const hash = SIGNATURE_HASHES[parsed.basic.signatureAlgorithm.algorithm];
  if (hash === undefined) {
    return {
      kind: "invalid",
      problem: `unsupported signature algorithm ${parsed.basic.signatureAlgorithm.algorithm}`,
    };
  }
  const signer = candidates.find((c) => {
    try {
      return verifySignature(hash, parsed.tbs, c.publicKey, Buffer.from(parsed.basic.signature));
    } catch {
      return false;
    }
  });
  if (signer === undefined) {
    return {
      kind: "invalid",
      problem: "its signature verifies with neither the issuer nor an embedded responder",
    };
  }
  if (signer !== issuer) {
    let authorised = false;
    try {
      authorised =
        signer.checkIssued(issuer) &&
        signer.verify(issuer.publicKey) &&
        (signer.keyUsage ?? []).includes(id_kp_OCSPSigning);
    } catch {
      authorised = false;
    }
    if (!authorised) {
      return {
        kind: "invalid",
        problem: `responder "${commonName(signer)}" is not authorised by "${commonName(issuer)}" (issuer signature and OCSPSigning EKU)`,
      };
    }
  }
  const status = single.certStatus;
  const revoked = status.revoked;
  const reason = revoked?.revocationReason;
  const answer: OcspAnswer = {
    status: revoked !== undefined ? "revoked" : status.good !== undefined ? "good" : "unknown",
    producedAt: parsed.basic.tbsResponseData.producedAt.toISOString(),
    thisUpdate: single.thisUpdate.toISOString(),
    ...(single.nextUpdate ? { nextUpdate: single.nextUpdate.toISOString() } : {}),
    ...(revoked ? { revokedAt: revoked.revocationTime.toISOString() } : {}),
    ...(reason !== undefined ? { revocationReason: CRL_REASONS[Number(reason)] ?? `reason ${reason}` } : {}),
    responder: commonName(signer),
    responderNotBefore: signer.validFromDate.toISOString(),
    responderNotAfter: signer.validToDate.toISOString(),
    nonceEchoed:
      requestNonce !== undefined &&
      parsed.nonce !== undefined &&
      // The extension value is the nonce itself or an OCTET STRING wrapping it (both are seen in the wild).
      (parsed.nonce === toHex(requestNonce) || parsed.nonce.endsWith(toHex(requestNonce))),
  };
  return { kind: "answer", answer };
}
