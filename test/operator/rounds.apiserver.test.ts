// Rounds end to end on the testbed (federation.ts): the hub places a run on three regions, opens
// round 1 once the initial model is published, closes rounds on quorum after the grace window,
// publishes the aggregate, survives a restart, quarantines and suspends, folds late deltas,
// and starts afresh when a run is re-created under its name.
import { CoreV1Api, PatchStrategy, setHeaderOptions } from "@kubernetes/client-node";
import { Objm } from "@nats-io/obj";
import test from "ava";
import { exportAuditLog, trustedKey, verifyAuditExport } from "../../attestation/audit/mod.ts";
import type { FederatedRun } from "../../crds/types.generated.ts";
import { collectBytes, readSafetensors, writeSafetensors } from "../../deltas/mod.ts";
import { regionNamespace } from "../../operator/hub/region-access.ts";
import { RoundCoordinator, type RoundSettings } from "../../operator/hub/round-coordinator.ts";
import { silentLogger } from "../../operator/runtime/log.ts";
import {
  fetchGlobalModel,
  listRegionDeltas,
  MODEL_DIGEST_METADATA,
  modelObjectName,
  publishGlobalModel,
  removeRunBuckets,
  runModelBucket,
} from "../../transport/mod.ts";
import { gaussian } from "../deltas/helpers.ts";
import { eventually, uniqueName } from "../testbed/harness.ts";
import { RunBuilder } from "./builders.ts";
import { ELEMENTS, federation, GROUP, SHAPE } from "./federation.ts";

