// Local mode with a node that supplies only reports and certificate chains (what the NVML agent
// collects): the member's ReferenceFetcher gets the RIMs and OCSP answers from the testbed's
// stand-ins for NVIDIA's RIM service and OCSP responder, and the local verifier and policy judge
// the completed evidence. Also: the RIM cache, OCSP nonces, how each service failure ends, and the
// RIM service answer parser under arbitrary input.
//
// Serial: the tests share one stand-in whose switches and request logs they read.
import { X509Certificate } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { KubeConfig } from "@kubernetes/client-node";
import test from "ava";
import fc from "fast-check";
import { evaluatePolicy, type LocalDeviceEvidence, verifyLocalEvidence } from "../../attestation/mod.ts";
import { parseOcspResponse } from "../../attestation/ocsp.ts";
import {
  type MintedEvidence,
  mintTestbedEvidence,
  TESTBED_GPU_DEFAULTS,
  TESTBED_POLICY_SPEC,
  testbedRimIds,
  testbedTrustAnchors,
} from "../../attestation/testbed/mod.ts";
import type { AttestationPolicySpec } from "../../crds/types.generated.ts";
import { TestbedEvidenceSource } from "../../operator/member/attestation-testbed-source.ts";
import { EvidenceError } from "../../operator/member/evidence-source.ts";
import {
  DEFAULT_OCSP_URL,
  DEFAULT_RIM_SERVICE_URL,
  parseRimServiceAnswer,
  type ReferenceClientOptions,
  ReferenceFetcher,
  type ReferenceSettings,
  RimAnswerError,
  referenceSettings,
} from "../../operator/member/local-references.ts";
import { type MemberAttestation, memberControllers } from "../../operator/member/setup.ts";
import { FakeClock } from "../../operator/runtime/clock.ts";
import { silentLogger } from "../../operator/runtime/log.ts";
import { OperatorMetrics } from "../../operator/runtime/metrics.ts";
import { TestbedReferenceServices } from "../testbed/reference-services.ts";

let dir = "";
let services: TestbedReferenceServices;

