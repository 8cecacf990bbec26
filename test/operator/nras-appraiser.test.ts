// The member's NRAS client against the testbed's NRAS stand-in (really appraising minted evidence)
// and against a server that answers whatever a test tells it to: the v4 request it sends, how each
// kind of answer ends (a verdict with its reason code, or EvidenceUnavailable and a retry), the
// JWKS cache, and TLS trust through an explicit CA only.
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import test from "ava";
import { evaluatePolicy, parseAttestationReport } from "../../attestation/mod.ts";
import { TESTBED_POLICY_SPEC } from "../../attestation/testbed/mod.ts";
import type { AttestationPolicySpec } from "../../crds/types.generated.ts";
import { TestbedEvidenceSource } from "../../operator/member/attestation-testbed-source.ts";
import { EvidenceError } from "../../operator/member/evidence-source.ts";
import { NrasAppraiser, nrasRequest, tokenKids } from "../../operator/member/nras-appraiser.ts";
import { TestbedNras } from "../testbed/nras-appraiser.ts";
import { ensureServingPki } from "../testbed/pki.ts";

// Set up once in `before` (ava wants every test declared synchronously).
let dir = "";
let nras: TestbedNras;
let fake: Server;
let fakeCa = "";
let fakeUrl = "";
/** What the fake server answers to a request for this path. */
let answer: (path: string) => { status: number; body: string } = () => ({ status: 200, body: "" });

test.before(async () => {
  dir = await mkdtemp(join(tmpdir(), "nras-test-"));
  nras = await TestbedNras.start({ dir: join(dir, "nras") });
  const fakePki = await ensureServingPki(join(dir, "fake"), "fake-nras");
  fakeCa = await readFile(fakePki.caCert, "utf8");
  fake = createServer(
    { key: await readFile(fakePki.serverKey), cert: await readFile(fakePki.serverCert) },
    (req, res) => {
      req.resume();
      req.on("end", () => {
        const { status, body } = answer(req.url ?? "");
        res.writeHead(status, { "content-type": "application/json" }).end(body);
      });
    },
  );
  await new Promise<void>((r) => fake.listen(0, "127.0.0.1", r));
  fakeUrl = `https://127.0.0.1:${(fake.address() as AddressInfo).port}`;
});
test.after.always(async () => {
  await nras?.close();
  await new Promise<void>((r) => (fake ? fake.close(() => r()) : r()));
  if (dir) await rm(dir, { recursive: true, force: true });
});

const policy = (issuer = nras.issuer): AttestationPolicySpec => ({
  ...TESTBED_POLICY_SPEC,
  verification: { mode: "NRAS", nras: { url: nras.url, acceptedIssuers: [issuer], jwksUrl: nras.jwksUrl } },
});
const source = new TestbedEvidenceSource();
const nonceOf = (n: number) => new Uint8Array(32).fill(n);

async function judge(
  appraiser: NrasAppraiser,
  opts: { node?: string; nonce?: Uint8Array; gpus?: number; issuer?: string } = {},
) {
  const nonce = opts.nonce ?? nonceOf(1);
  const evidence = await source.collect({ node: opts.node ?? "n1", nonce, gpus: opts.gpus ?? 2 });
  const facts = await appraiser.appraise({
    devices: evidence.devices,
    nonce,
    collectedAt: new Date().toISOString(),
  });
  return evaluatePolicy(facts, policy(opts.issuer), { at: new Date() });
}

const viaTestbed = (opts: ConstructorParameters<typeof NrasAppraiser>[1] = {}) =>
  new NrasAppraiser(
    { url: nras.url, acceptedIssuers: [nras.issuer], jwksUrl: nras.jwksUrl },
    { ca: nras.ca, ...opts },
  );

test("the request is NRAS v4's: hex nonce, arch, base64 report and PEM chain per GPU, claims 3.0", async (t) => {
  const nonce = nonceOf(7);
  const evidence = await source.collect({ node: "req", nonce, gpus: 2 });
  const body = nrasRequest(evidence.devices, nonce);
  t.deepEqual(Object.keys(body).sort(), ["arch", "claims_version", "evidence_list", "nonce"]);
  t.is(body.nonce, "07".repeat(32));
  t.is(body.arch, "HOPPER");
  t.is(body.claims_version, "3.0");
  t.is(body.evidence_list.length, 2);
  const first = body.evidence_list[0] as { evidence: string; certificate: string };
  t.deepEqual(Object.keys(first).sort(), ["certificate", "evidence"]);
  const report = parseAttestationReport(new Uint8Array(Buffer.from(first.evidence, "base64")));
  t.deepEqual([...report.request.nonce], [...nonce]);
  t.is(
    Buffer.from(first.certificate, "base64").toString("utf8"),
    evidence.devices[0]?.certificateChain ?? "",
  );
});