test("rounds close on quorum after the grace window, publish the token-weighted FedAvg, survive a hub restart and finish", async (t) => {
  t.timeout(4 * 60_000);
  const {
    custom,
    ns,
    regions,
    hubNc,
    metrics,
    audit,
    auditStore,
    auditKey,
    cleanup,
    startHub,
    publisher,
    deltaOf,
    admin,
    policy,
  } = await federation(t);
  let stopHub = await startHub();

  // The run, and its initial model (round-0) uploaded by the user.
  const runName = uniqueName("fedavg");
  const run = new RunBuilder(runName, ns).placement({ minRegions: 2 }).obj() as FederatedRun;
  run.spec.attestation = { policyRef: { name: policy } };
  run.spec.rounds = 2;
  run.spec.quorum = { minRegions: 2, graceWindowSeconds: 3, maxRoundSeconds: 120, lateDeltas: "Discard" };
  await custom.createNamespacedCustomObject({ ...GROUP, plural: "federatedruns", namespace: ns, body: run });
  cleanup.push(() => removeRunBuckets(hubNc, { namespace: ns, run: runName }));
  const getRun = async () =>
    (await custom.getNamespacedCustomObject({
      ...GROUP,
      plural: "federatedruns",
      namespace: ns,
      name: runName,
    })) as FederatedRun;
  const waiting = await eventually(async () => {
    const c = (await getRun()).status?.conditions?.find((x) => x.type === "Progressing");
    return c?.reason === "WaitingForModel" ? c : undefined;
  }, "Progressing=False WaitingForModel before the initial model exists");
  t.regex(waiting.message, /round-0/);

  const initial = gaussian(ELEMENTS, 0.1, 1);
  await publishGlobalModel(
    hubNc,
    { namespace: ns, run: runName, round: 0 },
    writeSafetensors([{ name: "w", dtype: "F32", shape: SHAPE, data: new Uint8Array(initial.buffer) }]),
  );
  await eventually(
    async () => ((await getRun()).status?.roundProgress?.round === 1 ? true : undefined),
    "round 1 open",
  );

  // Learners: each region's delta, signed by its learner's key.
  const publish = publisher(runName);
  const [a, b, c] = regions as [(typeof regions)[0], (typeof regions)[0], (typeof regions)[0]];
  const model0 = await fetchGlobalModel(hubNc, { namespace: ns, run: runName, round: 0 });
  await collectBytes(model0.data);

  // Round 1: a and b deliver (1000 and 3000 tokens), c stays silent.
  const opened = Date.now();
  await publish(a, 0, 1, 1000, model0.digest);
  await publish(b, 1, 1, 3000, model0.digest);
  const afterRound1 = await eventually(
    async () => {
      const s = (await getRun()).status;
      return s?.rounds?.find((x) => x.round === 1) ? s : undefined;
    },
    "round 1 closed",
    60_000,
  );
  const closedAfter = (Date.now() - opened) / 1000;
  const r1 = afterRound1.rounds?.find((x) => x.round === 1);
  t.is(r1?.outcome, "QuorumReached");
  t.deepEqual(r1?.contributingRegions, [a.name, b.name].sort());
  t.deepEqual(r1?.lateRegions, [c.name]);
  t.true(
    closedAfter >= 3,
    `closed ${closedAfter.toFixed(1)} s after the deltas, not before the 3 s grace window`,
  );
  t.is(afterRound1.currentRound, 2);
  t.is(afterRound1.conditions?.find((x) => x.type === "Degraded")?.reason, "RegionsLate");

  // The published model is base + Σ tokens·Δ / Σ tokens, computed here independently.
  const model1 = await fetchGlobalModel(hubNc, { namespace: ns, run: runName, round: 1 });
  t.is(model1.digest, r1?.aggregateDigest ?? "");
  const published = new Float32Array(
    new Uint8Array((await readSafetensors(model1.data)).tensors.get("w")?.bytes ?? []).buffer,
  );
  const da = deltaOf(0, 1);
  const db = deltaOf(1, 1);
  let worst = 0;
  for (let i = 0; i < ELEMENTS; i++) {
    const expected = (initial[i] as number) + (1000 * (da[i] as number) + 3000 * (db[i] as number)) / 4000;
    worst = Math.max(worst, Math.abs((published[i] as number) - expected));
  }
  t.true(worst < 1e-6, `largest difference from the reference FedAvg: ${worst}`);

  // Round 2: a and b deliver; the hub restarts; c sends a tampered delta, then a good one.
  await eventually(
    async () => ((await getRun()).status?.roundProgress?.round === 2 ? true : undefined),
    "round 2 open",
  );
  await publish(a, 0, 2, 500, model1.digest);
  await publish(b, 1, 2, 500, model1.digest);
  await eventually(
    async () => ((await getRun()).status?.roundProgress?.deliveredRegions?.length === 2 ? true : undefined),
    "a and b delivered round 2",
  );
  await stopHub();
  stopHub = await startHub();
  await publish(c, 2, 2, 500, model1.digest, true);
  await publish(c, 2, 2, 500, model1.digest);
  const done = await eventually(
    async () => {
      const s = (await getRun()).status;
      return s?.phase === "Succeeded" ? s : undefined;
    },
    "the run succeeded",
    60_000,
  );
  const r2 = done.rounds?.find((x) => x.round === 2);
  t.is(r2?.outcome, "AllRegionsReported");
  t.deepEqual(r2?.contributingRegions, regions.map((r) => r.name).sort());
  t.is(done.conditions?.find((x) => x.type === "Progressing")?.reason, "RunCompleted");
  t.falsy(done.roundProgress);
  const text = await metrics.registry.metrics();
  t.regex(
    text,
    new RegExp(`sovereign_deltas_refused_total\\{region="${c.name}",reason="ManifestDigestMismatch"\\} 1`),
  );
  // Reasons no delta was refused for are there at 0, so the first such refusal shows in increase().
  t.regex(text, new RegExp(`sovereign_deltas_refused_total\\{region="${c.name}",reason="DeltaTooLate"\\} 0`));
  t.regex(
    text,
    new RegExp(`sovereign_rounds_total\\{namespace="${ns}",run="${runName}",outcome="QuorumReached"\\} 1`),
  );

  // What an auditor gets: every accepted and refused delta and each closed round, in a chain
  // that verifies offline.
  await audit.checkpoint();
  const lines: string[] = [];
  for await (const line of exportAuditLog(auditStore)) lines.push(line);
  const report = verifyAuditExport(lines.join(""), { trustedKeys: [trustedKey(auditKey)] });
  t.true(report.ok, JSON.stringify(report.failure));
  const kinds = lines.map(
    (l) => JSON.parse(l) as { kind: string; body: { reason?: string; outcome?: string } },
  );
  t.is(kinds.filter((e) => e.kind === "DeltaAccepted").length, 5);
  t.deepEqual(
    kinds.filter((e) => e.kind === "DeltaRefused").map((e) => e.body.reason),
    ["ManifestDigestMismatch"],
  );
  t.deepEqual(
    kinds.filter((e) => e.kind === "RoundClosed").map((e) => e.body.outcome),
    ["QuorumMet", "QuorumMet"],
  );

  // What a person sees: the round Events on the run.
  const events = await admin
    .makeApiClient(CoreV1Api)
    .listNamespacedEvent({ namespace: ns, fieldSelector: `involvedObject.name=${runName}` });
  const reasons = events.items.map((e) => e.reason);
  for (const reason of ["RoundOpened", "QuorumReached", "AllRegionsReported", "RoundAggregated"])
    t.true(reasons.includes(reason), `${reason} in ${reasons.join(", ")}`);
});

