// Local mode's references: what a node's evidence is judged against but the node does not hold.
// The node agent returns reports and certificate chains only; the RIMs a report names and the OCSP
// answers for its certificates come from NVIDIA's RIM service and OCSP responder (or a mirror named
// in verification.local), fetched here by the member before verifyLocalEvidence, as NVIDIA's own
// local verifier does. What is fetched is only added: the verifier judges it like anything the
// node supplied (a revoked answer is CertRevoked, a stale one OcspStale, a 404 RIM RimNotFound).
//
// A service that does not answer is not the node's fault: unreachable, a 5xx or an answer that is
// not the service's format throw EvidenceError("EvidenceUnavailable") with RimServiceUnavailable or
// OcspResponderUnavailable in the message, so the node keeps its standing and is retried with
// backoff, exactly as when its agent does not answer.
import { createHash, randomBytes, type X509Certificate } from "node:crypto";
import {
  CertID,
  id_pkix_ocsp_nonce,
  OCSPRequest,
  OCSPResponse,
  OCSPResponseStatus,
  Request,
  TBSRequest,
} from "@peculiar/asn1-ocsp";
import { AsnConvert, OctetString } from "@peculiar/asn1-schema";
import { AlgorithmIdentifier, Certificate, Extension } from "@peculiar/asn1-x509";
import * as asn1js from "asn1js";
import { chainPath, isSelfSigned, parseCertificate, parsePemChain } from "../../attestation/certchain.ts";
import {
  type EvidenceFacts,
  type LocalDeviceEvidence,
  parseAttestationReport,
  parseReportText,
  type RimDocument,
  type TrustAnchors,
  verifyLocalEvidence,
} from "../../attestation/mod.ts";
import {
  certIdMatches,
  type IssuerIdentity,
  issuerIdentity,
  type ParsedOcspResponse,
  parseOcspResponse,
} from "../../attestation/ocsp.ts";
import { checkRimSignature, type ParsedRim, parseRim } from "../../attestation/rim.ts";
import {
  architectureOf,
  type RevocationTarget,
  revocationTargets,
  rimRoles,
  selectRim,
} from "../../attestation/verify.ts";
import type { AttestationPolicySpec } from "../../crds/types.generated.ts";
import { type Clock, realClock } from "../runtime/clock.ts";
import { type EvidenceAppraiser, EvidenceError } from "./evidence-source.ts";
import { httpsRequest } from "./https-client.ts";

export const DEFAULT_RIM_SERVICE_URL = "https://rim.attestation.nvidia.com/v1/rim/";
export const DEFAULT_OCSP_URL = "https://ocsp.ndis.nvidia.com/";

const OID_SHA384 = "2.16.840.1.101.3.4.2.2";
const OCSP_NONCE_BYTES = 32;
/** NVIDIA's RIMs are tens of kilobytes; base64 in JSON adds a third. */
const MAX_RIM_ANSWER_BYTES = 4 << 20;
const MAX_OCSP_ANSWER_BYTES = 64 << 10;
/** Parsed RIMs (each holds its XML's DOM) and issuers kept: a fleet has a few driver and VBIOS versions and CAs. */
const PARSED_CACHE_SIZE = 64;
const RIM_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,255}$/;
// A plain character class: a grouped repetition overflows V8's regexp stack on inputs of megabytes.
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/** What the member's Local appraisal fetches, from the policy's verification.local and ocsp. */
export interface ReferenceSettings {
  fetch: boolean;
  rimServiceUrl: string;
  ocspUrl: string;
  requireNonce: boolean;
}

export function referenceSettings(spec: AttestationPolicySpec): ReferenceSettings {
  const local = spec.verification.local;
  return {
    fetch: local?.fetch ?? true,
    rimServiceUrl: local?.rimServiceUrl ?? DEFAULT_RIM_SERVICE_URL,
    ocspUrl: local?.ocspUrl ?? DEFAULT_OCSP_URL,
    requireNonce: spec.ocsp.requireNonce ?? true,
  };
}

