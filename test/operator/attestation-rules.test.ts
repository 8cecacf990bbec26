// The gate's decisions as table tests (pre-filter, freshness, placement, quarantine, key
// revocation), and the re-attestation loop run by the real controller on a fake clock.
import type { V1Node, V1Pod } from "@kubernetes/client-node";
import test from "ava";
import { deriveAttestationNonce } from "../../attestation/mod.ts";
import { TESTBED_POLICY_SPEC } from "../../attestation/testbed/mod.ts";
import type { AttestationPolicySpec, LearnerKey, RegionWork } from "../../crds/types.generated.ts";
import type { DeltaManifest } from "../../deltas/mod.ts";
import { learnerKeyResolver } from "../../operator/hub/setup.ts";
import { learnerKeyBound, learnerKeyFromWork, learnerKeyValidAt } from "../../operator/learner-keys.ts";
import type { AttestOutcome, MemberPolicy, NodeRecord } from "../../operator/member/attestation-attester.ts";
import {
  type NodeAttesterApi,
  nodeAttestationReconciler,
} from "../../operator/member/attestation-controller.ts";
import {
  admissionAnnotations,
  generateLearnerKey,
  learnerKeysStatus,
  MAX_REVOKED_KEYS,
} from "../../operator/member/attestation-keys.ts";
import {
  ATTESTED_NODE_ANNOTATION,
  ccPrefilter,
  chooseNode,
  effectiveMaxAgeSeconds,
  firstDueAt,
  judgeNode,
  learnersToStop,
  NODE_ANNOTATIONS,
  type NodeState,
  type NodeVerdict,
  nodeGpus,
  type PlacementCandidate,
  podGpus,
  reattestationDelayMs,
  unavailableBackoffMs,
  verdictAdmits,
} from "../../operator/member/attestation-rules.ts";
import { FakeClock } from "../../operator/runtime/clock.ts";
import { Controller } from "../../operator/runtime/controller.ts";

const T0 = Date.parse("2026-11-24T10:00:00Z");

function gpuNode(name: string, labels: Record<string, string> = {}, gpus = 8): V1Node {
  return {
    metadata: {
      name,
      labels: {
        "nvidia.com/gpu.present": "true",
        "nvidia.com/cc.capable": "true",
        "nvidia.com/cc.mode.state": "on",
        ...labels,
      },
      annotations: {},
    },
    status: { allocatable: { "nvidia.com/gpu": String(gpus) } },
  };
}

const verdict = (over: Partial<NodeVerdict> = {}): NodeVerdict => ({
  passed: true,
  reasons: [],
  message: "8 GPUs verified",
  digest: "d".repeat(64),
  evaluatedAt: T0,
  collectedAt: T0,
  policyDigest: "p",
  ...over,
});

// ---------------------------------------------------------------------------------------------
// Pre-filter

test("the GPU operator's CC labels rule nodes out for the policy's mode, never in", (t) => {
  const cases: [string, Record<string, string>, AttestationPolicySpec["ccMode"], boolean][] = [
    ["CC on, policy On", {}, "On", true],
    ["CC ready state true", { "nvidia.com/cc.ready.state": "true" }, "On", true],
    ["CC ready state false", { "nvidia.com/cc.ready.state": "false" }, "On", false],
    ["CC off", { "nvidia.com/cc.mode.state": "off" }, "On", false],
    ["not CC capable", { "nvidia.com/cc.capable": "false" }, "On", false],
    ["devtools under On", { "nvidia.com/cc.mode.state": "devtools" }, "On", false],
    ["devtools under DevTools", { "nvidia.com/cc.mode.state": "devtools" }, "DevTools", true],
    ["on under DevTools", {}, "DevTools", true],
    ["on under ProtectedPCIe", {}, "ProtectedPCIe", false],
    ["ppcie under ProtectedPCIe", { "nvidia.com/cc.mode.state": "ppcie" }, "ProtectedPCIe", true],
    ["no GPU", { "nvidia.com/gpu.present": "false" }, "On", false],
  ];
  for (const [what, labels, mode, ok] of cases) t.is(ccPrefilter(gpuNode("n", labels), mode).ok, ok, what);
  const off = ccPrefilter(gpuNode("n", { "nvidia.com/cc.mode.state": "off" }), "On");
  t.true(!off.ok && /cc\.mode\.state=off, the policy needs on/.test(off.message));
  t.is(nodeGpus(gpuNode("n", {}, 8)), 8);
  t.is(nodeGpus({ metadata: { name: "cpu" } }), 0);
});

