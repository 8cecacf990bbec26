// TESTBED ONLY: stand-ins for NVIDIA's RIM service and OCSP responder on one HTTPS server, so a
// member in Local mode can fetch the references its nodes do not supply without NVIDIA's services
// (the testbed has no network). Both answer in NVIDIA's formats, under the testbed PKI:
//
//   GET  /v1/rim/<id>  {"id", "rim": base64 of the RIM XML, "sha256", "rim_format", …}, minted by
//                      attestation/testbed for the driver or VBIOS version the id names; 404 otherwise
//   POST /ocsp         an OCSP request with one CertID (and a nonce extension, echoed) is answered
//                      by the delegated responder of whichever testbed CA the CertID names
//
// Switches make it answer `revoked` for a certificate, hide a RIM, fail with an HTTP status, or
// answer garbage. Its TLS certificate is under a CA of its own (`ca`).
import { createHash, randomUUID } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Server } from "node:https";
import type { AddressInfo } from "node:net";
import { id_pkix_ocsp_nonce, OCSPRequest, OCSPResponse, OCSPResponseStatus } from "@peculiar/asn1-ocsp";
import { AsnConvert } from "@peculiar/asn1-schema";
import { Certificate } from "@peculiar/asn1-x509";
import * as asn1js from "asn1js";
import { TESTBED_GPU_DEFAULTS, TESTBED_SEED, testbedRims } from "../../attestation/testbed/mod.ts";
import { buildOcspResponse } from "../../attestation/testbed/ocsp.ts";
import { type Authority, testbedPki } from "../../attestation/testbed/pki.ts";
import { serveHttps } from "./pki.ts";

const MAX_REQUEST_BYTES = 64 << 10;
const HASHES: Record<string, string> = {
  "1.3.14.3.2.26": "sha1",
  "2.16.840.1.101.3.4.2.1": "sha256",
  "2.16.840.1.101.3.4.2.2": "sha384",
  "2.16.840.1.101.3.4.2.3": "sha512",
};
const CRL_REASON_KEY_COMPROMISE = 1;
const { project, projectSku, chipSku } = TESTBED_GPU_DEFAULTS;
const DRIVER_RIM = /^NV_GPU_DRIVER_GH100_([0-9]+(?:\.[0-9]+){1,3})$/;
const VBIOS_RIM = new RegExp(`^NV_GPU_VBIOS_${project}_${projectSku}_${chipSku}_([0-9A-F]{10})$`);

export type ReferenceService = "rim" | "ocsp";

export interface ReferenceServicesOptions {
  /** Where its TLS CA and serving certificate are kept. */
  dir: string;
  seed?: string;
  /** The responders' clock (ms); answers are current at it. Default Date.now. */
  now?: () => number;
}

export interface OcspRequestSeen {
  /** Serial of the certificate asked about, upper-case hex as X509Certificate.serialNumber gives it. */
  serial: string;
  /** The nonce the request carried (hex), if any. */
  nonce?: string;
}

export class TestbedReferenceServices {
  readonly url: string;
  /** verification.local.rimServiceUrl for it. */
  readonly rimServiceUrl: string;
  /** verification.local.ocspUrl for it. */
  readonly ocspUrl: string;
  /** PEM of the CA its TLS certificate chains to. */
  readonly ca: string;
  /** RIM ids asked for, in order (answered or not). */
  readonly rimRequests: string[] = [];
  readonly ocspRequests: OcspRequestSeen[] = [];
  readonly #server: Server;
  readonly #opts: ReferenceServicesOptions;
  readonly #authorities: Authority[];
  readonly #revoked = new Set<string>();
  readonly #withheld = new Set<string>();
  readonly #failWith = new Map<ReferenceService, number>();
  readonly #garbage = new Set<ReferenceService>();