test("a DiLoCo run with a coordinate-median aggregator applies the outer Nesterov step from the median, keeping the momentum across rounds", async (t) => {
  t.timeout(4 * 60_000);
  const { ns, regions, hubNc, startHub, startRun, publisher, deltaOf, getRun, roundOpen } =
    await federation(t);
  await startHub();
  const { runName, initial } = await startRun(t, "diloco", {
    minRegions: 3,
    rounds: 2,
    seed: 2,
    algorithm: {
      type: "DiLoCo",
      diloco: { innerSteps: 10, outerLearningRate: 0.7, outerMomentum: 0.9, nesterov: true },
      robustAggregator: { type: "CoordinateMedian" },
    },
    quorum: { minRegions: 3, graceWindowSeconds: 0, maxRoundSeconds: 120, lateDeltas: "Discard" },
  });
  const publish = publisher(runName);

  // Reference: PyTorch's SGD with Nesterov on g = −median(Δ), in float64 then rounded as fp32 would be.
  const lr = 0.7;
  const mu = 0.9;
  let theta = Float64Array.from(initial);
  let buf: Float64Array | undefined;
  const median3 = (x: number, y: number, z: number) => x + y + z - Math.min(x, y, z) - Math.max(x, y, z);
  for (const round of [1, 2]) {
    await roundOpen(runName, round);
    const base = await fetchGlobalModel(hubNc, { namespace: ns, run: runName, round: round - 1 });
    await collectBytes(base.data);
    for (const [i, r] of regions.entries()) await publish(r, i, round, 1000 * (i + 1), base.digest);
    const status = await eventually(async () => {
      const s = (await getRun(runName)).status;
      return s?.rounds?.find((x) => x.round === round) ? s : undefined;
    }, `round ${round} closed`);
    t.is(status.rounds?.find((x) => x.round === round)?.outcome, "AllRegionsReported");

    const [d0, d1, d2] = [0, 1, 2].map((i) => deltaOf(i, round)) as [
      Float32Array,
      Float32Array,
      Float32Array,
    ];
    const g = Float64Array.from(
      { length: ELEMENTS },
      (_, k) => -median3(d0[k] as number, d1[k] as number, d2[k] as number),
    );
    buf = buf ? Float64Array.from(buf, (b, k) => mu * b + (g[k] as number)) : g;
    const step = buf;
    theta = Float64Array.from(theta, (th, k) => th - lr * ((g[k] as number) + mu * (step[k] as number)));

    const model = await fetchGlobalModel(hubNc, { namespace: ns, run: runName, round });
    const published = new Float32Array(
      new Uint8Array((await readSafetensors(model.data)).tensors.get("w")?.bytes ?? []).buffer,
    );
    let worst = 0;
    for (let k = 0; k < ELEMENTS; k++)
      worst = Math.max(worst, Math.abs((published[k] as number) - (theta[k] as number)));
    t.true(worst < 1e-5, `round ${round}: largest difference from the reference outer step: ${worst}`);
  }
  t.is((await getRun(runName)).status?.phase, "Succeeded");
});

