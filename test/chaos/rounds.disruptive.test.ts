// Rounds through server restarts: a hub API server, etcd (every cluster's store) and the hub's
// nats-server are each restarted in the middle of a round, with deltas published before and
// after. Every round must still close with every region, each delta counted exactly once, the
// published models equal to an independently computed FedAvg, the round history complete in
// status, and the audit chain intact. Runs in the disruptive suite (alone, after the others).
import test from "ava";
import { exportAuditLog, trustedKey, verifyAuditExport } from "../../attestation/audit/mod.ts";
import { collectBytes } from "../../deltas/mod.ts";
import { fetchGlobalModel } from "../../transport/mod.ts";
import { federation } from "../operator/federation.ts";
import { eventually } from "../testbed/harness.ts";
import { restart } from "../testbed/testbed.ts";
import { writeChaosResult } from "./results.ts";

const FAULTS = ["hub/kube-apiserver", "etcd", "hub/nats-server"] as const;

test.serial(
  "each round survives a restart of the hub API server, etcd and the hub's nats-server mid-round, counting every delta once",
  async (t) => {
    t.timeout(10 * 60_000);
    const {
      ns,
      regions,
      hubNc,
      metrics,
      audit,
      auditStore,
      auditKey,
      startHub,
      startRun,
      publisher,
      getRun,
      expectEqualWeightFedAvg,
    } = await federation(t);
    await startHub();
    const started = await startRun(t, "chaos", {
      minRegions: 3,
      rounds: FAULTS.length,
      seed: 9,
      quorum: { minRegions: 3, graceWindowSeconds: 0, maxRoundSeconds: 600, lateDeltas: "Discard" },
    });
    const { runName } = started;
    let theta = started.initial;
    const publish = publisher(runName);
    const [first, ...rest] = regions;
    if (!first) throw new Error("no regions");

    const recoveries: { fault: string; round: number; closedAfterSeconds: number }[] = [];
    for (const [i, fault] of FAULTS.entries()) {
      const round = i + 1;
      await eventually(
        async () => ((await getRun(runName)).status?.roundProgress?.round === round ? true : undefined),
        `round ${round} open`,
        120_000,
      );
      const base = await fetchGlobalModel(hubNc, { namespace: ns, run: runName, round: round - 1 });
      await collectBytes(base.data);
      await publish(first, 0, round, 1000, base.digest);
      const faultAt = Date.now();
      await restart(fault, { log: t.log });
      for (const [k, r] of rest.entries()) await publish(r, k + 1, round, 1000, base.digest);
      const closed = await eventually(
        async () => (await getRun(runName)).status?.rounds?.find((x) => x.round === round),
        `round ${round} closed after the ${fault} restart`,
        180_000,
      );
      const closedAfterSeconds = (Date.now() - faultAt) / 1000;
      recoveries.push({ fault, round, closedAfterSeconds });
      t.log(
        `round ${round}: ${fault} restarted; the round closed ${closedAfterSeconds.toFixed(1)} s after the restart began`,
      );
      t.like(closed, {
        outcome: "AllRegionsReported",
        contributingRegions: regions.map((r) => r.name).sort(),
      });

      const published = await expectEqualWeightFedAvg(t, runName, round, theta, closed.aggregateDigest);
      theta = published;
    }

    const done = await eventually(async () => {
      const s = (await getRun(runName)).status;
      return s?.phase === "Succeeded" ? s : undefined;
    }, "the run succeeded");
    t.deepEqual(
      done.rounds?.map((r) => r.round),
      FAULTS.map((_, i) => i + 1),
      "every round is in the history, once",
    );
    // Each delta verified, counted and audited exactly once.
    const text = await metrics.registry.metrics();
    for (const r of regions)
      t.regex(
        text,
        new RegExp(`sovereign_deltas_accepted_total\\{region="${r.name}"\\} ${FAULTS.length}\\b`),
      );
    await audit.checkpoint();
    const lines: string[] = [];
    for await (const line of exportAuditLog(auditStore)) lines.push(line);
    const report = verifyAuditExport(lines.join(""), { trustedKeys: [trustedKey(auditKey)] });
    t.true(report.ok, JSON.stringify(report.failure));
    const entries = lines.map((l) => JSON.parse(l) as { kind: string; subject: string });
    const accepted = entries.filter((e) => e.kind === "DeltaAccepted").map((e) => e.subject);
    const expected = regions.length * FAULTS.length;
    const distinct = new Set(accepted).size;
    t.is(accepted.length, expected);
    t.is(distinct, expected, "one audit entry per delta");
    t.is(entries.filter((e) => e.kind === "RoundClosed").length, FAULTS.length);

    // For `make reliability` (test/chaos/report.ts): what happened, as measured here.
    await writeChaosResult({
      id: "rounds",
      order: 10,
      scenario: "Server restarts mid-round: hub API server, etcd, hub nats-server",
      markdown: [
        "| Fault (restarted mid-round) | Round | Round closed after the restart began |",
        "|---|---|---|",
        ...recoveries.map((x) => `| \`${x.fault}\` | ${x.round} | ${x.closedAfterSeconds.toFixed(1)} s |`),
        "",
        `- Deltas published: ${expected}; **lost: ${expected - distinct}**; **counted twice: ${accepted.length - distinct}**.`,
        `- Rounds closed: ${done.rounds?.length ?? 0} of ${FAULTS.length}; audit chain intact: ${report.ok ? "yes" : "NO"}.`,
      ],
      deltas: { published: expected, lost: expected - distinct, doubleCounted: accepted.length - distinct },
    });
  },
);