export interface ReferenceClientOptions {
  /** PEM of CAs to trust for the RIM service and OCSP responder instead of the system's (a mirror, the testbed). */
  ca?: string;
  timeoutMs?: number;
  clock?: Clock;
  /** Source of OCSP request nonces; default node:crypto. */
  randomBytes?: (n: number) => Uint8Array;
  /** RIMs kept in memory (they are immutable); default 256. */
  rimCacheSize?: number;
  /** How long a RIM id the service does not know is not asked for again; default 60 s. */
  notFoundTtlMs?: number;
  /** Requests in flight at once, over all nodes; default 8. */
  concurrency?: number;
}

/** The RIM service's answer is not its JSON format; only ever this error escapes the parser. */
export class RimAnswerError extends Error {
  override name = "RimAnswerError";
  readonly reason = "RimServiceAnswerInvalid";
  constructor(message: string) {
    super(`RimServiceAnswerInvalid: ${message}`);
  }
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * The RIM in an answer of NVIDIA's RIM service (`GET /v1/rim/<id>`): a JSON object whose `id`
 * names the RIM and whose `rim` is the base64 of its XML; other members (sha256, rim_format,
 * request_id, …) are not needed, since the RIM's own signature is what is trusted. With
 * `requestedId`, an answer about another RIM is refused.
 */
export function parseRimServiceAnswer(
  body: string | Uint8Array,
  requestedId?: string,
): Required<RimDocument> {
  if (body.length > MAX_RIM_ANSWER_BYTES) {
    throw new RimAnswerError(`the answer is larger than ${MAX_RIM_ANSWER_BYTES} bytes`);
  }
  let text: string;
  try {
    text = typeof body === "string" ? body : utf8.decode(body);
  } catch {
    throw new RimAnswerError("the answer is not UTF-8 text");
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new RimAnswerError("the answer is not JSON");
  }
  if (json === null || typeof json !== "object" || Array.isArray(json)) {
    throw new RimAnswerError("the answer is not a JSON object");
  }
  const { id, rim } = json as { id?: unknown; rim?: unknown };
  if (typeof id !== "string" || !RIM_ID.test(id)) {
    throw new RimAnswerError('its "id" is not a RIM identifier (letters, digits, "_", "." and "-")');
  }
  if (requestedId !== undefined && id !== requestedId) {
    throw new RimAnswerError(
      `it is about RIM ${JSON.stringify(id)}, ${JSON.stringify(requestedId)} was asked for`,
    );
  }
  if (typeof rim !== "string") throw new RimAnswerError('its "rim" is not a string');
  // JSON encoders may wrap long base64; nothing else but the alphabet is accepted.
  const compact = rim.replace(/[\r\n]/g, "");
  if (compact.length === 0 || compact.length % 4 !== 0 || !BASE64.test(compact)) {
    throw new RimAnswerError('its "rim" is not base64 text');
  }
  let xml: string;
  try {
    xml = utf8.decode(Buffer.from(compact, "base64"));
  } catch {
    throw new RimAnswerError('its "rim" does not decode to UTF-8 text');
  }
  return { id, xml };
}

const snippet = (body: Buffer) => JSON.stringify(body.subarray(0, 200).toString("utf8"));

/** Does `issuer` really sign `cert`? A link that does not is the verifier's CertChainInvalid, not a question for OCSP. */
function issuedBy(cert: X509Certificate, issuer: X509Certificate): boolean {
  try {
    return cert.checkIssued(issuer) && cert.verify(issuer.publicKey);
  } catch {
    return false;
  }
}

/**
 * Whether any answer is about the target: the CertID match of answerFor (attestation/ocsp.ts)
 * alone. An answer that names the certificate is the verifier's to judge, whatever it says and
 * whoever signed it, so asking again would not help; checking its signature here would cost as much
 * as the verifier's own check, on every appraisal.
 */
function answered(
  answers: readonly ParsedOcspResponse[],
  target: RevocationTarget,
  issuer: IssuerIdentity | undefined,
): boolean {
  if (issuer === undefined) return false;
  return answers.some((a) => {
    try {
      return certIdMatches(a, target.cert, issuer) !== undefined;
    } catch {
      return false;
    }
  });
}

/** The SHA-384 CertID NVIDIA's tools send (RFC 6960 §4.1.1). */
function certIdOf(target: RevocationTarget): CertID {
  const issuer = AsnConvert.parse(target.issuer.raw, Certificate).tbsCertificate;
  const sha384 = (data: ArrayBuffer) =>
    new OctetString(createHash("sha384").update(Buffer.from(data)).digest());
  return new CertID({
    hashAlgorithm: new AlgorithmIdentifier({ algorithm: OID_SHA384, parameters: null }),
    issuerNameHash: sha384(AsnConvert.serialize(issuer.subject)),
    issuerKeyHash: sha384(issuer.subjectPublicKeyInfo.subjectPublicKey),
    serialNumber: AsnConvert.parse(target.cert.raw, Certificate).tbsCertificate.serialNumber,
  });
}

/** A DER OCSPRequest for one certificate; the nonce extension holds the nonce as an OCTET STRING (RFC 8954). */
export function ocspRequestFor(target: RevocationTarget, nonce?: Uint8Array): Uint8Array {
  const tbsRequest = new TBSRequest({
    requestList: [new Request({ reqCert: certIdOf(target) })],
    ...(nonce
      ? {
          requestExtensions: [
            new Extension({
              extnID: id_pkix_ocsp_nonce,
              extnValue: new OctetString(new asn1js.OctetString({ valueHex: nonce }).toBER()),
            }),
          ],
        }
      : {}),
  });
  return new Uint8Array(AsnConvert.serialize(new OCSPRequest({ tbsRequest })));
}

/** Fills in the RIMs and OCSP answers a node's evidence lacks. One per member: its caches serve every node. */
export class ReferenceFetcher {
  readonly settings: ReferenceSettings;
  /** Requests sent, to see the caches work. */
  readonly requests = { rim: 0, ocsp: 0 };
  readonly #anchors: TrustAnchors;
  readonly #deviceRoot: { cert: X509Certificate; selfSigned: boolean };
  readonly #rimRoot: { cert: X509Certificate; selfSigned: boolean };
  readonly #opts: ReferenceClientOptions;
  readonly #clock: Clock;
  readonly #random: (n: number) => Uint8Array;
  /** Insertion order is recency: a hit re-inserts, the oldest goes first. */
  readonly #rims = new Map<string, Required<RimDocument>>();
  readonly #notFound = new Map<string, number>();
  readonly #rimsInFlight = new Map<string, Promise<Required<RimDocument> | undefined>>();
  /**
   * RIMs parsed, by the digest of their id and XML, and the CertID parts of issuers, by
   * fingerprint: the same few documents and CAs come with every GPU and challenge, and parsing them
   * is most of what the fetcher does when nothing is missing. Insertion order is recency.
   */
  readonly #parsedRims = new Map<string, ParsedRim>();
  readonly #issuerIds = new Map<string, IssuerIdentity>();
  /** requireNonce false only: answers by CertID, until their nextUpdate. */
  readonly #ocspCache = new Map<string, { der: Uint8Array; until: number }>();
  #active = 0;
  readonly #waiting: (() => void)[] = [];