test("a region whose GPUs all fail attestation is quarantined and the rounds go on without it; a suspension stops the round's clock", async (t) => {
  t.timeout(4 * 60_000);
  const {
    custom,
    ns,
    regions,
    hubNc,
    metrics,
    startHub,
    startRun,
    publisher,
    getRun,
    admin,
    failRegionGpus,
    setRegionGpus,
    roundOpen,
  } = await federation(t);
  await startHub();
  const { runName } = await startRun(t, "quarantine", {
    minRegions: 3,
    rounds: 2,
    seed: 3,
    // A long grace window: the rounds below close early only because nothing is left to wait for.
    quorum: { minRegions: 2, graceWindowSeconds: 600, maxRoundSeconds: 1200, lateDeltas: "Discard" },
  });
  const publish = publisher(runName);
  const [a, b, c] = regions as [(typeof regions)[0], (typeof regions)[0], (typeof regions)[0]];
  await roundOpen(runName, 1);

  // Region c's GPUs all fail: it is quarantined, the run says so, and round 1 closes as soon
  // as a and b are in, without waiting out the grace window for c.
  await failRegionGpus(c.name);
  const degraded = await eventually(async () => {
    const s = (await getRun(runName)).status;
    return s?.regions?.find((r) => r.name === c.name)?.quarantined ? s : undefined;
  }, "region c quarantined in the run's status");
  t.like(
    degraded.regions?.find((r) => r.name === c.name),
    { reason: "RegionQuarantined" },
  );
  t.regex(degraded.regions?.find((r) => r.name === c.name)?.message ?? "", /MeasurementMismatch/);
  t.is(degraded.conditions?.find((x) => x.type === "Degraded")?.reason, "RegionQuarantined");
  t.regex(
    await metrics.registry.metrics(),
    new RegExp(`sovereign_run_regions\\{namespace="${ns}",run="${runName}",state="quarantined"\\} 1`),
  );
  const base0 = await fetchGlobalModel(hubNc, { namespace: ns, run: runName, round: 0 });
  await collectBytes(base0.data);
  const sent = Date.now();
  await publish(a, 0, 1, 1000, base0.digest);
  await publish(b, 1, 1, 1000, base0.digest);
  const afterRound1 = await eventually(async () => {
    const s = (await getRun(runName)).status;
    return s?.rounds?.find((x) => x.round === 1) ? s : undefined;
  }, "round 1 closed without the quarantined region");
  t.true(Date.now() - sent < 60_000, "closed without waiting out the 600 s grace window");
  t.like(
    afterRound1.rounds?.find((x) => x.round === 1),
    {
      outcome: "QuorumReached",
      contributingRegions: [a.name, b.name].sort(),
      lateRegions: [c.name],
    },
  );

  // Suspended in round 2: learners are told to stop everywhere, and the round's clock stops.
  const open2 = await eventually(async () => {
    const p = (await getRun(runName)).status?.roundProgress;
    return p?.round === 2 ? p : undefined;
  }, "round 2 open");
  const setSuspend = (suspend: boolean) =>
    custom.patchNamespacedCustomObject(
      { ...GROUP, plural: "federatedruns", namespace: ns, name: runName, body: { spec: { suspend } } },
      setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
    );
  await setSuspend(true);
  const suspended = await eventually(async () => {
    const s = (await getRun(runName)).status;
    return s?.phase === "Suspended" && s.roundProgress?.suspendTime ? s : undefined;
  }, "the run suspended with its round's clock stopped");
  t.is(suspended.conditions?.find((x) => x.type === "Progressing")?.reason, "Suspended");
  for (const r of regions) {
    const work = (await custom.getNamespacedCustomObject({
      ...GROUP,
      plural: "regionworks",
      namespace: regionNamespace(r.name),
      name: `${ns}.${runName}`,
    })) as { spec: { suspend?: boolean } };
    t.true(work.spec.suspend, `${r.name}'s work says suspend`);
  }
  await new Promise((resolve) => setTimeout(resolve, 4_000));
  await setSuspend(false);
  const resumed = await eventually(async () => {
    const s = (await getRun(runName)).status;
    return s?.phase === "Running" && s.roundProgress && !s.roundProgress.suspendTime ? s : undefined;
  }, "the run resumed");
  const moved = Date.parse(resumed.roundProgress?.startTime ?? "") - Date.parse(open2.startTime);
  t.true(moved >= 4_000, `round 2's start moved by the pause (${moved} ms)`);
  t.is(resumed.roundProgress?.round, 2);

  // c attests again: it is back in the round, and round 2 waits for it.
  await setRegionGpus(c.name, { total: 2, attested: 2, failing: 0, totalGpus: 16, attestedGpus: 16 });
  await eventually(async () => {
    const s = (await getRun(runName)).status;
    return s?.regions?.find((r) => r.name === c.name)?.quarantined ? undefined : s;
  }, "region c no longer quarantined");
  const base1 = await fetchGlobalModel(hubNc, { namespace: ns, run: runName, round: 1 });
  await collectBytes(base1.data);
  await publish(a, 0, 2, 1000, base1.digest);
  await publish(b, 1, 2, 1000, base1.digest);
  await eventually(
    async () => ((await getRun(runName)).status?.roundProgress?.phase === "GraceWindow" ? true : undefined),
    "round 2 waits for c in its grace window",
  );
  await publish(c, 2, 2, 1000, base1.digest);
  const done = await eventually(async () => {
    const s = (await getRun(runName)).status;
    return s?.phase === "Succeeded" ? s : undefined;
  }, "the run succeeded");
  t.like(
    done.rounds?.find((x) => x.round === 2),
    { outcome: "AllRegionsReported", lateRegions: [] },
  );
  t.is(done.conditions?.find((x) => x.type === "Degraded")?.status, "False");
  const events = await admin
    .makeApiClient(CoreV1Api)
    .listNamespacedEvent({ namespace: ns, fieldSelector: `involvedObject.name=${runName}` });
  const reasons = events.items.map((e) => e.reason);
  for (const reason of ["RegionQuarantined", "Suspended", "Resumed"])
    t.true(reasons.includes(reason), `${reason} in ${reasons.join(", ")}`);
});