test.before(async () => {
  dir = await mkdtemp(join(tmpdir(), "local-references-test-"));
  services = await TestbedReferenceServices.start({ dir });
});
test.after.always(async () => {
  await services?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const source = new TestbedEvidenceSource();
const nonceOf = (n: number) => new Uint8Array(32).fill(n);
const RIM_IDS = testbedRimIds(TESTBED_GPU_DEFAULTS);
/** Device chain [1..3] and the two RIM chains' L4 signers, L3 and L2. */
const TARGETS_PER_DEVICE = 7;

/** What the NVML agent returns: the report and chain, no RIM, no OCSP answer, no OCSP nonce. */
async function agentEvidence(node: string, nonce: Uint8Array, gpus = 2): Promise<LocalDeviceEvidence[]> {
  const { devices } = await source.collect({ node, nonce, gpus });
  return devices.map((d) => ({
    report: d.report,
    certificateChain: d.certificateChain,
    rims: [],
    ...(d.declaredCcMode ? { declaredCcMode: d.declaredCcMode } : {}),
  }));
}

function fetcher(settings: Partial<ReferenceSettings> = {}, opts: ReferenceClientOptions = {}) {
  return new ReferenceFetcher(
    {
      fetch: true,
      rimServiceUrl: services.rimServiceUrl,
      ocspUrl: services.ocspUrl,
      requireNonce: true,
      ...settings,
    },
    testbedTrustAnchors(),
    { ca: services.ca, timeoutMs: 5_000, ...opts },
  );
}

async function judge(
  f: ReferenceFetcher,
  devices: LocalDeviceEvidence[],
  nonce: Uint8Array,
  policy: AttestationPolicySpec = TESTBED_POLICY_SPEC,
) {
  const facts = await f.appraise({ devices, nonce, collectedAt: new Date().toISOString() });
  return evaluatePolicy(facts, policy, { at: new Date() });
}

const bromSerial = (device: LocalDeviceEvidence) => {
  const pems =
    device.certificateChain.match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g) ?? [];
  return new X509Certificate(pems[1] as string).serialNumber;
};

test.serial(
  "agent-only evidence fails without fetching and passes with the fetched references",
  async (t) => {
    const nonce = nonceOf(1);
    const devices = await agentEvidence("n-pass", nonce);
    const offline = await judge(fetcher({ fetch: false }), devices, nonce);
    t.false(offline.passed);
    t.true(offline.reasons.includes("RimNotFound"));
    t.true(offline.reasons.includes("OcspUnavailable"));

    const f = fetcher();
    const completed = await f.complete(devices);
    t.is(completed.length, 2);
    for (const d of completed) {
      t.deepEqual(d.rims.map((r) => r.id).sort(), [RIM_IDS.driver, RIM_IDS.vbios].sort());
      t.is(d.ocspResponses?.length, TARGETS_PER_DEVICE);
    }
    const verdict = await judge(f, devices, nonce);
    t.deepEqual(verdict.reasons, []);
    t.true(verdict.passed);
    t.is(verdict.devices.length, 2);
  },
);

/** What the testbed evidence source hands over: every RIM and OCSP answer, for `nonce`, fresh now. */
const mintedSet = (nonce: Uint8Array, gpus = 2): Promise<MintedEvidence[]> =>
  Promise.all(
    Array.from({ length: gpus }, (_, index) =>
      mintTestbedEvidence({ nonce, at: new Date(), gpu: { index } }),
    ),
  );

test.serial(
  "evidence that lacks nothing is passed on as it is, with no request, to the same verdict",
  async (t) => {
    const nonce = nonceOf(30);
    const minted = await mintedSet(nonce);
    const devices = minted.map((m) => m.device);
    // Nothing listens on port 1: a request would throw EvidenceUnavailable.
    const closed = "https://127.0.0.1:1";
    const f = fetcher({ rimServiceUrl: `${closed}/v1/rim/`, ocspUrl: `${closed}/ocsp` });
    const completed = await f.complete(devices);
    t.true(completed.every((d, i) => d === devices[i]));
    const collectedAt = minted[0]?.collectedAt as string;
    const plain = await verifyLocalEvidence({
      devices,
      expectedNonce: nonce,
      collectedAt,
      anchors: testbedTrustAnchors(),
    });
    const appraised = await f.appraise({ devices, nonce, collectedAt });
    t.deepEqual(appraised, plain);
    t.deepEqual(evaluatePolicy(appraised, TESTBED_POLICY_SPEC, { at: new Date() }).reasons, []);
    // Twice: the second time from the parsed-RIM and issuer caches.
    t.deepEqual(await f.appraise({ devices, nonce, collectedAt }), plain);
    t.deepEqual(f.requests, { rim: 0, ocsp: 0 });
  },
);

test.serial(
  "what a node left out of otherwise complete evidence is still fetched, and only that",
  async (t) => {
    const nonce = nonceOf(31);
    const [a, b] = (await mintedSet(nonce)) as [MintedEvidence, MintedEvidence];
    const without = (m: MintedEvidence, label: string) => m.ocspLabels.indexOf(label);
    const dropBrom = without(a, "device-chain-1");
    const garbleL3 = without(b, "rim-l3");
    t.true(dropBrom >= 0 && garbleL3 >= 0);
    const devices: LocalDeviceEvidence[] = [
      { ...a.device, ocspResponses: a.device.ocspResponses.filter((_, i) => i !== dropBrom) },
      {
        ...b.device,
        rims: b.device.rims.filter((r) => r.id !== b.rimIds.vbios),
        // An answer that does not parse is no answer: the certificate is asked about.
        ocspResponses: b.device.ocspResponses.map((r, i) =>
          i === garbleL3 ? new Uint8Array([0x30, 0x03, 1]) : r,
        ),
      },
    ];
    const start = { rim: services.rimRequests.length, ocsp: services.ocspRequests.length };
    const f = fetcher();
    const completed = await f.complete(devices);
    t.deepEqual(services.rimRequests.slice(start.rim), [b.rimIds.vbios]);
    const asked = services.ocspRequests.slice(start.ocsp);
    t.is(asked.length, 2, "one certificate per device");
    // The node's own OCSP nonce is kept, so the answers it supplied still count.
    t.deepEqual(
      asked.map((r) => r.nonce).sort(),
      [a, b].map((m) => Buffer.from(m.device.ocspRequestNonce).toString("hex")).sort(),
    );
    t.deepEqual(
      completed.map((d) => d.ocspResponses?.length),
      [a.device.ocspResponses.length, b.device.ocspResponses.length + 1],
    );
    const verdict = evaluatePolicy(
      await f.appraise({ devices, nonce, collectedAt: a.collectedAt }),
      TESTBED_POLICY_SPEC,
      { at: new Date() },
    );
    t.deepEqual(
      verdict.devices.map((d) => d.passed),
      [true, false],
    );
    // The garbled answer is still the node's; everything else is complete.
    t.deepEqual(verdict.reasons, ["EvidenceMalformed"]);
  },
);

test.serial("fetch: false makes no request at all", async (t) => {
  const nonce = nonceOf(2);
  const before = { rim: services.rimRequests.length, ocsp: services.ocspRequests.length };
  const f = fetcher({ fetch: false });
  const devices = await agentEvidence("n-offline", nonce);
  t.deepEqual(await f.complete(devices), devices);
  const verdict = await judge(f, devices, nonce);
  t.true(verdict.reasons.includes("RimNotFound"));
  t.deepEqual(f.requests, { rim: 0, ocsp: 0 });
  t.deepEqual({ rim: services.rimRequests.length, ocsp: services.ocspRequests.length }, before);
});

test.serial("RIMs are fetched once, then served from the member's cache", async (t) => {
  const f = fetcher();
  const start = services.rimRequests.length;
  t.true((await judge(f, await agentEvidence("n-cache", nonceOf(3), 3), nonceOf(3))).passed);
  // Three GPUs with the same driver and VBIOS: each RIM is asked for once.
  t.deepEqual(services.rimRequests.slice(start).sort(), [RIM_IDS.driver, RIM_IDS.vbios].sort());
  t.true((await judge(f, await agentEvidence("n-cache", nonceOf(4), 3), nonceOf(4))).passed);
  t.is(services.rimRequests.length, start + 2);
  t.is(f.requests.rim, 2);
});

test.serial(
  "with requireNonce every challenge asks OCSP afresh with a new nonce per device, echoed",
  async (t) => {
    const f = fetcher();
    const nonces: string[] = [];
    for (const n of [5, 6]) {
      const start = services.ocspRequests.length;
      const completed = await f.complete(await agentEvidence("n-nonce", nonceOf(n)));
      const seen = services.ocspRequests.slice(start);
      t.is(seen.length, 2 * TARGETS_PER_DEVICE, "no answer is reused across challenges");
      for (const d of completed) {
        const mine = Buffer.from(d.ocspRequestNonce ?? []).toString("hex");
        t.is(mine.length, 64);
        t.is(seen.filter((r) => r.nonce === mine).length, TARGETS_PER_DEVICE);
        for (const answer of d.ocspResponses ?? []) t.true(parseOcspResponse(answer).nonce?.endsWith(mine));
        nonces.push(mine);
      }
    }
    t.is(new Set(nonces).size, 4, "two devices × two challenges, four nonces");
  },
);

test.serial("without requireNonce OCSP answers are reused by CertID until their nextUpdate", async (t) => {
  const clock = new FakeClock(Date.now());
  const f = fetcher({ requireNonce: false }, { clock });
  const policy: AttestationPolicySpec = {
    ...TESTBED_POLICY_SPEC,
    ocsp: { policy: "RequireGood", requireNonce: false },
  };
  const start = services.ocspRequests.length;
  t.true((await judge(f, await agentEvidence("n-cached-ocsp", nonceOf(7)), nonceOf(7), policy)).passed);
  const first = services.ocspRequests.slice(start);
  t.true(first.length > 0 && first.length <= 2 * TARGETS_PER_DEVICE);
  t.true(first.every((r) => r.nonce === undefined));
  t.true((await judge(f, await agentEvidence("n-cached-ocsp", nonceOf(8)), nonceOf(8), policy)).passed);
  t.is(services.ocspRequests.length, start + first.length, "answers came from the cache");
  clock.advance(25 * 3_600_000);
  await f.complete(await agentEvidence("n-cached-ocsp", nonceOf(9)));
  t.is(services.ocspRequests.length, start + 2 * first.length, "past nextUpdate they are asked for again");
});

test.serial("a revoked answer from the responder fails the node with CertRevoked", async (t) => {
  const nonce = nonceOf(10);
  const devices = await agentEvidence("n-revoked", nonce);
  const serial = bromSerial(devices[1] as LocalDeviceEvidence);
  services.revoke(serial);
  t.teardown(() => services.revoke(serial, false));
  const verdict = await judge(fetcher(), devices, nonce);
  t.false(verdict.passed);
  t.deepEqual(verdict.reasons, ["CertRevoked"]);
  t.deepEqual(
    verdict.devices.map((d) => d.passed),
    [true, false],
  );
});

test.serial(
  "a RIM the service does not have gives RimNotFound, and is asked for again a minute later",
  async (t) => {
    const clock = new FakeClock(Date.now());
    const f = fetcher({}, { clock });
    services.withhold(RIM_IDS.vbios);
    t.teardown(() => services.withhold(RIM_IDS.vbios, false));
    const verdict = await judge(f, await agentEvidence("n-norim", nonceOf(11)), nonceOf(11));
    t.false(verdict.passed);
    t.true(verdict.reasons.includes("RimNotFound"));
    t.true(verdict.devices.every((d) => d.failures.some((x) => x.subject === `rim:${RIM_IDS.vbios}`)));

    services.withhold(RIM_IDS.vbios, false);
    const asked = f.requests.rim;
    await f.complete(await agentEvidence("n-norim", nonceOf(12)));
    t.is(f.requests.rim, asked, "a 404 is remembered briefly");
    clock.advance(61_000);
    t.true((await judge(f, await agentEvidence("n-norim", nonceOf(13)), nonceOf(13))).passed);
  },
);

const unavailable = (prefix: string) => (err: unknown) =>
  err instanceof EvidenceError && err.reason === "EvidenceUnavailable" && err.message.includes(`${prefix}: `);

for (const [what, service, breakIt, prefix] of [
  ["the RIM service answers 503", "rim", () => services.failWith("rim", 503), "RimServiceUnavailable"],
  ["the RIM service answers garbage", "rim", () => services.answerGarbage("rim"), "RimServiceUnavailable"],
  [
    "the OCSP responder answers 503",
    "ocsp",
    () => services.failWith("ocsp", 503),
    "OcspResponderUnavailable",
  ],
  [
    "the OCSP responder answers garbage",
    "ocsp",
    () => services.answerGarbage("ocsp"),
    "OcspResponderUnavailable",
  ],
] as const) {
  test.serial(`${what}: EvidenceUnavailable (${prefix}), retried rather than judged`, async (t) => {
    breakIt();
    t.teardown(() => {
      services.failWith(service);
      services.answerGarbage(service, false);
    });
    const err = await t.throwsAsync(fetcher().complete(await agentEvidence("n-broken", nonceOf(14))));
    t.true(unavailable(prefix)(err), err?.message);
  });
}

test.serial("unreachable services: EvidenceUnavailable with the service's prefix", async (t) => {
  const closed = "https://127.0.0.1:1";
  const devices = await agentEvidence("n-unreachable", nonceOf(15));
  const rimErr = await t.throwsAsync(fetcher({ rimServiceUrl: `${closed}/v1/rim/` }).complete(devices));
  t.true(unavailable("RimServiceUnavailable")(rimErr), rimErr?.message);
  const ocspErr = await t.throwsAsync(fetcher({ ocspUrl: `${closed}/ocsp` }).complete(devices));
  t.true(unavailable("OcspResponderUnavailable")(ocspErr), ocspErr?.message);
  // TLS trust is explicit: the system's roots do not vouch for the stand-in.
  const untrusted = await t.throwsAsync(fetcher({}, { ca: "" }).complete(devices));
  t.true(unavailable("RimServiceUnavailable")(untrusted), untrusted?.message);
});

test("the policy's settings: NVIDIA's services by default, requireNonce from ocsp", (t) => {
  t.deepEqual(referenceSettings(TESTBED_POLICY_SPEC), {
    fetch: true,
    rimServiceUrl: DEFAULT_RIM_SERVICE_URL,
    ocspUrl: DEFAULT_OCSP_URL,
    requireNonce: true,
  });
  const mirror = referenceSettings({
    ...TESTBED_POLICY_SPEC,
    ocsp: { policy: "RequireGood", requireNonce: false },
    verification: {
      mode: "Local",
      local: { fetch: false, rimServiceUrl: "https://rim.example/v1/rim/", ocspUrl: "https://ocsp.example/" },
    },
  });
  t.deepEqual(mirror, {
    fetch: false,
    rimServiceUrl: "https://rim.example/v1/rim/",
    ocspUrl: "https://ocsp.example/",
    requireNonce: false,
  });
});

const RIM_ID_ARB = fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,60}$/);