test("good evidence passes through the testbed appraiser; bad evidence is refused with its reason", async (t) => {
  const appraiser = viaTestbed();
  const ok = await judge(appraiser);
  t.true(ok.passed, ok.reasons.join(","));
  t.is(ok.mode, "NRAS");
  t.is(new Set(ok.devices.map((d) => d.deviceId)).size, 2, "each GPU named by its own identity");
  t.is(appraiser.jwks.fetches, 1);

  source.setFault("n1", "measurement-mismatch");
  // As NRAS does, the overall claim fails too (TokenClaimFailed) beside the GPU's own reason.
  t.deepEqual((await judge(appraiser)).reasons, ["MeasurementMismatch", "TokenClaimFailed"]);
  source.setFault("n1", "bad-signature");
  t.true((await judge(appraiser)).reasons.includes("SignatureInvalid"));
  // A replay answers another challenge: NRAS signs our nonce but says the report does not match it.
  source.setFault("n1", "replay");
  t.true((await judge(appraiser, { nonce: nonceOf(2) })).reasons.includes("NonceMismatch"));
  source.setFault("n1");
  t.is(appraiser.jwks.fetches, 1, "the JWKS is cached across appraisals");

  t.deepEqual((await judge(appraiser, { issuer: "https://nras.attestation.nvidia.com" })).reasons, [
    "TokenIssuerNotAccepted",
  ]);
});

test("a rotated NRAS key is fetched on its unknown kid; a forged kid fetches at most once per interval", async (t) => {
  // An appraiser of its own: rotating the shared one's key would fail the other tests' tokens.
  const own = await TestbedNras.start({ dir: join(dir, "rotating") });
  t.teardown(() => own.close());
  const via = (jwksMinRefreshMs: number) =>
    new NrasAppraiser(
      { url: own.url, acceptedIssuers: [own.issuer], jwksUrl: own.jwksUrl },
      { ca: own.ca, jwksMinRefreshMs },
    );
  const opts = { node: "rot", issuer: own.issuer };
  const lazy = via(60_000);
  t.true((await judge(lazy, opts)).passed);
  await own.rotateKey();
  // Within the refresh interval the cached set stands: the new kid is unknown, the token refused.
  t.deepEqual((await judge(lazy, opts)).reasons, ["TokenInvalid"]);
  t.is(lazy.jwks.fetches, 1);
  const eager = via(0);
  t.true((await judge(eager, opts)).passed);
  await own.rotateKey();
  t.true((await judge(eager, opts)).passed, "refetched for the new kid");
  t.is(eager.jwks.fetches, 2);
});

const viaFake = (jwksUrl = nras.jwksUrl) =>
  new NrasAppraiser(
    { url: `${fakeUrl}/v4/attest/gpu`, acceptedIssuers: [nras.issuer], jwksUrl },
    // Both servers' CAs: the fake's for NRAS, the stand-in's for its JWKS.
    { ca: `${fakeCa}${nras.ca}`, jwksMinRefreshMs: 0 },
  );

test("garbage from NRAS is a failed verdict with a reason code, never a pass", async (t) => {
  const nonce = nonceOf(3);
  const evidence = await source.collect({ node: "n2", nonce, gpus: 1 });
  const tokenFor = async (n: Uint8Array) =>
    JSON.stringify(await nras.appraise(JSON.stringify(nrasRequest(evidence.devices, n))));
  const cases: [string, string, string][] = [
    ["non-JSON body", "<html>gateway</html>", "TokenInvalid"],
    ["wrong shape", JSON.stringify({ token: "x" }), "TokenInvalid"],
    ["empty detached EAT", JSON.stringify([["JWT", "a.b.c"], {}]), "TokenInvalid"],
    ["token for another nonce", await tokenFor(nonceOf(4)), "NonceMismatch"],
  ];
  const forger = await TestbedNras.start({ dir: join(dir, "forger") });
  t.teardown(() => forger.close());
  cases.push([
    "token signed by an unknown key",
    JSON.stringify(await forger.appraise(JSON.stringify(nrasRequest(evidence.devices, nonce)))),
    "TokenInvalid",
  ]);
  const appraiser = viaFake();
  for (const [what, body, reason] of cases) {
    answer = () => ({ status: 200, body });
    const facts = await appraiser.appraise({
      devices: evidence.devices,
      nonce,
      collectedAt: new Date().toISOString(),
    });
    const verdict = evaluatePolicy(facts, policy(), { at: new Date() });
    t.false(verdict.passed, what);
    t.true(verdict.reasons.includes(reason as never), `${what}: ${verdict.reasons.join(",")}`);
  }
  // The genuine token for our nonce, through the same path, passes: the cases above fail for their fault.
  const good = await tokenFor(nonce);
  answer = () => ({ status: 200, body: good });
  const facts = await appraiser.appraise({
    devices: evidence.devices,
    nonce,
    collectedAt: new Date().toISOString(),
  });
  t.true(evaluatePolicy(facts, policy(), { at: new Date() }).passed);
});

