/**
 * OCSP answers as NVIDIA's responders give them (RFC 6960): one SingleResponse with a SHA-384
 * CertID, thisUpdate = producedAt, nextUpdate 24 h later, responderID byKey, ecdsa-with-SHA384,
 * and the delegated responder certificate embedded. Unlike NVIDIA's cached answers these may echo
 * a request nonce, so a policy with ocsp.requireNonce (the default) can accept them.
 */
import { createHash } from "node:crypto";
import {
  BasicOCSPResponse,
  CertID,
  CertStatus,
  id_pkix_ocsp_basic,
  id_pkix_ocsp_nonce,
  OCSPResponse,
  OCSPResponseStatus,
  ResponderID,
  ResponseBytes,
  ResponseData,
  RevokedInfo,
  SingleResponse,
} from "@peculiar/asn1-ocsp";
import { AsnConvert, OctetString } from "@peculiar/asn1-schema";
import { AlgorithmIdentifier, Certificate, CRLReason, Extension } from "@peculiar/asn1-x509";
import * as asn1js from "asn1js";
import { rawToDer, signP384 } from "./ecdsa.ts";
import type { Signer } from "./pki.ts";
import { keyIdentifier, OID_ECDSA_SHA384 } from "./x509.ts";

const OID_SHA384 = "2.16.840.1.101.3.4.2.2";
const DAY_MS = 86_400_000;

/**
 * The certificate an answer is about: only its serial is read (a responder needs no key of it), from
 * its DER or given as the DER INTEGER content a request's CertID carries.
 */
export type OcspTarget = { cert: { der: Uint8Array } } | { serialNumber: ArrayBuffer };

export interface OcspAnswerSpec {
  /** The certificate the answer is about, and its issuer. */
  target: OcspTarget;
  issuer: Signer;
  /** The delegated responder the issuer certified. */
  responder: Signer;
  thisUpdate: Date;
  status: { kind: "good" } | { kind: "revoked"; at: Date; reason: number } | { kind: "unknown" };
  /** Echoed in a nonce extension when given. */
  nonce?: Uint8Array;
}

const wholeSeconds = (d: Date) => new Date(Math.floor(d.getTime() / 1000) * 1000);

function certId(target: OcspTarget, issuer: Signer): CertID {
  const issuerTbs = AsnConvert.parse(issuer.cert.der, Certificate).tbsCertificate;
  const sha384 = (data: ArrayBuffer | Uint8Array) =>
    new OctetString(
      createHash("sha384")
        .update(Buffer.from(data as ArrayBuffer))
        .digest(),
    );
  return new CertID({
    hashAlgorithm: new AlgorithmIdentifier({ algorithm: OID_SHA384, parameters: null }),
    issuerNameHash: sha384(AsnConvert.serialize(issuerTbs.subject)),
    issuerKeyHash: sha384(issuerTbs.subjectPublicKeyInfo.subjectPublicKey),
    serialNumber:
      "serialNumber" in target
        ? target.serialNumber
        : AsnConvert.parse(target.cert.der, Certificate).tbsCertificate.serialNumber,
  });
}

/** A DER OCSPResponse (successful, basic). */
export function buildOcspResponse(spec: OcspAnswerSpec): Uint8Array {
  const thisUpdate = wholeSeconds(spec.thisUpdate);
  const certStatus =
    spec.status.kind === "good"
      ? new CertStatus({ good: null })
      : spec.status.kind === "unknown"
        ? new CertStatus({ unknown: null })
        : new CertStatus({
            revoked: new RevokedInfo({
              revocationTime: wholeSeconds(spec.status.at),
              revocationReason: new CRLReason(spec.status.reason),
            }),
          });
  const tbs = new ResponseData({
    responderID: new ResponderID({ byKey: new OctetString(keyIdentifier(spec.responder.key.spki)) }),
    producedAt: thisUpdate,
    responses: [
      new SingleResponse({
        certID: certId(spec.target, spec.issuer),
        certStatus,
        thisUpdate,
        nextUpdate: new Date(thisUpdate.getTime() + DAY_MS),
      }),
    ],
    ...(spec.nonce
      ? {
          responseExtensions: [
            new Extension({
              extnID: id_pkix_ocsp_nonce,
              extnValue: new OctetString(new asn1js.OctetString({ valueHex: spec.nonce }).toBER()),
            }),
          ],
        }
      : {}),
  });
  const tbsDer = new Uint8Array(AsnConvert.serialize(tbs));
  const basic = new BasicOCSPResponse({
    tbsResponseData: tbs,
    signatureAlgorithm: new AlgorithmIdentifier({ algorithm: OID_ECDSA_SHA384 }),
    signature: rawToDer(signP384(spec.responder.key, tbsDer)).slice().buffer,
    certs: [AsnConvert.parse(spec.responder.cert.der, Certificate)],
  });
  return new Uint8Array(
    AsnConvert.serialize(
      new OCSPResponse({
        responseStatus: OCSPResponseStatus.successful,
        responseBytes: new ResponseBytes({
          responseType: id_pkix_ocsp_basic,
          response: new OctetString(AsnConvert.serialize(basic)),
        }),
      }),
    ),
  );
}