// ---------------------------------------------------------------------------------------------
// Freshness and standing

test("a node admits learners only while its latest verdict passed and is younger than the maximum age", (t) => {
  const max = 7200;
  const cases: [string, NodeVerdict | undefined, number, string][] = [
    ["never attested", undefined, T0, "Unknown"],
    ["passed, just now", verdict(), T0, "Attested"],
    ["passed, at the limit", verdict(), T0 + max * 1000, "Attested"],
    ["passed, a second too old", verdict(), T0 + max * 1000 + 1000, "Quarantined"],
    ["failed, just now", verdict({ passed: false, reasons: ["MeasurementMismatch"] }), T0, "Quarantined"],
    [
      "failed long ago",
      verdict({ passed: false, reasons: ["CertRevoked"] }),
      T0 + 10 * max * 1000,
      "Quarantined",
    ],
  ];
  for (const [what, latest, now, state] of cases) {
    t.is(judgeNode(latest, now, max).state as string, state, what);
    t.is(verdictAdmits(latest, now, max), state === "Attested", what);
  }
  const expired = judgeNode(verdict(), T0 + 8000_000, max);
  t.deepEqual(expired.state === "Quarantined" && [expired.reasons, expired.since], [
    ["EvidenceStale"],
    T0 + max * 1000,
  ]);
  const failed = judgeNode(
    verdict({ passed: false, reasons: ["CertRevoked"], evaluatedAt: T0 + 5 }),
    T0 + 99,
    max,
  );
  t.deepEqual(failed.state === "Quarantined" && [failed.reasons, failed.since], [["CertRevoked"], T0 + 5]);
  // A run may only tighten the policy's limit.
  t.is(effectiveMaxAgeSeconds({ maxEvidenceAgeSeconds: 7200 }, 600), 600);
  t.is(effectiveMaxAgeSeconds({ maxEvidenceAgeSeconds: 7200 }, 86400), 7200);
  t.is(effectiveMaxAgeSeconds({ maxEvidenceAgeSeconds: 7200 }), 7200);
  t.false(
    verdictAdmits(verdict(), T0 + 601_000, effectiveMaxAgeSeconds({ maxEvidenceAgeSeconds: 7200 }, 600)),
  );
});

// ---------------------------------------------------------------------------------------------
// Schedule

test("re-attestation waits a period plus a share of the jitter; failures to collect back off", (t) => {
  const r = { periodSeconds: 3600, jitterSeconds: 300 };
  t.is(
    reattestationDelayMs(r, () => 0),
    3_600_000,
  );
  t.is(
    reattestationDelayMs(r, () => 1),
    3_900_000,
  );
  t.is(
    reattestationDelayMs(r, () => 0.5),
    3_750_000,
  );
  t.is(
    reattestationDelayMs(r, () => 7),
    3_900_000,
    "a bad random source cannot push past the jitter",
  );
  const backoff = [1, 2, 3, 4, 7, 20].map((n) => unavailableBackoffMs(n, r, () => 0));
  t.deepEqual(backoff, [5_000, 10_000, 20_000, 40_000, 300_000, 300_000]);
  t.is(
    unavailableBackoffMs(1, r, () => 1),
    7_500,
  );
  t.is(
    unavailableBackoffMs(30, { periodSeconds: 60, jitterSeconds: 0 }, () => 0),
    60_000,
    "never beyond the period",
  );
  // A restart keeps each node's phase: due one jittered period after its evidence.
  t.is(
    firstDueAt(undefined, "p", T0, r, () => 0.5),
    T0,
  );
  t.is(
    firstDueAt(verdict(), "p", T0 + 1000, r, () => 0.5),
    T0 + 3_750_000,
  );
  t.is(
    firstDueAt(verdict(), "another policy", T0 + 1000, r, () => 0.5),
    T0 + 1000,
  );
  t.is(
    firstDueAt(verdict(), "p", T0 + 5_000_000, r, () => 0.5),
    T0 + 5_000_000,
  );
});