  private constructor(server: Server, ca: string, opts: ReferenceServicesOptions) {
    const { port } = server.address() as AddressInfo;
    this.url = `https://127.0.0.1:${port}`;
    this.rimServiceUrl = `${this.url}/v1/rim/`;
    this.ocspUrl = `${this.url}/ocsp`;
    this.#server = server;
    this.ca = ca;
    this.#opts = opts;
    const pki = testbedPki(opts.seed ?? TESTBED_SEED);
    this.#authorities = [
      pki.device.root,
      pki.device.identity,
      pki.device.provisioner,
      pki.rim.root,
      pki.rim.l2,
      pki.rim.l3,
    ];
  }

  static async start(opts: ReferenceServicesOptions): Promise<TestbedReferenceServices> {
    let self: TestbedReferenceServices | undefined;
    const { server, ca } = await serveHttps(opts.dir, "testbed-references", (req, res) => {
      void self?.handle(req, res);
    });
    self = new TestbedReferenceServices(server, ca, opts);
    return self;
  }

  /** Answers `revoked` (keyCompromise) about the certificate with this serial (hex) from now on; `false` un-revokes it. */
  revoke(serial: string, revoked = true): void {
    const key = normaliseSerial(serial);
    if (revoked) this.#revoked.add(key);
    else this.#revoked.delete(key);
  }

  /** Answers 404 for this RIM id from now on, as the RIM service does for a RIM it does not have; `false` serves it again. */
  withhold(rimId: string, withheld = true): void {
    if (withheld) this.#withheld.add(rimId);
    else this.#withheld.delete(rimId);
  }

  /** Testbed fault: the service answers every request with this HTTP status (undefined: answer again). */
  failWith(service: ReferenceService, status?: number): void {
    if (status === undefined) this.#failWith.delete(service);
    else this.#failWith.set(service, status);
  }

  /** Testbed fault: the service answers 200 with bytes in no format it speaks. */
  answerGarbage(service: ReferenceService, on = true): void {
    if (on) this.#garbage.add(service);
    else this.#garbage.delete(service);
  }

  close(): Promise<void> {
    this.#server.closeAllConnections();
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const send = (status: number, type: string, body: string | Uint8Array) => {
      res.writeHead(status, { "content-type": type });
      res.end(body);
    };
    try {
      const chunks: Buffer[] = [];
      let size = 0;
      for await (const chunk of req) {
        size += (chunk as Buffer).length;
        if (size > MAX_REQUEST_BYTES) {
          send(413, "text/plain", "request too large");
          return;
        }
        chunks.push(chunk as Buffer);
      }
      const path = req.url ?? "";
      const service: ReferenceService | undefined =
        req.method === "GET" && path.startsWith("/v1/rim/")
          ? "rim"
          : req.method === "POST" && path === "/ocsp"
            ? "ocsp"
            : undefined;
      if (service === undefined) {
        send(404, "application/json", JSON.stringify({ error: "GET /v1/rim/<id> or POST /ocsp" }));
        return;
      }
      const rimId = service === "rim" ? decodeURIComponent(path.slice("/v1/rim/".length)) : "";
      if (service === "rim") this.rimRequests.push(rimId);
      const failure = this.#failWith.get(service);
      if (failure !== undefined) {
        send(failure, "application/json", JSON.stringify({ error: "testbed fault: told to fail" }));
        return;
      }
      if (this.#garbage.has(service)) {
        send(
          200,
          service === "rim" ? "application/json" : "application/ocsp-response",
          "<html>garbage</html>",
        );
        return;
      }
      if (service === "rim") {
        const answer = await this.#rimAnswer(rimId);
        if (answer === undefined) send(404, "application/json", JSON.stringify({ error: `no RIM ${rimId}` }));
        else send(200, "application/json", answer);
        return;
      }
      send(200, "application/ocsp-response", this.#ocspAnswer(Buffer.concat(chunks)));
    } catch (err) {
      send(500, "text/plain", (err as Error).message);
    }
  }

  /** NVIDIA's JSON for a RIM the testbed mints, undefined when the id names none. */
  async #rimAnswer(id: string): Promise<string | undefined> {
    if (this.#withheld.has(id)) return undefined;
    const driver = DRIVER_RIM.exec(id)?.[1];
    const vbiosHex = VBIOS_RIM.exec(id)?.[1];
    if (driver === undefined && vbiosHex === undefined) return undefined;
    const versions = {
      driverVersion: driver ?? "1.0",
      vbiosVersion: vbiosHex ? (vbiosHex.match(/../g) as string[]).join(".") : "00.00.00.00.00",
    };
    const rim = (await testbedRims(versions, this.#opts.seed)).find((r) => r.id === id);
    if (rim === undefined) return undefined;
    return JSON.stringify({
      id,
      rim: Buffer.from(rim.xml, "utf8").toString("base64"),
      sha256: createHash("sha256").update(rim.xml).digest("hex"),
      rim_format: "SWIDTAG",
      request_id: randomUUID(),
    });
  }

  /** A DER OCSPResponse to a DER OCSPRequest with one CertID. */
  #ocspAnswer(body: Buffer): Uint8Array {
    const refuse = (status: OCSPResponseStatus) =>
      new Uint8Array(AsnConvert.serialize(new OCSPResponse({ responseStatus: status })));
    let request: OCSPRequest;
    try {
      request = AsnConvert.parse(body, OCSPRequest);
    } catch {
      return refuse(OCSPResponseStatus.malformedRequest);
    }
    const single = request.tbsRequest.requestList;
    if (single.length !== 1) return refuse(OCSPResponseStatus.malformedRequest);
    const certId = (single[0] as (typeof single)[number]).reqCert;
    const nonceExt = request.tbsRequest.requestExtensions?.find((e) => e.extnID === id_pkix_ocsp_nonce);
    const nonce = nonceExt ? nonceValue(new Uint8Array(nonceExt.extnValue.buffer)) : undefined;
    const serial = normaliseSerial(Buffer.from(certId.serialNumber).toString("hex"));
    this.ocspRequests.push({ serial, ...(nonce ? { nonce: Buffer.from(nonce).toString("hex") } : {}) });
    const hash = HASHES[certId.hashAlgorithm.algorithm];
    const issuer =
      hash === undefined
        ? undefined
        : this.#authorities.find((a) => {
            const tbs = AsnConvert.parse(a.cert.der, Certificate).tbsCertificate;
            const digest = (data: ArrayBuffer) => createHash(hash).update(Buffer.from(data)).digest();
            return (
              digest(AsnConvert.serialize(tbs.subject)).equals(Buffer.from(certId.issuerNameHash.buffer)) &&
              digest(tbs.subjectPublicKeyInfo.subjectPublicKey).equals(
                Buffer.from(certId.issuerKeyHash.buffer),
              )
            );
          });
    // Like NVIDIA's responder asked about a CA that is none of its own.
    if (issuer?.responder === undefined) return refuse(OCSPResponseStatus.unauthorized);
    const now = this.#opts.now?.() ?? Date.now();
    return buildOcspResponse({
      target: { serialNumber: certId.serialNumber },
      issuer,
      responder: issuer.responder,
      thisUpdate: new Date(now - 60_000),
      status: this.#revoked.has(serial)
        ? { kind: "revoked", at: new Date(now - 86_400_000), reason: CRL_REASON_KEY_COMPROMISE }
        : { kind: "good" },
      ...(nonce ? { nonce } : {}),
    });
  }
}

const normaliseSerial = (hex: string) => hex.toUpperCase().replace(/^0+(?=.)/, "");

/** RFC 8954: the extension holds an OCTET STRING with the nonce; older clients put the bare nonce. */
function nonceValue(content: Uint8Array): Uint8Array {
  const parsed = asn1js.fromBER(content);
  if (parsed.offset === content.length && parsed.result instanceof asn1js.OctetString) {
    return new Uint8Array(parsed.result.valueBlock.valueHexView);
  }
  return content;
}