test("lateDeltas NextRound: a region's delta that missed its round is folded into the next one, weighted by half its tokens, once", async (t) => {
  t.timeout(4 * 60_000);
  const { ns, regions, hubNc, startHub, startRun, publisher, deltaOf, getRun, roundOpen } =
    await federation(t);
  await startHub();
  const { runName } = await startRun(t, "late", {
    minRegions: 3,
    rounds: 2,
    seed: 4,
    quorum: { minRegions: 2, graceWindowSeconds: 3, maxRoundSeconds: 120, lateDeltas: "NextRound" },
  });
  const publish = publisher(runName);
  const [a, b, c] = regions as [(typeof regions)[0], (typeof regions)[0], (typeof regions)[0]];
  await roundOpen(runName, 1);
  const base0 = await fetchGlobalModel(hubNc, { namespace: ns, run: runName, round: 0 });
  await collectBytes(base0.data);
  await publish(a, 0, 1, 1000, base0.digest);
  await publish(b, 1, 1, 1000, base0.digest);
  await eventually(async () => {
    const s = (await getRun(runName)).status;
    return s?.rounds?.find((x) => x.round === 1 && x.lateRegions?.includes(c.name)) ? s : undefined;
  }, "round 1 closed without c");

  // c's round-1 delta arrives during round 2; c sends nothing for round 2.
  await roundOpen(runName, 2);
  await publish(c, 2, 1, 2000, base0.digest);
  const model1 = await fetchGlobalModel(hubNc, { namespace: ns, run: runName, round: 1 });
  const theta1 = new Float32Array(
    new Uint8Array((await readSafetensors(model1.data)).tensors.get("w")?.bytes ?? []).buffer,
  );
  await publish(a, 0, 2, 1000, model1.digest);
  await publish(b, 1, 2, 3000, model1.digest);
  const done = await eventually(async () => {
    const s = (await getRun(runName)).status;
    return s?.phase === "Succeeded" ? s : undefined;
  }, "the run succeeded");
  const r2 = done.rounds?.find((x) => x.round === 2);
  t.like(r2, { outcome: "QuorumReached", contributingRegions: [a.name, b.name].sort() });
  t.deepEqual(r2?.foldedLateDeltas, [{ region: c.name, round: 1 }]);

  // round-2 = θ1 + (1000·Δa2 + 3000·Δb2 + ½·2000·Δc1) / (1000 + 3000 + ½·2000), computed here.
  const model2 = await fetchGlobalModel(hubNc, { namespace: ns, run: runName, round: 2 });
  const published = new Float32Array(
    new Uint8Array((await readSafetensors(model2.data)).tensors.get("w")?.bytes ?? []).buffer,
  );
  const [da, db, dc] = [deltaOf(0, 2), deltaOf(1, 2), deltaOf(2, 1)];
  let worst = 0;
  for (let i = 0; i < ELEMENTS; i++) {
    const expected =
      (theta1[i] as number) +
      (1000 * (da[i] as number) + 3000 * (db[i] as number) + 1000 * (dc[i] as number)) / 5000;
    worst = Math.max(worst, Math.abs((published[i] as number) - expected));
  }
  t.true(worst < 1e-6, `largest difference from the reference with the late delta at half weight: ${worst}`);
});

