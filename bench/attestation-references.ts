// `node bench/attestation-references.ts [--rounds 8] [--min-ms 1500] [--gpus 8] [--out attestation-references]`:
// what the member's Local-mode ReferenceFetcher adds to an appraisal when the node supplied every
// RIM and OCSP answer (as the testbed evidence source does), so nothing is fetched. In one process,
// in interleaved rounds (the order rotates each round, so load that drifts hits every case alike):
//   verify    verifyLocalEvidence + evaluatePolicy of an 8-GPU minted testbed evidence set (baseline);
//   appraise  the same through ReferenceFetcher.appraise + evaluatePolicy;
//   complete  ReferenceFetcher.complete alone, the fetcher's own work.
// Each case repeats within a round until --min-ms has passed (at least once). The fetcher points at
// a closed port, so a fetch would throw EvidenceUnavailable; its request counters are checked to
// stay 0, and the two verdicts are checked to be the same facts. ECDSA verifications per call are
// counted at node:crypto's entry points, as in bench/attestation-verify.ts.
// Writes bench/results/<out>.json.
import assert from "node:assert/strict";
import { mkdir, writeFile } from "node:fs/promises";
import { cpus, loadavg } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { type EvidenceFacts, evaluatePolicy, verifyLocalEvidence } from "../attestation/mod.ts";
import {
  mintTestbedEvidence,
  TESTBED_POLICY_SPEC,
  testbedTrustAnchors,
  testbedVerificationInput,
} from "../attestation/testbed/mod.ts";
import { ReferenceFetcher } from "../operator/member/local-references.ts";
import { countEcdsaVerifications } from "./ecdsa-count.ts";

const { values: args } = parseArgs({
  options: {
    rounds: { type: "string", default: "8" },
    "min-ms": { type: "string", default: "1500" },
    gpus: { type: "string", default: "8" },
    out: { type: "string", default: "attestation-references" },
  },
});
const ROUNDS = Number(args.rounds);
const MIN_MS = Number(args["min-ms"]);
const GPUS = Number(args.gpus);

const load = () => loadavg().map((x) => Number(x.toFixed(2)));
const loadBefore = load();

const at = new Date();
const nonceHex = "be".repeat(32);
const minted = await Promise.all(
  Array.from({ length: GPUS }, (_, index) => mintTestbedEvidence({ nonce: nonceHex, at, gpu: { index } })),
);
const anchors = testbedTrustAnchors();
const input = testbedVerificationInput(minted, anchors);
const nonce = new Uint8Array(Buffer.from(nonceHex, "hex"));
const evaluatedAt = new Date(minted[0]?.at ?? at);

// Nothing listens on port 1: any request is refused at once and the appraisal throws.
const CLOSED = "https://127.0.0.1:1";
const fetcher = new ReferenceFetcher(
  { fetch: true, rimServiceUrl: `${CLOSED}/v1/rim/`, ocspUrl: `${CLOSED}/ocsp`, requireNonce: true },
  anchors,
  { timeoutMs: 1_000 },
);
const assertNoFetch = () => assert.deepEqual(fetcher.requests, { rim: 0, ocsp: 0 }, "the fetcher fetched");

const judge = (facts: EvidenceFacts) => evaluatePolicy(facts, TESTBED_POLICY_SPEC, { at: evaluatedAt });
const cases = {
  verify: async () => judge(await verifyLocalEvidence(input)),
  appraise: async () =>
    judge(await fetcher.appraise({ devices: input.devices, nonce, collectedAt: input.collectedAt })),
  complete: () => fetcher.complete(input.devices),
};
type CaseName = keyof typeof cases;
const NAMES = Object.keys(cases) as CaseName[];

