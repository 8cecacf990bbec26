// NRAS mode of the gate: the member posts a node's evidence (collected by the same EvidenceSource
// as in Local mode, for the member's own nonce) to NVIDIA's Remote Attestation Service in its v4
// request format, gets back a detached EAT and checks it with verifyNrasToken against the JWKS
// from verification.nras.jwksUrl. The facts then go to the same policy evaluator as local ones.
//
// What NRAS does not answer is not the node's fault: an unreachable service, a bad HTTP status or a
// JWKS that cannot be fetched throw EvidenceError("EvidenceUnavailable") (NrasUnavailable /
// JwksUnavailable in the message), so the node keeps its standing and is retried with backoff.
// Whatever NRAS does answer is judged: a token that does not verify is a failed verdict.
import { decodeProtectedHeader, type JSONWebKeySet } from "jose";
import { fromHex, toHex } from "../../attestation/bytes.ts";
import { parsePemChain } from "../../attestation/certchain.ts";
import { architectureOf, type LocalDeviceEvidence, verifyNrasToken } from "../../attestation/mod.ts";
import type { NrasSettings } from "../../crds/types.generated.ts";
import { type Clock, realClock } from "../runtime/clock.ts";
import { type EvidenceAppraiser, EvidenceError } from "./evidence-source.ts";
import { httpsRequest } from "./https-client.ts";

/** NRAS v4 `POST /v4/attest/gpu` body, as NVIDIA's attestation SDK sends it. */
export interface NrasRequest {
  nonce: string;
  arch: "HOPPER" | "BLACKWELL";
  /** One entry per GPU: the SPDM report and the PEM chain (leaf first), each base64. */
  evidence_list: { evidence: string; certificate: string }[];
  claims_version: "3.0";
}

export interface NrasClientOptions {
  /** PEM of CAs to trust for the NRAS and JWKS URLs instead of the system's (a private NRAS, the testbed). */
  ca?: string;
  timeoutMs?: number;
  clock?: Clock;
  /** A token naming a kid the cached JWKS lacks refetches it, but not more often than this. Default 30 s. */
  jwksMinRefreshMs?: number;
  /** The cached JWKS is refetched after this long even when every kid is known. Default 1 h. */
  jwksMaxAgeMs?: number;
}

const MAX_TOKEN_BYTES = 4 << 20;
const MAX_JWKS_BYTES = 1 << 20;

/** NRAS's name for the architecture of the node's GPUs, from the first one's leaf certificate. */
function archOf(device: LocalDeviceEvidence): NrasRequest["arch"] {
  try {
    const [leaf] = parsePemChain(device.certificateChain, "device certificate chain");
    return leaf && architectureOf(leaf).architecture === "Blackwell" ? "BLACKWELL" : "HOPPER";
  } catch {
    // An unreadable chain is NRAS's to refuse (and then the token's claims say so), not ours.
    return "HOPPER";
  }
}

/** The NRAS v4 request for a node's GPUs answering `nonce`. */
export function nrasRequest(devices: readonly LocalDeviceEvidence[], nonce: Uint8Array): NrasRequest {
  const report = (r: LocalDeviceEvidence["report"]) =>
    typeof r === "string" ? fromHex(r.replace(/\s+/g, ""), "report") : r;
  return {
    nonce: toHex(nonce),
    arch: devices[0] ? archOf(devices[0]) : "HOPPER",
    evidence_list: devices.map((d) => ({
      evidence: Buffer.from(report(d.report)).toString("base64"),
      certificate: Buffer.from(d.certificateChain, "utf8").toString("base64"),
    })),
    claims_version: "3.0",
  };
}

/** Every kid the detached EAT's JWSs name (unreadable parts are left to verifyNrasToken to refuse). */
export function tokenKids(token: string): string[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(token);
  } catch {
    return [];
  }
  if (!Array.isArray(parsed)) return [];
  const overall = Array.isArray(parsed[0]) ? [parsed[0][1]] : [];
  const devices = parsed[1] !== null && typeof parsed[1] === "object" ? Object.values(parsed[1]) : [];
  const kids = new Set<string>();
  for (const jws of [...overall, ...devices]) {
    if (typeof jws !== "string") continue;
    try {
      const { kid } = decodeProtectedHeader(jws);
      if (typeof kid === "string") kids.add(kid);
    } catch {}
  }
  return [...kids];
}

interface HttpAnswer {
  status: number;
  body: string;
}

async function https(
  url: string,
  opts: { method: "GET" | "POST"; body?: string; ca?: string; timeoutMs: number; maxBytes: number },
): Promise<HttpAnswer> {
  const answer = await httpsRequest(url, {
    ...opts,
    accept: "application/json",
    ...(opts.body !== undefined ? { contentType: "application/json" } : {}),
  });
  return { status: answer.status, body: answer.body.toString("utf8") };
}

const snippet = (text: string) => JSON.stringify(text.slice(0, 200));