test("the RIM service answer parser throws nothing but RimAnswerError, whatever it is given", (t) => {
  const anyAnswer = fc.oneof(
    fc.string(),
    fc.uint8Array({ maxLength: 256 }),
    fc.json(),
    fc
      .record(
        {
          id: fc.oneof(RIM_ID_ARB, fc.anything()),
          rim: fc.oneof(fc.base64String(), fc.string(), fc.anything()),
          sha256: fc.anything(),
        },
        { requiredKeys: [] },
      )
      .map((o) => JSON.stringify(o) ?? "null"),
  );
  // Sizes a regexp or a decoder could choke on, around the size cap.
  for (const body of [
    JSON.stringify({ id: "NV_X", rim: `${"A".repeat(16 << 20)}!` }),
    JSON.stringify({ id: "NV_X", rim: `${"A".repeat((4 << 20) - 40)}!` }),
    "[".repeat(100_000),
  ]) {
    t.throws(() => parseRimServiceAnswer(body), { instanceOf: RimAnswerError });
  }
  fc.assert(
    fc.property(anyAnswer, fc.option(RIM_ID_ARB, { nil: undefined }), (body, requested) => {
      try {
        const doc = parseRimServiceAnswer(body, requested);
        return typeof doc.id === "string" && typeof doc.xml === "string";
      } catch (e) {
        return e instanceof RimAnswerError && e.message.startsWith("RimServiceAnswerInvalid: ");
      }
    }),
    { numRuns: 2_000 },
  );
  t.pass();
});