// The same facts either way: with nothing missing the fetcher must hand the evidence on untouched.
const plainFacts = await verifyLocalEvidence(input);
const appraisedFacts = await fetcher.appraise({
  devices: input.devices,
  nonce,
  collectedAt: input.collectedAt,
});
assert.deepEqual(appraisedFacts, plainFacts, "the fetcher changed the verdict");
const completed = await fetcher.complete(input.devices);
assert.ok(
  completed.every((d, i) => d === input.devices[i]),
  "complete() changed evidence that lacked nothing",
);
const reasons = judge(plainFacts).reasons;
assertNoFetch();
const ecdsa = {} as Record<CaseName, number>;
for (const n of NAMES) ecdsa[n] = await countEcdsaVerifications(cases[n]);
for (const n of NAMES) await cases[n](); // warm-up

async function timeCase(name: CaseName): Promise<number> {
  let runs = 0;
  const t0 = performance.now();
  do {
    await cases[name]();
    runs++;
  } while (performance.now() - t0 < MIN_MS);
  return (performance.now() - t0) / runs;
}

const rounds: { order: CaseName[]; ms: Record<CaseName, number>; load1: number }[] = [];
for (let r = 0; r < ROUNDS; r++) {
  const order = NAMES.map((_, i) => NAMES[(i + r) % NAMES.length] as CaseName);
  const ms = {} as Record<CaseName, number>;
  for (const name of order) ms[name] = await timeCase(name);
  rounds.push({ order, ms, load1: load()[0] as number });
  console.error(
    `round ${r + 1}/${ROUNDS}: ${order.map((n) => `${n} ${ms[n].toFixed(1)} ms`).join(", ")} (load ${load()[0]})`,
  );
}
assertNoFetch();

const median = (xs: readonly number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
};
const stats = (xs: readonly number[]) => ({ median: median(xs), min: Math.min(...xs), max: Math.max(...xs) });
const perCase = Object.fromEntries(NAMES.map((n) => [n, stats(rounds.map((r) => r.ms[n]))])) as Record<
  CaseName,
  ReturnType<typeof stats>
>;
// Ratios per round, then their spread: each round's cases ran back to back under the same load.
const ratios = {
  appraiseOverVerify: stats(rounds.map((r) => r.ms.appraise / r.ms.verify)),
  completeOverVerify: stats(rounds.map((r) => r.ms.complete / r.ms.verify)),
};
const loadAfter = load();

const f = (x: number, d = 1) => x.toFixed(d);
console.log(
  `${GPUS}-GPU testbed evidence, nothing missing; ${ROUNDS} interleaved rounds of >= ${MIN_MS} ms per case; ${cpus().length} CPUs, load ${loadBefore.join(" ")} -> ${loadAfter.join(" ")}`,
);
console.log("case        ms/appraisal (median, min..max)   per GPU   ECDSA");
for (const n of NAMES) {
  const s = perCase[n];
  console.log(
    `${n.padEnd(10)} ${f(s.median).padStart(9)}  (${f(s.min)}..${f(s.max)})`.padEnd(45) +
      `${f(s.median / GPUS).padStart(7)}  ${String(ecdsa[n]).padStart(6)}`,
  );
}
console.log(
  `appraise / verify: ×${f(ratios.appraiseOverVerify.median, 3)} (${f(ratios.appraiseOverVerify.min, 3)}..${f(ratios.appraiseOverVerify.max, 3)})`,
);
console.log(
  `complete / verify: ×${f(ratios.completeOverVerify.median, 3)} (${f(ratios.completeOverVerify.min, 3)}..${f(ratios.completeOverVerify.max, 3)})`,
);
console.log(
  `verdict: ${reasons.join(",") || "(passed)"}; fetcher requests ${JSON.stringify(fetcher.requests)}`,
);

const out = resolve(import.meta.dirname, "results");
await mkdir(out, { recursive: true });
const file = join(out, `${args.out}.json`);
await writeFile(
  file,
  `${JSON.stringify(
    {
      node: process.version,
      cpus: cpus().length,
      load: { before: loadBefore, after: loadAfter },
      gpus: GPUS,
      rounds: ROUNDS,
      minMsPerCase: MIN_MS,
      reasons,
      fetcherRequests: fetcher.requests,
      ecdsaPerCall: ecdsa,
      msPerCall: perCase,
      ratios,
      perRound: rounds,
    },
    null,
    2,
  )}\n`,
);
console.log(`wrote ${file}`);