/** A deterministic random source (mulberry32), so the simulation is the same every run. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

/** The attester seam, in memory: every challenge passes unless the node is marked unreachable. */
class FakeAttester implements NodeAttesterApi {
  readonly policy: MemberPolicy;
  readonly records = new Map<string, NodeRecord>();
  readonly attestedAt = new Map<string, number[]>();
  readonly enforced = new Map<string, { at: number; state: string }[]>();
  readonly unreachable = new Set<string>();
  readonly clock: FakeClock;

  constructor(clock: FakeClock, spec: AttestationPolicySpec) {
    this.clock = clock;
    this.policy = { name: "p", generation: 1, spec };
  }
  record(name: string): NodeRecord {
    let rec = this.records.get(name);
    if (!rec) {
      rec = { dueAt: this.clock.now(), errors: 0 };
      this.records.set(name, rec);
    }
    return rec;
  }
  forget(name: string): void {
    this.records.delete(name);
  }
  state(name: string) {
    return judgeNode(this.record(name).latest, this.clock.now(), this.policy.spec.maxEvidenceAgeSeconds);
  }
  withNode<T>(_name: string, fn: () => Promise<T>): Promise<T> {
    return fn();
  }
  async attest(name: string): Promise<AttestOutcome> {
    const now = this.clock.now();
    this.attestedAt.set(name, [...(this.attestedAt.get(name) ?? []), now]);
    const rec = this.record(name);
    if (this.unreachable.has(name)) {
      rec.errors++;
      return { kind: "unavailable", message: "down" };
    }
    rec.errors = 0;
    rec.latest = verdict({ evaluatedAt: now, collectedAt: now });
    return { kind: "verdict", passed: true, node: rec.latest };
  }
  async enforce(name: string) {
    const state = this.state(name);
    this.enforced.set(name, [
      ...(this.enforced.get(name) ?? []),
      { at: this.clock.now(), state: state.state },
    ]);
    return state;
  }
}

async function simulate(opts: {
  nodes: number;
  spec: AttestationPolicySpec;
  hours: number;
  random: () => number;
  during?: (
    clock: FakeClock,
    attester: FakeAttester,
    controller: Controller,
    nodes: Map<string, V1Node>,
  ) => void;
}) {
  const clock = new FakeClock(T0);
  const attester = new FakeAttester(clock, opts.spec);
  const nodes = new Map(Array.from({ length: opts.nodes }, (_, i) => [`gpu-${i}`, gpuNode(`gpu-${i}`)]));
  const controller = new Controller({
    name: "attestation",
    workers: 2,
    clock,
    reconcile: nodeAttestationReconciler({
      attester,
      getNode: (n) => nodes.get(n),
      clock,
      random: opts.random,
    }),
  });
  const abort = new AbortController();
  const running = controller.run(abort.signal);
  for (const name of nodes.keys()) controller.enqueue(name);
  const step = 5_000;
  for (let t = 0; t < opts.hours * 3_600_000; t += step) {
    for (let i = 0; i < 4; i++) await new Promise((r) => setImmediate(r));
    opts.during?.(clock, attester, controller, nodes);
    for (let i = 0; i < 4; i++) await new Promise((r) => setImmediate(r));
    clock.advance(step);
  }
  abort.abort();
  await running;
  return { attester, clock };
}

