// The pure parts of status, attest and join: what the objects say, as a table and as JSON, and
// that whatever the objects hold (garbage included) the summaries never throw.
import type { V1Node } from "@kubernetes/client-node";
import test from "ava";
import fc from "fast-check";
import { parse } from "yaml";
import type { FederatedRun, SovereignNode } from "../../crds/types.generated.ts";
import { describeNodeAttestation, formatNodeAttestation } from "../../plugin/attest.ts";
import { PluginError } from "../../plugin/errors.ts";
import { registrationManifest, registrationYaml } from "../../plugin/join.ts";
import { formatStatus, statusReport, summarizeRegion, summarizeRun } from "../../plugin/status.ts";
import { formatTable } from "../../plugin/table.ts";
import { makeNode, makeRun } from "../operator/builders.ts";

const NOW = Date.parse("2026-11-24T12:00:00Z");

function runningRun(): FederatedRun {
  const run = makeRun("mnist", "team-a").placement({ minRegions: 3 }).obj();
  run.spec.quorum.minRegions = 2;
  run.spec.rounds = 10;
  run.status = {
    phase: "Running",
    currentRound: 4,
    regionsPlaced: 3,
    regionsReady: 2,
    roundProgress: {
      round: 4,
      phase: "GraceWindow",
      startTime: "2026-11-24T11:50:00Z",
      deliveredRegions: ["region-a", "region-c"],
      retries: 1,
    },
    regions: [
      { name: "region-a", placed: true, learnersDesired: 2, learnersReady: 2, lastDeltaRound: 4 },
      {
        name: "region-b",
        placed: true,
        learnersDesired: 2,
        learnersReady: 0,
        lastDeltaRound: 2,
        quarantined: true,
        reason: "RegionQuarantined",
        message: "deltas failed\nsignature checks",
      },
      { name: "region-c", placed: true, learnersDesired: 2, learnersReady: 2, lastDeltaRound: 4 },
    ],
    conditions: [
      {
        type: "Degraded",
        status: "True",
        reason: "RegionQuarantined",
        message: "region-b excluded",
        lastTransitionTime: "2026-11-24T11:00:00Z",
      },
      {
        type: "Ready",
        status: "True",
        reason: "LearnersReady",
        message: "",
        lastTransitionTime: "2026-11-24T11:00:00Z",
      },
    ],
  };
  return run;
}

test("a running run: round n/N, the open round's state, delivered of required, per-region state", (t) => {
  const s = summarizeRun(runningRun());
  t.deepEqual(s.round, { current: 4, total: 10 });
  t.is(s.roundState, "GraceWindow (retry 1)");
  t.deepEqual(s.quorum, { round: 4, delivered: 2, required: 2, deliveredRegions: ["region-a", "region-c"] });
  t.deepEqual(
    s.regions.map((r) => [r.name, r.deliveredThisRound, r.quarantined, r.lastDeltaRound]),
    [
      ["region-a", true, false, 4],
      ["region-b", false, true, 2],
      ["region-c", true, false, 4],
    ],
  );
  t.deepEqual(
    s.problems.map((c) => c.reason),
    ["RegionQuarantined"],
  );
});

test("between rounds the quorum is the last closed round's; a finished run's Ready=False is no problem", (t) => {
  const run = runningRun();
  run.status = {
    phase: "Succeeded",
    currentRound: 10,
    rounds: [
      { round: 10, outcome: "QuorumReached", contributingRegions: ["region-a", "region-b"] },
      { round: 9, outcome: "AllRegionsReported", contributingRegions: ["region-a", "region-b", "region-c"] },
    ],
    conditions: [
      {
        type: "Ready",
        status: "False",
        reason: "LearnersPending",
        message: "",
        lastTransitionTime: "2026-11-24T11:00:00Z",
      },
    ],
  };
  const s = summarizeRun(run);
  t.is(s.roundState, "Finished");
  t.deepEqual(s.quorum, {
    round: 10,
    delivered: 2,
    required: 2,
    deliveredRegions: ["region-a", "region-b"],
    outcome: "QuorumReached",
  });
  t.deepEqual(s.problems, []);
  // Quorum falls back to placement.minRegions when quorum.minRegions is unset.
  const pending = makeRun("p", "x").placement({ minRegions: 3 }).obj();
  t.is(summarizeRun(pending).quorum.required, 3);
  t.is(summarizeRun(pending).roundState, "NotStarted");
  t.is(summarizeRun(pending).quorum.round, null);
});