test("a valid RIM service answer round-trips, and one about another RIM is refused", (t) => {
  fc.assert(
    fc.property(
      RIM_ID_ARB,
      fc.string({ minLength: 1, unit: "binary" }),
      fc.dictionary(fc.string(), fc.jsonValue()),
      fc.boolean(),
      (id, xml, extra, asBytes) => {
        const body = JSON.stringify({ ...extra, id, rim: Buffer.from(xml, "utf8").toString("base64") });
        const doc = parseRimServiceAnswer(asBytes ? new Uint8Array(Buffer.from(body)) : body, id);
        if (doc.id !== id || doc.xml !== xml) return false;
        try {
          parseRimServiceAnswer(body, `${id}X`);
          return false;
        } catch (e) {
          return e instanceof RimAnswerError;
        }
      },
    ),
    { numRuns: 500 },
  );
  t.pass();
});

/** The member as setup.ts wires it for a Local policy; no API server is contacted before a node is attested. */
function localMember(local: NonNullable<AttestationPolicySpec["verification"]["local"]>) {
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: "none", server: "https://127.0.0.1:1", skipTLSVerify: true }],
    users: [{ name: "none" }],
    contexts: [{ name: "none", cluster: "none", user: "none" }],
    currentContext: "none",
  });
  const agentOnly: MemberAttestation["source"] = {
    name: "agent-only",
    collect: async ({ node, nonce }) => ({ devices: await agentEvidence(node, nonce, 1) }),
  };
  const parts = memberControllers({
    region: "region-local",
    regionKc: kc,
    hubKc: kc,
    metrics: new OperatorMetrics({ defaultMetrics: false }),
    log: silentLogger,
    registration: {
      jurisdiction: "DE",
      attestationPolicyRef: { name: "local" },
      dataResidency: {
        allowedEgress: ["ModelDeltas"],
        acceptAggregates: true,
        checkpointLocation: "InRegion",
      },
      jetStreamDomain: "region-local",
    },
    attestation: {
      policy: {
        name: "local",
        generation: 1,
        spec: { ...TESTBED_POLICY_SPEC, verification: { mode: "Local", local } },
      },
      anchors: testbedTrustAnchors(),
      source: agentOnly,
      references: { ca: services.ca, timeoutMs: 5_000 },
    },
  });
  return parts.attestation?.attester;
}