test("every node is re-attested once per period plus jitter, and the nodes' challenges spread out", async (t) => {
  const spec = { ...TESTBED_POLICY_SPEC, reattestation: { periodSeconds: 3600, jitterSeconds: 300 } };
  const { attester } = await simulate({ nodes: 40, spec, hours: 6, random: seeded(7) });
  const buckets = new Map<number, number>();
  for (const [node, times] of attester.attestedAt) {
    t.true(times.length >= 5 && times.length <= 6, `${node}: ${times.length} challenges in 6 h`);
    for (let i = 1; i < times.length; i++) {
      const gap = ((times[i] as number) - (times[i - 1] as number)) / 1000;
      t.true(gap >= 3600 && gap <= 3905, `${node}: ${gap} s between challenges`);
    }
    for (const at of times.slice(1)) buckets.set(at, (buckets.get(at) ?? 0) + 1);
  }
  // All 40 were first challenged together at start; from the first period on, jitter spreads
  // them over the window (5 s steps): never more than a handful at the same moment.
  const worst = Math.max(...buckets.values());
  t.log(`most nodes challenged in one 5 s step after the start: ${worst} of 40`);
  t.true(worst <= 5, `${worst} nodes challenged at once`);

  // Without jitter the herd never disperses: the same check fails.
  const herd = await simulate({
    nodes: 40,
    spec: { ...spec, reattestation: { periodSeconds: 3600, jitterSeconds: 0 } },
    hours: 2,
    random: seeded(7),
  });
  const herdBuckets = new Map<number, number>();
  for (const times of herd.attester.attestedAt.values()) {
    for (const at of times.slice(1)) herdBuckets.set(at, (herdBuckets.get(at) ?? 0) + 1);
  }
  t.is(Math.max(...herdBuckets.values()), 40);
});

test("a CC label change or the reattest annotation challenges the node at once", async (t) => {
  const spec = { ...TESTBED_POLICY_SPEC, reattestation: { periodSeconds: 3600, jitterSeconds: 300 } };
  let touched = false;
  const { attester } = await simulate({
    nodes: 3,
    spec,
    hours: 0.5,
    random: seeded(1),
    during: (clock, _a, controller, nodes) => {
      if (!touched && clock.now() >= T0 + 600_000) {
        touched = true;
        const n1 = nodes.get("gpu-1") as V1Node;
        nodes.set("gpu-1", {
          ...n1,
          metadata: { ...n1.metadata, annotations: { [NODE_ANNOTATIONS.reattest]: "1" } },
        });
        const n2 = nodes.get("gpu-2") as V1Node;
        nodes.set("gpu-2", {
          ...n2,
          metadata: {
            ...n2.metadata,
            labels: { ...n2.metadata?.labels, "nvidia.com/cc.ready.state": "true" },
          },
        });
        controller.enqueue("gpu-1");
        controller.enqueue("gpu-2");
        controller.enqueue("gpu-0"); // an unrelated event changes nothing
      }
    },
  });
  t.deepEqual(attester.attestedAt.get("gpu-0"), [T0]);
  t.deepEqual(attester.attestedAt.get("gpu-1"), [T0, T0 + 600_000]);
  t.deepEqual(attester.attestedAt.get("gpu-2"), [T0, T0 + 600_000]);
});

test("a verdict reached to admit a learner restarts the node's period: no second challenge for the loop", async (t) => {
  const spec = { ...TESTBED_POLICY_SPEC, reattestation: { periodSeconds: 3600, jitterSeconds: 300 } };
  let admitted = false;
  const { attester } = await simulate({
    nodes: 2,
    spec,
    hours: 1.6,
    random: () => 0,
    during: (clock, a) => {
      if (!admitted && clock.now() >= T0 + 1_200_000) {
        admitted = true;
        void a.attest("gpu-0"); // what the gate does, under the node's lock, to admit a learner
      }
    },
  });
  t.deepEqual(
    attester.attestedAt.get("gpu-0"),
    [T0, T0 + 1_200_000, T0 + 4_800_000],
    "not at 3600 s, but a period after the admission",
  );
  t.deepEqual(attester.attestedAt.get("gpu-1"), [T0, T0 + 3_600_000]);
});