test("regions: accepted, ready with its reason, GPUs, quarantine, heartbeat and problems", (t) => {
  const node = makeNode("region-b")
    .condition("Ready", "False", "HeartbeatMissed", "last heartbeat 10m ago")
    .condition("Quarantined", "True", "InvalidDeltas", "bad signature")
    .obj();
  (node.status as NonNullable<SovereignNode["status"]>).lastHeartbeatTime = "2026-11-24T11:50:00Z";
  const s = summarizeRegion(node);
  t.is(s.ready, "False (HeartbeatMissed)");
  t.true(s.quarantined);
  t.deepEqual(s.gpus, { attested: 16, total: 16 });
  t.deepEqual(s.problems.map((c) => c.reason).sort(), ["HeartbeatMissed", "InvalidDeltas"]);
});

test("the table: one line per run, region lines, problems, and cluster text made one-line", (t) => {
  const other = makeNode("region-z").obj();
  const report = statusReport(
    [runningRun()],
    [makeNode("region-b").obj(), makeNode("region-a").obj(), other],
    "mnist",
  );
  t.deepEqual(
    report.regions.map((r) => r.name),
    ["region-a", "region-b"],
    "only the run's regions",
  );
  const text = formatStatus(report, { allNamespaces: true, now: NOW });
  const lines = text.split("\n");
  t.regex(lines[0] ?? "", /^NAMESPACE +RUN +PHASE +ROUND +ROUND STATE +QUORUM +READY +DEGRADED$/);
  t.regex(
    lines[1] ?? "",
    /^team-a +mnist +Running +4\/10 +GraceWindow \(retry 1\) +2\/2 +2\/3 +RegionQuarantined$/,
  );
  t.regex(text, /\n {2}region-b +yes +0\/2 +2 +no +yes +RegionQuarantined: deltas failed signature checks\n/);
  t.regex(text, /\n {2}Degraded=True RegionQuarantined: region-b excluded\n/);
  t.regex(
    text,
    /\nREGION +JURISDICTION +ACCEPTED +READY +ATTESTED GPUS +QUARANTINED +HEARTBEAT\nregion-a +DE +yes +True +16\/16 +no +never\n/,
  );
  const empty = formatStatus(statusReport([], "NoHubAccess: cannot list SovereignNodes"), {
    allNamespaces: false,
    now: NOW,
  });
  t.is(empty, "No FederatedRuns found.\n\nRegions not shown: NoHubAccess: cannot list SovereignNodes\n");
  t.is(formatTable(["A", "BB"], [["xxx", "y"]]), "A     BB\nxxx   y");
});

test("garbage objects: the summaries and the table never throw", (t) => {
  fc.assert(
    fc.property(fc.anything(), fc.anything(), (runish, nodeish) => {
      const run = { metadata: {}, spec: runish, status: runish } as unknown as FederatedRun;
      const node = { metadata: {}, spec: nodeish, status: nodeish } as unknown as SovereignNode;
      const report = statusReport([run], [node]);
      formatStatus(report, { allNamespaces: true, now: NOW });
      JSON.stringify(report);
      return true;
    }),
    { numRuns: 1000 },
  );
  t.pass();
});

function gpuNode(annotations: Record<string, string>, attested?: string): V1Node {
  return {
    metadata: {
      name: "gpu-0",
      labels: {
        "nvidia.com/gpu.present": "true",
        ...(attested ? { "sovereign.ai/attested": attested } : {}),
      },
      annotations,
    },
    status: { allocatable: { "nvidia.com/gpu": "8" } },
  };
}

const failed = {
  "sovereign.ai/attestation-verdict": "ab".repeat(32),
  "sovereign.ai/attestation-time": "2026-11-24T11:40:00Z",
  "sovereign.ai/attestation-evidence-time": "2026-11-24T11:39:30Z",
  "sovereign.ai/attestation-reason": "CertRevoked,MeasurementMismatch",
  "sovereign.ai/attestation-message": "OCSP says revoked",
  "sovereign.ai/attestation-policy": "cd".repeat(32),
  "sovereign.ai/quarantined-at": "2026-11-24T11:40:00Z",
};

test("attest: a quarantined node's verdict, reasons, evidence age, policy and quarantine time", (t) => {
  const a = describeNodeAttestation(gpuNode(failed, "false"), NOW);
  t.is(a.state, "Quarantined");
  t.false(a.attested);
  t.deepEqual(a.verdict?.reasons, ["CertRevoked", "MeasurementMismatch"]);
  t.is(a.verdict?.evidenceAgeSeconds, 20 * 60 + 30);
  t.is(a.verdict?.policyDigest, "cd".repeat(32));
  t.is(a.quarantinedAt, "2026-11-24T11:40:00.000Z");
  const text = formatNodeAttestation(a, NOW);
  t.regex(text, /^node gpu-0: Quarantined since 2026-11-24T11:40:00.000Z \(20m ago\)\n/);
  t.regex(
    text,
    /\n {2}verdict +FAILED at 2026-11-24T11:40:00.000Z \(20m ago\)\n {2}reasons +CertRevoked, MeasurementMismatch\n/,
  );
  t.regex(text, /\n {2}evidence +collected 2026-11-24T11:39:30.000Z, 20m old\n/);
});