test("no answer from NRAS or its JWKS is EvidenceUnavailable (retried), not a verdict", async (t) => {
  const nonce = nonceOf(5);
  const evidence = await source.collect({ node: "n3", nonce, gpus: 1 });
  const input = { devices: evidence.devices, nonce, collectedAt: new Date().toISOString() };
  const unavailable = async (appraiser: NrasAppraiser, code: RegExp) => {
    const err = await t.throwsAsync(appraiser.appraise(input), { instanceOf: EvidenceError });
    t.is(err?.reason, "EvidenceUnavailable");
    t.regex(err?.message ?? "", code);
  };
  answer = () => ({ status: 503, body: '{"error":"down"}' });
  await unavailable(viaFake(), /^EvidenceUnavailable: NrasUnavailable: .* answered 503/);
  nras.failWith(500);
  await unavailable(viaTestbed(), /NrasUnavailable: .* answered 500/);
  nras.failWith();
  const closed = new NrasAppraiser(
    { url: "https://127.0.0.1:1/v4/attest/gpu", acceptedIssuers: [nras.issuer], jwksUrl: nras.jwksUrl },
    { ca: nras.ca },
  );
  await unavailable(closed, /NrasUnavailable: cannot reach NRAS/);
  // Without the stand-in's CA the system roots do not trust it: no answer is taken from it.
  const untrusted = new NrasAppraiser({
    url: nras.url,
    acceptedIssuers: [nras.issuer],
    jwksUrl: nras.jwksUrl,
  });
  await unavailable(untrusted, /NrasUnavailable: cannot reach NRAS .*certificate/);

  const token = JSON.stringify(await nras.appraise(JSON.stringify(nrasRequest(evidence.devices, nonce))));
  answer = (path) =>
    path.startsWith("/v4/")
      ? { status: 200, body: token }
      : path === "/jwks-html"
        ? { status: 200, body: "<html/>" }
        : path === "/jwks-shape"
          ? { status: 200, body: '{"keys":"none"}' }
          : { status: 404, body: "{}" };
  await unavailable(viaFake(`${fakeUrl}/jwks-missing`), /JwksUnavailable: .* answered 404/);
  await unavailable(viaFake(`${fakeUrl}/jwks-html`), /JwksUnavailable: .*not a JWKS/);
  await unavailable(viaFake(`${fakeUrl}/jwks-shape`), /JwksUnavailable: .*not a JWKS/);
  await unavailable(viaFake("https://127.0.0.1:1/jwks.json"), /JwksUnavailable: cannot fetch/);
});

test("evidence that cannot be put into an NRAS request is EvidenceMalformed (a failed verdict, as in Local mode), and NRAS is not asked", async (t) => {
  const nonce = nonceOf(6);
  const evidence = await source.collect({ node: "n4", nonce, gpus: 1 });
  let asked = 0;
  answer = () => {
    asked++;
    return { status: 503, body: "{}" };
  };
  const [device] = evidence.devices;
  if (!device) return t.fail("no device");
  for (const report of ["not hex at all", "abc", "0g"]) {
    const err = await t.throwsAsync(
      viaFake().appraise({
        devices: [{ ...device, report }],
        nonce,
        collectedAt: new Date().toISOString(),
      }),
      { instanceOf: EvidenceError },
    );
    t.is(err?.reason, "EvidenceMalformed", report);
  }
  t.is(asked, 0);
});

test("tokenKids reads every JWS header and ignores what is not one", (t) => {
  t.deepEqual(tokenKids("not json"), []);
  t.deepEqual(tokenKids('{"a":1}'), []);
  const header = (kid: string) => Buffer.from(JSON.stringify({ alg: "ES384", kid })).toString("base64url");
  t.deepEqual(
    tokenKids(JSON.stringify([["JWT", `${header("a")}.e30.sig`], { "GPU-0": `${header("b")}.e30.x`, x: 5 }])),
    ["a", "b"],
  );
});