test("a node whose agent stops answering is retried with backoff and quarantined when its evidence expires", async (t) => {
  const spec = {
    ...TESTBED_POLICY_SPEC,
    maxEvidenceAgeSeconds: 3600,
    reattestation: { periodSeconds: 1800, jitterSeconds: 0 },
  };
  const { attester } = await simulate({
    nodes: 1,
    spec,
    hours: 1.5,
    random: () => 0,
    during: (clock, a) => {
      if (clock.now() >= T0 + 60_000) a.unreachable.add("gpu-0");
    },
  });
  const times = (attester.attestedAt.get("gpu-0") ?? []).map((x) => (x - T0) / 1000);
  // First at 0, then due at 1800 s: failing, it is retried after 5, 10, 20, 40, 80, 160, 300, 300… s.
  t.deepEqual(times.slice(0, 9), [0, 1800, 1805, 1815, 1835, 1875, 1955, 2115, 2415]);
  const enforced = attester.enforced.get("gpu-0") ?? [];
  const quarantined = enforced.find((e) => e.state === "Quarantined");
  t.truthy(quarantined, "quarantined once the evidence aged out");
  // Evidence from T0 expires at 3600 s; the loop requeues for that moment, not only for the next retry.
  t.true(
    ((quarantined?.at ?? 0) - T0) / 1000 <= 3605,
    `quarantined at ${((quarantined?.at ?? 0) - T0) / 1000} s`,
  );
  t.true(enforced.filter((e) => (e.at - T0) / 1000 < 3600).every((e) => e.state === "Attested"));
});

// ---------------------------------------------------------------------------------------------
// Placement

const candidate = (over: Partial<PlacementCandidate> & { name: string }): PlacementCandidate => ({
  state: { state: "Attested", ageSeconds: 10, expiresAt: T0 + 1e9 },
  prefilter: { ok: true },
  gpus: 8,
  usedGpus: 0,
  learners: 0,
  ...over,
});

test("a learner goes to an attested node with room, spreading learners; otherwise every node says why not", (t) => {
  const unknown = { state: "Unknown" } as const;
  const quarantined: NodeState = { state: "Quarantined", since: T0, reasons: ["CertRevoked"], message: "" };
  const cases: [string, PlacementCandidate[], number, string | RegExp][] = [
    ["the attested one first", [candidate({ name: "a", state: unknown }), candidate({ name: "b" })], 2, "b"],
    ["an unknown one if nothing is attested", [candidate({ name: "a", state: unknown })], 2, "a"],
    [
      "fewest learners",
      [candidate({ name: "a", learners: 1, usedGpus: 2 }), candidate({ name: "b" })],
      2,
      "b",
    ],
    ["then most free GPUs", [candidate({ name: "a", gpus: 4 }), candidate({ name: "b" })], 2, "b"],
    ["then by name", [candidate({ name: "b" }), candidate({ name: "a" })], 2, "a"],
    [
      "not a quarantined one",
      [candidate({ name: "a", state: quarantined })],
      2,
      /a: quarantined \(CertRevoked\)/,
    ],
    ["not one without room", [candidate({ name: "a", usedGpus: 7 })], 2, /a: 1 of 8 GPUs free, need 2/],
    [
      "not an unreachable one (yet)",
      [candidate({ name: "a", unreachableUntil: T0 + 5000 })],
      2,
      /a: agent unreachable, next try 2026-11-24T10:00:05/,
    ],
    [
      "not one the GPU operator calls not CC-ready",
      [candidate({ name: "a", prefilter: { ok: false, message: "nvidia.com/cc.mode.state=off" } })],
      2,
      /a: not CC-ready/,
    ],
    ["no GPU nodes at all", [], 1, /the region has no GPU node/],
  ];
  for (const [what, candidates, need, want] of cases) {
    const choice = chooseNode(candidates, need, T0);
    if (typeof want === "string") t.is(choice.node, want, what);
    else {
      t.is(choice.node, undefined, what);
      t.true(
        choice.node === undefined && choice.reason === "NoAttestedNode" && want.test(choice.message),
        what,
      );
    }
  }
  t.is(
    chooseNode([candidate({ name: "a", unreachableUntil: T0 - 1 })], 1, T0).node,
    "a",
    "after the backoff",
  );
});