  constructor(settings: ReferenceSettings, anchors: TrustAnchors, opts: ReferenceClientOptions = {}) {
    this.settings = {
      ...settings,
      rimServiceUrl: settings.rimServiceUrl.endsWith("/")
        ? settings.rimServiceUrl
        : `${settings.rimServiceUrl}/`,
    };
    this.#anchors = anchors;
    const root = (pem: string, what: string) => {
      const cert = parseCertificate(pem, what);
      return { cert, selfSigned: isSelfSigned(cert) };
    };
    this.#deviceRoot = root(anchors.deviceRootPem, "pinned device root");
    this.#rimRoot = root(anchors.rimRootPem, "pinned RIM root");
    this.#opts = opts;
    this.#clock = opts.clock ?? realClock;
    this.#random = opts.randomBytes ?? ((n) => new Uint8Array(randomBytes(n)));
  }

  /** The member's Local appraisal: the evidence completed, then the local verifier. */
  readonly appraise: EvidenceAppraiser = async ({ devices, nonce, collectedAt }): Promise<EvidenceFacts> =>
    verifyLocalEvidence({
      devices: await this.complete(devices),
      expectedNonce: nonce,
      collectedAt,
      anchors: this.#anchors,
    });

  /** The devices with every missing RIM and OCSP answer fetched (unchanged with fetch: false). */
  async complete(devices: readonly LocalDeviceEvidence[]): Promise<LocalDeviceEvidence[]> {
    if (!this.settings.fetch) return [...devices];
    return Promise.all(devices.map((d) => this.#completeDevice(d)));
  }

  async #completeDevice(device: LocalDeviceEvidence): Promise<LocalDeviceEvidence> {
    let chip: string;
    let roles: { id: string; version: string }[];
    let presented: X509Certificate[];
    try {
      const report =
        typeof device.report === "string"
          ? parseReportText(device.report)
          : parseAttestationReport(device.report);
      presented = parsePemChain(device.certificateChain, "device certificate chain");
      chip = architectureOf(presented[0] as X509Certificate).chip;
      roles = rimRoles(report, chip);
    } catch {
      // Unreadable evidence names no reference; the verifier says what is wrong with it.
      return device;
    }
    const supplied = new Set(device.rims.flatMap((r) => (r.id === undefined ? [] : [r.id])));
    const fetched = await Promise.all(roles.filter((r) => !supplied.has(r.id)).map((r) => this.rim(r.id)));
    const rims = [...device.rims, ...fetched.filter((r): r is Required<RimDocument> => r !== undefined)];

    const parsed = rims.map((doc) => this.#parseRim(doc));
    const rimPaths = roles.flatMap((role) => {
      const rim = selectRim(parsed, role, chip);
      if (rim === undefined || rim.version.toUpperCase() !== role.version.toUpperCase()) return [];
      return [
        { label: role.id, path: chainPath(rim.signerChain, this.#rimRoot.cert, this.#rimRoot.selfSigned) },
      ];
    });
    const devicePath = chainPath(presented, this.#deviceRoot.cert, this.#deviceRoot.selfSigned);
    const answers: ParsedOcspResponse[] = (device.ocspResponses ?? []).flatMap((raw) => {
      try {
        return [parseOcspResponse(raw)];
      } catch {
        return [];
      }
    });
    // No signature is checked for a certificate already answered for: evidence that lacks nothing
    // costs the fetcher parsing only, not a second verification.
    const missing = revocationTargets(devicePath, rimPaths).filter(
      (t) => !answered(answers, t, this.#issuerId(t.issuer)) && issuedBy(t.cert, t.issuer),
    );
    if (missing.length === 0) return fetched.length === 0 ? device : { ...device, rims };
    // One nonce for the device's answers, as the verifier checks them against one. A nonce the
    // node already used for answers it supplied is kept, so those still count.
    const nonce = this.settings.requireNonce
      ? (device.ocspRequestNonce ?? this.#random(OCSP_NONCE_BYTES))
      : undefined;
    const got = await Promise.all(missing.map((t) => this.#ocsp(t, nonce)));
    return {
      ...device,
      rims,
      ocspResponses: [
        ...(device.ocspResponses ?? []),
        ...got.filter((a): a is Uint8Array => a !== undefined),
      ],
      ...(nonce ? { ocspRequestNonce: nonce } : {}),
    };
  }

  #parseRim(doc: RimDocument): ParsedRim | undefined {
    // JSON text holds no raw newline, so the first one ends the id: no two documents share a key.
    const key = createHash("sha256")
      .update(`${JSON.stringify(doc.id ?? null)}\n`)
      .update(doc.xml)
      .digest("hex");
    return recall(this.#parsedRims, key, () => parseRim(doc));
  }

  #issuerId(issuer: X509Certificate): IssuerIdentity | undefined {
    return recall(this.#issuerIds, issuer.fingerprint256, () => issuerIdentity(issuer));
  }

  /** The RIM the service has under `id`, undefined when it has none (404). */
  rim(id: string): Promise<Required<RimDocument> | undefined> {
    const cached = this.#rims.get(id);
    if (cached) {
      this.#rims.delete(id);
      this.#rims.set(id, cached);
      return Promise.resolve(cached);
    }
    if ((this.#notFound.get(id) ?? Number.NEGATIVE_INFINITY) > this.#clock.now())
      return Promise.resolve(undefined);
    let pending = this.#rimsInFlight.get(id);
    if (!pending) {
      pending = this.#fetchRim(id).finally(() => this.#rimsInFlight.delete(id));
      this.#rimsInFlight.set(id, pending);
    }
    return pending;
  }

  async #fetchRim(id: string): Promise<Required<RimDocument> | undefined> {
    const url = `${this.settings.rimServiceUrl}${encodeURIComponent(id)}`;
    const answer = await this.#limited(() => {
      this.requests.rim++;
      return httpsRequest(url, {
        method: "GET",
        accept: "application/json",
        ...(this.#opts.ca ? { ca: this.#opts.ca } : {}),
        timeoutMs: this.#opts.timeoutMs ?? 30_000,
        maxBytes: MAX_RIM_ANSWER_BYTES,
      });
    }).catch((err: unknown) => {
      throw new EvidenceError(
        "EvidenceUnavailable",
        `RimServiceUnavailable: cannot fetch RIM ${id} from ${url}: ${(err as Error).message}; check verification.local.rimServiceUrl, the member's egress and --reference-ca`,
        { cause: err },
      );
    });
    if (answer.status === 404) {
      // Not cached for long: NVIDIA publishes a new driver's RIM some time after the driver.
      this.#notFound.set(id, this.#clock.now() + (this.#opts.notFoundTtlMs ?? 60_000));
      return undefined;
    }
    if (answer.status !== 200) {
      throw new EvidenceError(
        "EvidenceUnavailable",
        `RimServiceUnavailable: ${url} answered HTTP ${answer.status} ${snippet(answer.body)}; the node is challenged again after a backoff`,
      );
    }
    let doc: Required<RimDocument>;
    try {
      doc = parseRimServiceAnswer(answer.body, id);
    } catch (err) {
      throw new EvidenceError(
        "EvidenceUnavailable",
        `RimServiceUnavailable: ${url} answered something that is not a RIM service answer: ${(err as Error).message}; check verification.local.rimServiceUrl points at a RIM service (…/v1/rim/)`,
        { cause: err },
      );
    }
    this.#notFound.delete(id);
    // Only a RIM whose signature holds is kept: a bad one is judged this once, then asked for again.
    let keep = false;
    try {
      keep = (await checkRimSignature(parseRim(doc))) === undefined;
    } catch {
      keep = false;
    }
    if (keep) {
      remember(this.#rims, id, doc, Math.max(1, this.#opts.rimCacheSize ?? 256));
    }
    return doc;
  }

  /** The responder's DER answer about the target; undefined when it refuses the question (the verdict then says OcspUnavailable). */
  async #ocsp(target: RevocationTarget, nonce: Uint8Array | undefined): Promise<Uint8Array | undefined> {
    const request = ocspRequestFor(target, nonce);
    const key = createHash("sha256")
      .update(Buffer.from(AsnConvert.serialize(certIdOf(target))))
      .digest("hex");
    if (nonce === undefined) {
      const cached = this.#ocspCache.get(key);
      if (cached && cached.until > this.#clock.now()) return cached.der;
      this.#ocspCache.delete(key);
    }
    const url = this.settings.ocspUrl;
    const answer = await this.#limited(() => {
      this.requests.ocsp++;
      return httpsRequest(url, {
        method: "POST",
        body: request,
        contentType: "application/ocsp-request",
        accept: "application/ocsp-response",
        ...(this.#opts.ca ? { ca: this.#opts.ca } : {}),
        timeoutMs: this.#opts.timeoutMs ?? 30_000,
        maxBytes: MAX_OCSP_ANSWER_BYTES,
      });
    }).catch((err: unknown) => {
      throw new EvidenceError(
        "EvidenceUnavailable",
        `OcspResponderUnavailable: cannot ask ${url} about "${target.subject}": ${(err as Error).message}; check verification.local.ocspUrl, the member's egress and --reference-ca`,
        { cause: err },
      );
    });
    if (answer.status !== 200) {
      throw new EvidenceError(
        "EvidenceUnavailable",
        `OcspResponderUnavailable: ${url} answered HTTP ${answer.status} ${snippet(answer.body)} about "${target.subject}"; the node is challenged again after a backoff`,
      );
    }
    let outer: OCSPResponse;
    try {
      outer = AsnConvert.parse(answer.body, OCSPResponse);
    } catch (err) {
      throw new EvidenceError(
        "EvidenceUnavailable",
        `OcspResponderUnavailable: ${url} answered ${answer.body.length} bytes that are not a DER OCSP response; check verification.local.ocspUrl points at an OCSP responder`,
        { cause: err },
      );
    }
    const status = outer.responseStatus;
    if (status === OCSPResponseStatus.internalError || status === OCSPResponseStatus.tryLater) {
      throw new EvidenceError(
        "EvidenceUnavailable",
        `OcspResponderUnavailable: ${url} answered OCSP status ${OCSPResponseStatus[status]} about "${target.subject}"; the node is challenged again after a backoff`,
      );
    }
    // malformedRequest, sigRequired, unauthorized: the responder will not answer about this
    // certificate (it is none of NVIDIA's); asking again would not help, the verdict says why.
    if (status !== OCSPResponseStatus.successful) return undefined;
    const der = new Uint8Array(answer.body);
    if (nonce === undefined) {
      const until = nextUpdateOf(der);
      if (until !== undefined) this.#ocspCache.set(key, { der, until });
    }
    return der;
  }

  async #limited<T>(fn: () => Promise<T>): Promise<T> {
    const limit = Math.max(1, this.#opts.concurrency ?? 8);
    // A finished request hands its slot straight to the next waiter, so the limit holds.
    if (this.#active >= limit) await new Promise<void>((resolve) => this.#waiting.push(resolve));
    else this.#active++;
    try {
      return await fn();
    } finally {
      const next = this.#waiting.shift();
      if (next) next();
      else this.#active--;
    }
  }
}

/** Puts `key` last in `cache` (most recent), dropping the oldest entries beyond `limit`. */
/**
 * The parsed form kept under `key` (most recently used last), or `parse()` kept there now;
 * undefined, and nothing kept, when it throws: what does not parse is the verifier's to refuse.
 */
function recall<T>(cache: Map<string, T>, key: string, parse: () => T): T | undefined {
  let value = cache.get(key);
  if (value === undefined) {
    try {
      value = parse();
    } catch {
      return undefined;
    }
  }
  remember(cache, key, value, PARSED_CACHE_SIZE);
  return value;
}

function remember<T>(cache: Map<string, T>, key: string, value: T, limit: number): void {
  cache.delete(key);
  cache.set(key, value);
  while (cache.size > limit) cache.delete(cache.keys().next().value as string);
}

/** The earliest nextUpdate of an answer (ms); undefined when it has none (then it is not reused). */
function nextUpdateOf(der: Uint8Array): number | undefined {
  try {
    const times = parseOcspResponse(der).basic.tbsResponseData.responses.map((r) => r.nextUpdate?.getTime());
    if (times.length === 0 || times.some((t) => t === undefined)) return undefined;
    return Math.min(...(times as number[]));
  } catch {
    return undefined;
  }
}