test("a run deleted and created again under its name starts afresh: the old run's deltas and aggregate are never used", async (t) => {
  t.timeout(4 * 60_000);
  const { custom, ns, policy, regions, hubNc, startHub, publisher, deltaOf, getRun, roundOpen } =
    await federation(t);
  await startHub();
  const runName = uniqueName("again");
  const create = async (seed: number) => {
    const run = new RunBuilder(runName, ns).placement({ minRegions: 3 }).obj() as FederatedRun;
    run.spec.attestation = { policyRef: { name: policy } };
    run.spec.rounds = 1;
    run.spec.quorum = { minRegions: 3, graceWindowSeconds: 0, maxRoundSeconds: 120, lateDeltas: "Discard" };
    await custom.createNamespacedCustomObject({
      ...GROUP,
      plural: "federatedruns",
      namespace: ns,
      body: run,
    });
    const initial = gaussian(ELEMENTS, 0.1, seed);
    await publishGlobalModel(
      hubNc,
      { namespace: ns, run: runName, round: 0 },
      writeSafetensors([{ name: "w", dtype: "F32", shape: SHAPE, data: new Uint8Array(initial.buffer) }]),
    );
    await roundOpen(runName, 1);
    return initial;
  };
  t.teardown(() => removeRunBuckets(hubNc, { namespace: ns, run: runName }));
  const publish = publisher(runName);
  await create(5);
  const old = await fetchGlobalModel(hubNc, { namespace: ns, run: runName, round: 0 });
  await collectBytes(old.data);
  for (const [i, r] of regions.entries()) await publish(r, i, 1, 1000, old.digest);
  await eventually(async () => {
    const s = (await getRun(runName)).status;
    return s?.phase === "Succeeded" ? s : undefined;
  }, "the first run succeeded");

  // Deleted (as a user would, with its buckets) and created again under the same name. The old
  // run's round-1 deltas are still in the regions' buckets, under the same object names.
  await custom.deleteNamespacedCustomObject({
    ...GROUP,
    plural: "federatedruns",
    namespace: ns,
    name: runName,
  });
  await eventually(async () => {
    try {
      await getRun(runName);
      return undefined;
    } catch (err) {
      return (err as { code?: number }).code === 404 ? true : undefined;
    }
  }, "the first run gone");
  await removeRunBuckets(hubNc, { namespace: ns, run: runName });
  // The hub purged the deleted run's deltas from its mirrors.
  for (const r of regions)
    await eventually(
      async () =>
        (await listRegionDeltas(hubNc, r.name, { namespace: ns, run: runName, round: 1 })).length === 0
          ? true
          : undefined,
      `the deleted run's deltas purged from the hub's mirror of ${r.name}`,
    );
  const initial = await create(6);
  // The old deltas are still in the regions' own buckets (no member runs here to purge them);
  // whatever of them the mirror shows again, nothing of the old run counts towards round 1.
  await new Promise((resolve) => setTimeout(resolve, 5_000));
  const p = (await getRun(runName)).status?.roundProgress;
  t.deepEqual(p?.deliveredRegions ?? [], [], "nothing delivered by the old run's deltas");
  t.is((await getRun(runName)).status?.phase, "Running");

  const fresh = await fetchGlobalModel(hubNc, { namespace: ns, run: runName, round: 0 });
  await collectBytes(fresh.data);
  for (const [i, r] of regions.entries()) await publish(r, i, 1, 1000, fresh.digest);
  const done = await eventually(async () => {
    const s = (await getRun(runName)).status;
    return s?.phase === "Succeeded" ? s : undefined;
  }, "the second run succeeded");
  const model = await fetchGlobalModel(hubNc, { namespace: ns, run: runName, round: 1 });
  t.is(done.rounds?.find((r) => r.round === 1)?.aggregateDigest, model.digest);
  const published = new Float32Array(
    new Uint8Array((await readSafetensors(model.data)).tensors.get("w")?.bytes ?? []).buffer,
  );
  const deltas = [0, 1, 2].map((i) => deltaOf(i, 1));
  let worst = 0;
  for (let k = 0; k < ELEMENTS; k++) {
    const mean = deltas.reduce((sum, d) => sum + (d[k] as number), 0) / 3;
    worst = Math.max(worst, Math.abs((published[k] as number) - ((initial[k] as number) + mean)));
  }
  t.true(worst < 1e-6, `the second run's model is its own initial model + the mean of its deltas (${worst})`);
});