const learner = (
  name: string,
  over: { node?: string; pinned?: string; phase?: string; gpus?: number } = {},
): V1Pod => ({
  metadata: {
    name,
    namespace: "sovereign-learners",
    annotations: over.pinned ? { [ATTESTED_NODE_ANNOTATION]: over.pinned } : {},
  },
  spec: {
    nodeName: over.node,
    containers: [{ name: "l", resources: { limits: { "nvidia.com/gpu": String(over.gpus ?? 2) } } }],
  },
  status: { phase: over.phase ?? "Running" },
});

test("a quarantine stops the learners bound or pinned to the node, and no others", (t) => {
  const pods = [
    learner("on-a", { node: "a" }),
    learner("pinned-a", { pinned: "a" }),
    learner("on-b", { node: "b" }),
    learner("done-on-a", { node: "a", phase: "Succeeded" }),
    learner("nowhere"),
  ];
  t.deepEqual(
    learnersToStop("a", pods).map((p) => p.metadata?.name),
    ["on-a", "pinned-a"],
  );
  t.is(podGpus(learner("x", { gpus: 4 })), 4);
});

// ---------------------------------------------------------------------------------------------
// Learner keys

function admitted(name: string, node: string, attestedAt: string, runUid: string, round = 3) {
  const key = generateLearnerKey();
  const challenge = Buffer.alloc(32, name.length);
  const nonce = deriveAttestationNonce({
    hubChallenge: challenge,
    runId: runUid,
    round,
    learnerPublicKey: key.raw,
  });
  const pod: V1Pod = {
    metadata: {
      name,
      annotations: admissionAnnotations({
        publicKey: key.publicKey,
        node,
        verdictDigest: "e".repeat(64),
        policyDigest: "f".repeat(64),
        attestedAt,
        nonce: Buffer.from(nonce).toString("hex"),
        challenge: challenge.toString("base64url"),
        round,
      }),
    },
    spec: { nodeName: node, containers: [] },
  };
  return { pod, key };
}