/**
 * The JWKS of verification.nras.jwksUrl, cached. A token signed with a kid the cache lacks (NRAS
 * rotated its key) refetches the set, at most once per jwksMinRefreshMs, so tokens naming made-up
 * kids cannot make the member hammer the JWKS endpoint.
 */
export class JwksCache {
  readonly #url: string;
  readonly #opts: NrasClientOptions;
  readonly #clock: Clock;
  #cached?: { jwks: JSONWebKeySet; at: number };
  /** How many times the set was fetched: to see the cache work. */
  fetches = 0;

  constructor(url: string, opts: NrasClientOptions = {}) {
    this.#url = url;
    this.#opts = opts;
    this.#clock = opts.clock ?? realClock;
  }

  async #fetch(): Promise<JSONWebKeySet> {
    this.fetches++;
    let answer: HttpAnswer;
    try {
      answer = await https(this.#url, {
        method: "GET",
        ca: this.#opts.ca,
        timeoutMs: this.#opts.timeoutMs ?? 30_000,
        maxBytes: MAX_JWKS_BYTES,
      });
    } catch (err) {
      throw new EvidenceError(
        "EvidenceUnavailable",
        `JwksUnavailable: cannot fetch the NRAS signing keys from ${this.#url}: ${(err as Error).message}; check verification.nras.jwksUrl and that the member can reach it (and trusts its certificate)`,
        { cause: err },
      );
    }
    let jwks: unknown;
    try {
      jwks = JSON.parse(answer.body);
    } catch {
      jwks = undefined;
    }
    const keys = (jwks as { keys?: unknown } | undefined)?.keys;
    if (answer.status !== 200 || !Array.isArray(keys)) {
      throw new EvidenceError(
        "EvidenceUnavailable",
        `JwksUnavailable: ${this.#url} answered ${answer.status} ${snippet(answer.body)}, not a JWKS {"keys": [...]}; check verification.nras.jwksUrl`,
      );
    }
    const set = { keys: keys.filter((k) => k !== null && typeof k === "object") } as JSONWebKeySet;
    this.#cached = { jwks: set, at: this.#clock.now() };
    return set;
  }

  /** A key set for a token naming `kids`: the cached one while it knows them all and is not too old. */
  async keysFor(kids: readonly string[]): Promise<JSONWebKeySet> {
    const cached = this.#cached;
    if (!cached) return this.#fetch();
    const age = this.#clock.now() - cached.at;
    const known = kids.every((kid) => cached.jwks.keys.some((k) => k.kid === kid));
    if (known) {
      if (age < (this.#opts.jwksMaxAgeMs ?? 3_600_000)) return cached.jwks;
      // An aged set that still knows the token's keys beats no set while the endpoint is down.
      return this.#fetch().catch(() => cached.jwks);
    }
    if (age < (this.#opts.jwksMinRefreshMs ?? 30_000)) return cached.jwks;
    return this.#fetch();
  }
}

/** The appraiser of an NRAS-mode policy: one per member (its JWKS cache is shared by all nodes). */
export class NrasAppraiser {
  readonly settings: NrasSettings;
  readonly jwks: JwksCache;
  readonly #opts: NrasClientOptions;

  constructor(settings: NrasSettings, opts: NrasClientOptions = {}) {
    this.settings = settings;
    this.#opts = opts;
    this.jwks = new JwksCache(settings.jwksUrl, opts);
  }

  readonly appraise: EvidenceAppraiser = async ({ devices, nonce, collectedAt }) => {
    const url = this.settings.url ?? "https://nras.attestation.nvidia.com/v4/attest/gpu";
    // Evidence that cannot even be put into a request is the node's answer, judged as in Local
    // mode (a failed verdict), not NRAS being unavailable (a retry that would never succeed).
    let body: string;
    try {
      body = JSON.stringify(nrasRequest(devices, nonce));
    } catch (err) {
      throw new EvidenceError(
        "EvidenceMalformed",
        `the node's evidence cannot be sent to NRAS: ${(err as Error).message}; the node agent answered something that is not an SPDM report`,
        { cause: err },
      );
    }
    let answer: HttpAnswer;
    try {
      answer = await https(url, {
        method: "POST",
        body,
        ca: this.#opts.ca,
        timeoutMs: this.#opts.timeoutMs ?? 60_000,
        maxBytes: MAX_TOKEN_BYTES,
      });
    } catch (err) {
      throw new EvidenceError(
        "EvidenceUnavailable",
        `NrasUnavailable: cannot reach NRAS at ${url}: ${(err as Error).message}; check verification.nras.url and the member's egress`,
        { cause: err },
      );
    }
    if (answer.status !== 200) {
      throw new EvidenceError(
        "EvidenceUnavailable",
        `NrasUnavailable: NRAS at ${url} answered ${answer.status} ${snippet(answer.body)}; the node is challenged again after a backoff`,
      );
    }
    const jwks = await this.jwks.keysFor(tokenKids(answer.body));
    return verifyNrasToken({ token: answer.body, jwks, expectedNonce: nonce, collectedAt });
  };
}