test("a delta verified only after every round that could take it fixed its set is refused as DeltaTooLate, never accepted", async (t) => {
  t.timeout(3 * 60_000);
  // No hub process: the test drives the hub's round coordinator itself, so that the order
  // (the set fixed first, the delta verified after) is certain rather than a race to win.
  const { ns, regions, hubNc, startRun, publisher, learnerPublicKey } = await federation(t);
  const { runName } = await startRun(t, "toolate", {
    minRegions: 3,
    rounds: 2,
    seed: 6,
    quorum: { minRegions: 2, graceWindowSeconds: 0, maxRoundSeconds: 120, lateDeltas: "Discard" },
  });
  const [a, b, c] = regions as [(typeof regions)[0], (typeof regions)[0], (typeof regions)[0]];
  const base0 = await fetchGlobalModel(hubNc, { namespace: ns, run: runName, round: 0 });
  await collectBytes(base0.data);
  await publisher(runName)(c, 2, 1, 1000, base0.digest);
  const endpoint = [{ name: c.name, domain: c.cluster }];
  const judge = async (settings: RoundSettings, fixed: number[]) => {
    const outcome = { accepted: 0, refused: [] as string[] };
    const coordinator = new RoundCoordinator({
      nc: hubNc,
      keyFor: () => learnerPublicKey,
      log: silentLogger,
      onProgress: () => undefined,
      onAccepted: () => outcome.accepted++,
      onRefused: (_run, r) => outcome.refused.push(r.reason),
    });
    const ref = { namespace: ns, run: runName, uid: "uid-toolate", round: 1 };
    // Sets fixed without c (their aggregations fail on missing deltas: only that they are fixed matters).
    for (const round of fixed) coordinator.aggregation({ ...ref, round }, [a.name, b.name], settings);
    return eventually(() => {
      coordinator.delivered(ref, endpoint, settings);
      return outcome.accepted + outcome.refused.length > 0 ? outcome : undefined;
    }, "c's round-1 delta judged");
  };
  const settings = { algorithm: { type: "FedAvg" as const }, maxDeltaBytes: 1 << 30, rounds: 2 };
  // lateDeltas Discard: round 1 closed without it; nothing else could take it.
  t.deepEqual(await judge({ ...settings, foldsLate: false }, [1]), {
    accepted: 0,
    refused: ["DeltaTooLate"],
  });
  // NextRound: round 2 (the run's last) may still fold it in, so it is accepted...
  t.deepEqual(await judge({ ...settings, foldsLate: true }, [1]), { accepted: 1, refused: [] });
  // ...unless round 2 fixed its set too.
  t.deepEqual(await judge({ ...settings, foldsLate: true }, [1, 2]), {
    accepted: 0,
    refused: ["DeltaTooLate"],
  });
});