test("learner keys: listed on admission, revoked from the quarantine or when the pod goes, kept for late deltas", (t) => {
  const uid = "6b1f2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
  const a = admitted("learner-0", "gpu-a", "2026-11-24T10:00:00Z", uid);
  const b = admitted("learner-1", "gpu-b", "2026-11-24T10:00:01Z", uid);
  const none = () => undefined;
  let keys = learnerKeysStatus(undefined, [a.pod, b.pod], none, T0);
  t.deepEqual(
    keys.map((k) => [k.learner, k.node, k.revokedAt]),
    [
      ["learner-0", "gpu-a", undefined],
      ["learner-1", "gpu-b", undefined],
    ],
  );
  const work = { status: { learnerKeys: keys } };
  const entry = learnerKeyFromWork(work, "learner-0") as LearnerKey;
  t.is(entry.publicKey, a.key.publicKey);
  t.true(learnerKeyBound(entry, uid), "the listed nonce commits to the listed key, run and round");
  t.false(learnerKeyBound(entry, "another-run"));
  t.false(learnerKeyBound({ ...entry, publicKey: b.key.publicKey }, uid), "nor to another learner's key");
  t.false(learnerKeyBound({ ...entry, round: 4 }, uid));
  t.is(learnerKeyFromWork(work, "learner-0", b.key.publicKey), undefined, "a key listed for another learner");

  // gpu-a fails at 10:05: learner-0's key is revoked from 10:05 while its pod still runs…
  const quarantine = (node: string) =>
    node === "gpu-a" ? { at: T0 + 300_000, reasons: ["MeasurementMismatch"] } : undefined;
  keys = learnerKeysStatus(keys, [a.pod, b.pod], quarantine, T0 + 310_000);
  const revoked = keys.find((k) => k.learner === "learner-0") as LearnerKey;
  t.is(revoked.revokedAt, "2026-11-24T10:05:00Z");
  t.is(revoked.revokedReason, "NodeQuarantined:MeasurementMismatch");
  t.true(learnerKeyValidAt(revoked, T0 + 299_000), "a delta that arrived before the failure still counts");
  t.false(learnerKeyValidAt(revoked, T0 + 300_000), "one after it does not");
  t.true(learnerKeyValidAt(keys.find((k) => k.learner === "learner-1") as LearnerKey, T0 + 10_000_000));

  // The hub's resolver: a delta not yet accepted needs a key valid now; one accepted before the
  // revocation (its region recorded as delivered) keeps counting when the round is aggregated.
  const quarantinedWork = {
    spec: { region: "region-a", run: { namespace: "ns", name: "run", uid } },
    status: { learnerKeys: keys },
  } as unknown as RegionWork;
  const resolve = learnerKeyResolver(
    false,
    (_region, r) => (r.uid === uid ? quarantinedWork : undefined),
    () => T0 + 310_000,
  );
  const manifest = { learner: "learner-0", learnerKey: a.key.publicKey } as DeltaManifest;
  const run = { namespace: "ns", name: "run", uid };
  t.is(resolve("region-a", manifest, run), undefined, "a new delta under a revoked key is refused");
  t.truthy(resolve("region-a", manifest, run, { acceptedBefore: true }), "an accepted one still aggregates");
  t.is(
    resolve("region-a", manifest, { ...run, uid: "another-run" }, { acceptedBefore: true }),
    undefined,
    "nor for another run of the same name",
  );

  // …and stays revoked (with the quarantine's time) after the pod is deleted; the pod of the
  // same name comes back on gpu-b with a new key, admitted after the quarantine: valid.
  const again = admitted("learner-0", "gpu-b", "2026-11-24T10:06:00Z", uid);
  keys = learnerKeysStatus(keys, [again.pod, b.pod], quarantine, T0 + 400_000);
  const zero = keys.filter((k) => k.learner === "learner-0");
  t.deepEqual(
    zero.map((k) => [k.publicKey === again.key.publicKey, k.revokedAt ?? "valid"]),
    [
      [false, "2026-11-24T10:05:00Z"],
      [true, "valid"],
    ],
  );
  t.is(learnerKeyFromWork({ status: { learnerKeys: keys } }, "learner-0")?.publicKey, again.key.publicKey);

  // A pod deleted for another reason (the work shrank): revoked from now.
  keys = learnerKeysStatus(keys, [again.pod], quarantine, T0 + 500_000);
  const gone = keys.find((k) => k.learner === "learner-1") as LearnerKey;
  t.deepEqual([gone.revokedAt, gone.revokedReason], ["2026-11-24T10:08:20Z", "LearnerDeleted"]);
  // A quarantine older than the key's admission does not revoke it.
  const early = () => ({ at: T0 - 1, reasons: ["CertRevoked"] });
  t.is(learnerKeysStatus(undefined, [again.pod], early, T0)[0]?.revokedAt, undefined);

  // Revoked keys are kept, but not for ever.
  const many: LearnerKey[] = Array.from({ length: MAX_REVOKED_KEYS + 10 }, (_, i) => ({
    ...(zero[0] as LearnerKey),
    publicKey: `ed25519:${String(i).padStart(43, "A")}`,
    revokedAt: new Date(T0 + i * 1000).toISOString(),
  }));
  const kept = learnerKeysStatus(many, [], none, T0);
  t.is(kept.length, MAX_REVOKED_KEYS);
  t.false(
    kept.some((k) => k.revokedAt === new Date(T0).toISOString()),
    "the oldest go first",
  );
});
