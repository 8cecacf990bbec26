// TESTBED ONLY: a stand-in for NVIDIA's Remote Attestation Service, so a member with an NRAS-mode
// AttestationPolicy can be run without NVIDIA's service (the testbed has no network). It speaks
// NRAS's v4 protocol (POST /v4/attest/gpu → detached EAT, GET /.well-known/jwks.json) over TLS
// under a CA of its own, and really appraises what is posted: the report and chain are checked by
// this repo's local verifier against the testbed trust anchors, with RIMs and OCSP answers from the
// testbed's stand-ins for NVIDIA's RIM service and responders (attestation/testbed/), as NRAS
// fetches them itself. Evidence that fails gets a token whose claims say so, as NRAS's do.
//
// What it proves is our client and our token checks; NVIDIA's own appraisal is not exercised. Its
// tokens are signed by a key made at start: never put its issuer or JWKS into a real policy.
import { createHash, randomBytes, randomUUID, X509Certificate } from "node:crypto";
import type { Server } from "node:https";
import type { AddressInfo } from "node:net";
import { exportJWK, generateKeyPair, type JWK, SignJWT } from "jose";
import { fromHex } from "../../attestation/bytes.ts";
import {
  evaluatePolicy,
  type Finding,
  parseAttestationReport,
  type TrustAnchors,
  verifyLocalEvidence,
} from "../../attestation/mod.ts";
import type { RimDocument } from "../../attestation/rim.ts";
import {
  TESTBED_POLICY_SPEC,
  TESTBED_SEED,
  testbedOcspAnswers,
  testbedRimIds,
  testbedRims,
  testbedTrustAnchors,
} from "../../attestation/testbed/mod.ts";
import type { AttestationPolicySpec } from "../../crds/types.generated.ts";
import { serveHttps } from "./pki.ts";

const MAX_REQUEST_BYTES = 32 << 20;
const MAX_DEVICES = 64;
/** What NRAS judges; allow lists, CC mode and freshness are the member's policy's business. */
const APPRAISAL: AttestationPolicySpec = {
  ...TESTBED_POLICY_SPEC,
  gpuArchitectures: ["Hopper", "Blackwell"],
};
const POLICY_REASONS = new Set([
  "ArchitectureNotAllowed",
  "CcModeOff",
  "DriverNotAllowed",
  "VbiosNotAllowed",
  "RimNotAllowed",
  "EvidenceStale",
]);
const PEM = /-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g;

export interface TestbedNrasOptions {
  /** Where its TLS CA and serving certificate are kept. */
  dir: string;
  anchors?: TrustAnchors;
  seed?: string;
  /** Token lifetime. Default 1 h, as NRAS's. */
  tokenTtlSeconds?: number;
}

interface SigningKey {
  kid: string;
  privateKey: CryptoKey;
  jwk: JWK;
}

async function newKey(): Promise<SigningKey> {
  const { publicKey, privateKey } = await generateKeyPair("ES384", { extractable: true });
  const kid = `testbed-nras-${randomUUID()}`;
  return { kid, privateKey, jwk: { ...(await exportJWK(publicKey)), kid, alg: "ES384", use: "sig" } };
}

class BadRequest extends Error {}

export class TestbedNras {
  readonly url: string;
  readonly jwksUrl: string;
  /** The `iss` of its tokens: a policy's acceptedIssuers must list it. */
  readonly issuer: string;
  /** PEM of the CA its TLS certificate chains to: give it to the member's NRAS client. */
  readonly ca: string;
  /** Appraisal requests answered (any status). */
  requests = 0;
  readonly #server: Server;
  readonly #opts: TestbedNrasOptions;
  #key: SigningKey;
  #failWith?: number;
  readonly #rims = new Map<string, Promise<Required<RimDocument>[]>>();

  private constructor(server: Server, ca: string, key: SigningKey, opts: TestbedNrasOptions) {
    const { port } = server.address() as AddressInfo;
    this.issuer = `https://127.0.0.1:${port}`;
    this.url = `${this.issuer}/v4/attest/gpu`;
    this.jwksUrl = `${this.issuer}/.well-known/jwks.json`;
    this.#server = server;
    this.ca = ca;
    this.#key = key;
    this.#opts = opts;
  }

  static async start(opts: TestbedNrasOptions): Promise<TestbedNras> {
    let self: TestbedNras | undefined;
    const { server, ca } = await serveHttps(opts.dir, "testbed-nras", (req, res) => {
      void self?.handle(req, res);
    });
    self = new TestbedNras(server, ca, await newKey(), opts);
    return self;
  }

  /** A new signing key; the JWKS serves only it from now on (NRAS rotating its key). */
  async rotateKey(): Promise<void> {
    this.#key = await newKey();
  }

  /** Testbed fault: answer every appraisal with this HTTP status (undefined: appraise again). */
  failWith(status?: number): void {
    this.#failWith = status;
  }

  close(): Promise<void> {
    this.#server.closeAllConnections();
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }

  private async handle(req: import("node:http").IncomingMessage, res: import("node:http").ServerResponse) {
    const send = (status: number, body: unknown) => {
      res.writeHead(status, { "content-type": "application/json" });
      res.end(typeof body === "string" ? body : JSON.stringify(body));
    };
    try {
      if (req.method === "GET" && req.url === "/.well-known/jwks.json") {
        send(200, { keys: [this.#key.jwk] });
        return;
      }
      if (req.method !== "POST" || req.url !== "/v4/attest/gpu") {
        send(404, {
          error: `no ${req.method} ${req.url} here; POST /v4/attest/gpu or GET /.well-known/jwks.json`,
        });
        return;
      }
      this.requests++;
      const chunks: Buffer[] = [];
      let size = 0;
      for await (const chunk of req) {
        size += (chunk as Buffer).length;
        if (size > MAX_REQUEST_BYTES)
          throw new BadRequest(`the request is larger than ${MAX_REQUEST_BYTES} bytes`);
        chunks.push(chunk as Buffer);
      }
      if (this.#failWith !== undefined) {
        send(this.#failWith, { error: "testbed fault: the appraiser is told to fail" });
        return;
      }
      send(200, await this.appraise(Buffer.concat(chunks).toString("utf8")));
    } catch (err) {
      send(err instanceof BadRequest ? 400 : 500, { error: (err as Error).message });
    }
  }

  /** The detached EAT for an NRAS v4 request body. */
  async appraise(body: string): Promise<unknown> {
    let request: { nonce?: unknown; arch?: unknown; evidence_list?: unknown };
    try {
      request = JSON.parse(body) as typeof request;
    } catch {
      throw new BadRequest("the body is not JSON");
    }
    const { nonce, arch, evidence_list: list } = request ?? {};
    if (typeof nonce !== "string" || !/^[0-9a-fA-F]{64}$/.test(nonce))
      throw new BadRequest("nonce must be 64 hex digits");
    if (arch !== "HOPPER" && arch !== "BLACKWELL") throw new BadRequest("arch must be HOPPER or BLACKWELL");
    if (!Array.isArray(list) || list.length === 0 || list.length > MAX_DEVICES) {
      throw new BadRequest(`evidence_list must hold 1..${MAX_DEVICES} entries`);
    }
    const evidence = list.map((e: { evidence?: unknown; certificate?: unknown }, i) => {
      if (typeof e?.evidence !== "string" || typeof e?.certificate !== "string") {
        throw new BadRequest(`evidence_list[${i}] needs evidence and certificate, base64 strings`);
      }
      return {
        report: new Uint8Array(Buffer.from(e.evidence, "base64")),
        chain: Buffer.from(e.certificate, "base64").toString("utf8"),
      };
    });
    const now = new Date();
    const iat = Math.floor(now.getTime() / 1000);
    const common = {
      iss: this.issuer,
      iat,
      nbf: iat,
      exp: iat + (this.#opts.tokenTtlSeconds ?? 3600),
      eat_nonce: nonce.toLowerCase(),
    };
    const devices = await Promise.all(evidence.map((e) => this.#appraiseDevice(e, nonce, now)));
    const sign = (claims: Record<string, unknown>) =>
      new SignJWT(claims)
        .setProtectedHeader({ alg: "ES384", kid: this.#key.kid, typ: "JWT" })
        .sign(this.#key.privateKey);
    const tokens: Record<string, string> = {};
    for (const [i, d] of devices.entries()) {
      tokens[`GPU-${i}`] = await sign({ ...common, jti: randomUUID(), ...d.claims });
    }
    const overall = await sign({
      ...common,
      jti: randomUUID(),
      "x-nvidia-ver": "3.0",
      "x-nvidia-overall-att-result": devices.every((d) => d.passed),
      submods: Object.fromEntries(
        Object.entries(tokens).map(([name, jws]) => [
          name,
          ["DIGEST", ["SHA-256", createHash("sha256").update(jws).digest("hex")]],
        ]),
      ),
    });
    return [["JWT", overall], tokens];
  }

  #rimsFor(driverVersion: string, vbiosVersion: string): Promise<Required<RimDocument>[]> {
    const key = `${driverVersion}/${vbiosVersion}`;
    let rims = this.#rims.get(key);
    if (!rims) {
      rims = testbedRims({ driverVersion, vbiosVersion }, this.#opts.seed ?? TESTBED_SEED);
      this.#rims.set(key, rims);
    }
    return rims;
  }

  async #appraiseDevice(
    e: { report: Uint8Array; chain: string },
    nonce: string,
    at: Date,
  ): Promise<{ passed: boolean; claims: Record<string, unknown> }> {
    let versions: { driverVersion?: string; vbiosVersion?: string } = {};
    try {
      versions = parseAttestationReport(e.report).response.opaque;
    } catch {
      // The verifier below reports the unparseable report.
    }
    const certs = (e.chain.match(PEM) ?? []).map((pem) => {
      try {
        return new X509Certificate(pem);
      } catch {
        return undefined;
      }
    });
    const [leaf, brom] = certs;
    const rims =
      versions.driverVersion && versions.vbiosVersion
        ? await this.#rimsFor(versions.driverVersion, versions.vbiosVersion)
        : [];
    const ocspNonce = new Uint8Array(randomBytes(32));
    const ocsp = brom
      ? await testbedOcspAnswers({
          brom: { cert: { der: new Uint8Array(brom.raw) } },
          at,
          nonce: ocspNonce,
          seed: this.#opts.seed,
        })
      : { answers: [] };
    const facts = await verifyLocalEvidence({
      devices: [
        {
          report: e.report,
          certificateChain: e.chain,
          rims,
          ocspResponses: ocsp.answers,
          ocspRequestNonce: ocspNonce,
          // NRAS is not told the CC mode; the member's pre-filter judges the node's statement.
          declaredCcMode: "on",
        },
      ],
      expectedNonce: fromHex(nonce, "nonce"),
      collectedAt: at.toISOString(),
      anchors: this.#opts.anchors ?? testbedTrustAnchors(this.#opts.seed),
    });
    const device = facts.devices[0];
    const failures = evaluatePolicy(facts, APPRAISAL, { at }).devices.flatMap((d) =>
      d.failures.filter((f) => !POLICY_REASONS.has(f.reason)),
    );
    const rimIds =
      versions.driverVersion && versions.vbiosVersion
        ? testbedRimIds(versions as Required<typeof versions>)
        : undefined;
    return {
      passed: failures.length === 0,
      claims: {
        ...(leaf ? { ueid: BigInt(`0x${leaf.serialNumber}`).toString(10) } : {}),
        hwmodel: /CN=([^\n]+)/.exec(brom?.subject ?? "")?.[1] ?? "unknown",
        oemid: "5703",
        dbgstat: "disabled",
        secboot: true,
        measres: failures.some((f) => MEASUREMENT_REASONS.has(f.reason)) ? "fail" : "success",
        ...(device?.driverVersion ? { "x-nvidia-gpu-driver-version": device.driverVersion } : {}),
        ...(device?.vbiosVersion ? { "x-nvidia-gpu-vbios-version": device.vbiosVersion } : {}),
        "x-nvidia-gpu-arch-check": device?.architecture !== "unknown",
        "x-nvidia-gpu-attestation-report-parsed": !has(failures, "EvidenceMalformed"),
        "x-nvidia-gpu-attestation-report-nonce-match": !has(failures, "NonceMismatch"),
        "x-nvidia-gpu-attestation-report-signature-verified": !has(
          failures,
          "SignatureInvalid",
          "EvidenceMalformed",
        ),
        "x-nvidia-gpu-attestation-report-cert-chain-fwid-match": !has(failures, "FwidMismatch"),
        "x-nvidia-gpu-attestation-report-cert-chain": chainClaim(failures, (s) =>
          s.startsWith("device-chain"),
        ),
        "x-nvidia-gpu-driver-rim-cert-chain": chainClaim(
          failures,
          (s) => !!rimIds && s.startsWith(`rim:${rimIds.driver}`),
        ),
        "x-nvidia-gpu-vbios-rim-cert-chain": chainClaim(
          failures,
          (s) => !!rimIds && s.startsWith(`rim:${rimIds.vbios}`),
        ),
        "x-nvidia-attestation-warning": failures.length
          ? failures
              .map((f) => `${f.reason} ${f.subject}: ${f.message}`)
              .join("; ")
              .slice(0, 2000)
          : null,
      },
    };
  }
}

const MEASUREMENT_REASONS = new Set([
  "EvidenceMalformed",
  "MeasurementMismatch",
  "RimNotFound",
  "RimMalformed",
  "RimSignatureInvalid",
]);

const has = (failures: Finding[], ...reasons: string[]) => failures.some((f) => reasons.includes(f.reason));

/** NRAS's per-chain claim: certificate status and OCSP status of the chain's certificates. */
function chainClaim(failures: Finding[], about: (subject: string) => boolean): Record<string, unknown> {
  const mine = failures.filter((f) => about(f.subject));
  const status = mine.some((f) =>
    ["CertChainInvalid", "RimChainInvalid", "RimSignatureInvalid"].includes(f.reason),
  )
    ? "invalid"
    : mine.some((f) => ["CertExpired", "RimExpired"].includes(f.reason))
      ? "expired"
      : "valid";
  const revoked = mine.find((f) => f.reason === "CertRevoked");
  const ocsp = revoked ? "revoked" : mine.some((f) => f.reason.startsWith("Ocsp")) ? "unknown" : "good";
  return {
    "x-nvidia-cert-status": status,
    "x-nvidia-cert-ocsp-status": ocsp,
    "x-nvidia-cert-revocation-reason": revoked
      ? (/\(([^)]+)\)$/.exec(revoked.message)?.[1] ?? "unspecified")
      : null,
  };
}