test.serial(
  "the member's Local appraisal fetches through the policy's services, and not with fetch: false",
  async (t) => {
    const fetching = localMember({
      fetch: true,
      rimServiceUrl: services.rimServiceUrl,
      ocspUrl: services.ocspUrl,
    });
    const start = services.ocspRequests.length;
    const outcome = await fetching?.attest("n-member", nonceOf(20), "admission");
    // The node object is unknown here (no informer runs), so the node itself is EvidenceIncomplete;
    // the evidence's own verdict is what the references decide.
    t.is(outcome?.kind, "verdict");
    if (outcome?.kind !== "verdict") return;
    t.deepEqual(outcome.verdict?.reasons, []);
    t.true(outcome.verdict?.passed);
    t.is(services.ocspRequests.length, start + TARGETS_PER_DEVICE);

    const offline = localMember({
      fetch: false,
      rimServiceUrl: services.rimServiceUrl,
      ocspUrl: services.ocspUrl,
    });
    const rimBefore = services.rimRequests.length;
    const refused = await offline?.attest("n-member", nonceOf(21), "admission");
    t.is(refused?.kind, "verdict");
    if (refused?.kind !== "verdict") return;
    t.true(refused.verdict?.reasons.includes("RimNotFound"));
    t.is(services.rimRequests.length, rimBefore);
  },
);