test("a delta accepted before its region is quarantined is refused as RegionQuarantined when the round closes, not left accepted and unaggregated", async (t) => {
  t.timeout(4 * 60_000);
  const { regions, hubNc, ns, metrics, startHub, startRun, publisher, getRun, failRegionGpus, roundOpen } =
    await federation(t);
  await startHub();
  const { runName } = await startRun(t, "excluded", {
    minRegions: 3,
    rounds: 1,
    seed: 4,
    quorum: { minRegions: 2, graceWindowSeconds: 600, maxRoundSeconds: 1200, lateDeltas: "Discard" },
  });
  const publish = publisher(runName);
  const [a, b, c] = regions as [(typeof regions)[0], (typeof regions)[0], (typeof regions)[0]];
  await roundOpen(runName, 1);
  const base0 = await fetchGlobalModel(hubNc, { namespace: ns, run: runName, round: 0 });
  await collectBytes(base0.data);
  // c delivers first and its delta is accepted; only then are its GPUs found failing.
  await publish(c, 2, 1, 1000, base0.digest);
  await eventually(
    async () =>
      new RegExp(`sovereign_deltas_accepted_total\\{region="${c.name}"\\} 1`).test(
        await metrics.registry.metrics(),
      )
        ? true
        : undefined,
    "c's delta accepted",
  );
  await failRegionGpus(c.name);
  await eventually(async () => {
    const s = (await getRun(runName)).status;
    return s?.regions?.find((r) => r.name === c.name)?.quarantined ? true : undefined;
  }, "region c quarantined");
  await publish(a, 0, 1, 1000, base0.digest);
  await publish(b, 1, 1, 1000, base0.digest);
  const closed = await eventually(async () => {
    const s = (await getRun(runName)).status;
    return s?.rounds?.find((x) => x.round === 1) ? s : undefined;
  }, "round 1 closed");
  t.deepEqual(closed.rounds?.find((x) => x.round === 1)?.contributingRegions, [a.name, b.name].sort());
  const refusedQuarantined = await eventually(async () => {
    const text = await metrics.registry.metrics();
    return new RegExp(
      `sovereign_deltas_refused_total\\{region="${c.name}",reason="RegionQuarantined"\\} 1`,
    ).test(text)
      ? text
      : undefined;
  }, "c's accepted delta refused as RegionQuarantined");
  t.truthy(refusedQuarantined);
});

test("a global model whose bytes no longer match its digest fails the round, and no next model is published", async (t) => {
  t.timeout(3 * 60_000);
  const { ns, regions, hubNc, startHub, startRun, publisher, getRun, roundOpen } = await federation(t);
  await startHub();
  const { runName } = await startRun(t, "corrupt", {
    minRegions: 3,
    rounds: 2,
    seed: 9,
    quorum: { minRegions: 3, graceWindowSeconds: 1, maxRoundSeconds: 120, lateDeltas: "Discard" },
  });
  const publish = publisher(runName);
  await roundOpen(runName, 1);
  const base0 = await fetchGlobalModel(hubNc, { namespace: ns, run: runName, round: 0 });
  await collectBytes(base0.data);
  // Replace round 0's bytes in the hub's store (same size and layout, other values), keeping
  // the digest the regions know: what a corrupted store or a tampering operator would leave.
  const store = await new Objm(hubNc).open(runModelBucket(ns, runName));
  const other = gaussian(ELEMENTS, 0.1, 99);
  await store.put(
    { name: modelObjectName(0), metadata: { [MODEL_DIGEST_METADATA]: base0.digest } },
    readableOf(
      await collectBytes(
        writeSafetensors([{ name: "w", dtype: "F32", shape: SHAPE, data: new Uint8Array(other.buffer) }]),
      ),
    ),
  );
  for (const [k, region] of regions.entries()) await publish(region, k, 1, 1000, base0.digest);
  const failed = await eventually(async () => {
    const s = (await getRun(runName)).status;
    return s?.phase === "Failed" ? s : undefined;
  }, "the run failed");
  const progressing = failed.conditions?.find((c) => c.type === "Progressing");
  t.regex(progressing?.message ?? "", /round 1 could not be aggregated: .*ModelDigestMismatch/);
  await t.throwsAsync(fetchGlobalModel(hubNc, { namespace: ns, run: runName, round: 1 }), {
    message: /ModelObjectMissing/,
  });
});

function readableOf(bytes: Uint8Array): ReadableStream<Uint8Array> {
  return new ReadableStream({
    start(controller) {
      controller.enqueue(bytes);
      controller.close();
    },
  });
}