test("attest: attested, never attested, and a node that is not a GPU node", (t) => {
  const passed = {
    ...failed,
    "sovereign.ai/attestation-reason": "Verified",
    "sovereign.ai/attestation-message": "8 GPUs verified",
  };
  const { "sovereign.ai/quarantined-at": _, ...noQuarantine } = passed;
  const ok = describeNodeAttestation(gpuNode(noQuarantine, "true"), NOW);
  t.is(ok.state, "Attested");
  t.true(ok.attested);
  t.deepEqual(ok.verdict?.reasons, []);
  t.is(ok.quarantinedAt, null);
  const never = describeNodeAttestation(gpuNode({}), NOW);
  t.is(never.state, "NeverAttested");
  t.is(never.verdict, null);
  t.regex(never.hint ?? "", /member operator running with an AttestationPolicy/);
  const cpu: V1Node = { metadata: { name: "cpu-0", labels: {} } };
  const err = t.throws(() => describeNodeAttestation(cpu, NOW), { instanceOf: PluginError });
  t.is(err?.reason, "NotAGpuNode");
});

test("attest garbage: any annotation values give a state, never a throw", (t) => {
  const keys = Object.keys(failed);
  fc.assert(
    fc.property(
      fc.dictionary(fc.constantFrom(...keys), fc.string()),
      fc.option(fc.string()),
      (annotations, label) => {
        const a = describeNodeAttestation(gpuNode(annotations, label ?? undefined), NOW);
        formatNodeAttestation(a, NOW);
        return ["Attested", "Quarantined", "NotAttested", "NeverAttested"].includes(a.state);
      },
    ),
    { numRuns: 1000 },
  );
  t.pass();
});

test("join: the registration is a SovereignNode without accepted, checked against the CRD schema", (t) => {
  const m = registrationManifest({ region: "region-x", jurisdiction: "DE", policy: "strict" });
  t.deepEqual(m, {
    apiVersion: "sovereign.ai/v1alpha1",
    kind: "SovereignNode",
    metadata: { name: "region-x" },
    spec: {
      jurisdiction: "DE",
      attestationPolicyRef: { name: "strict" },
      dataResidency: {
        allowedEgress: ["ModelDeltas", "TrainingMetrics"],
        acceptAggregates: true,
        checkpointLocation: "InRegion",
      },
      jetStreamDomain: "region-x",
    },
  });
  const yaml = registrationYaml(m, "region-x");
  t.regex(yaml, /^# region-x's registration at the hub/);
  t.deepEqual(parse(yaml), m);
});

test("join garbage: every bad input is a usage error naming the field", (t) => {
  const bad: [Parameters<typeof registrationManifest>[0], RegExp][] = [
    [{ region: "Region_A", jurisdiction: "DE", policy: "p" }, /must be a DNS label/],
    [{ region: "", jurisdiction: "DE", policy: "p" }, /must be a DNS label/],
    [{ region: "r", policy: "p" }, /--jurisdiction is required/],
    [{ region: "r", jurisdiction: "DE" }, /--policy is required/],
    [{ region: "r", jurisdiction: "germany", policy: "p" }, /spec.jurisdiction/],
    [
      { region: "r", jurisdiction: "DE", policy: "p", egress: "Everything" },
      /spec.dataResidency.allowedEgress/,
    ],
    [
      { region: "r", jurisdiction: "DE", policy: "p", acceptAggregates: "yes" },
      /--accept-aggregates must be true or false/,
    ],
    [{ region: "r", jurisdiction: "DE", policy: "p", checkpointLocation: "Hub" }, /Checkpoints/],
    [{ region: "r", jurisdiction: "DE", policy: "p", jetStreamDomain: "hub" }, /jetStreamDomain/],
  ];
  for (const [input, pattern] of bad) {
    const err = t.throws(() => registrationManifest(input), { instanceOf: PluginError });
    t.is(err?.exitCode, 2);
    t.regex(err?.message ?? "", pattern, JSON.stringify(input));
  }
  fc.assert(
    fc.property(
      fc.string(),
      fc.string(),
      fc.string(),
      fc.option(fc.string()),
      (region, jurisdiction, policy, egress) => {
        try {
          registrationManifest({ region, jurisdiction, policy, egress: egress ?? undefined });
          return true;
        } catch (err) {
          return err instanceof PluginError && err.exitCode === 2;
        }
      },
    ),
    { numRuns: 1000 },
  );
});
