// A hub failover during rounds: two hub operator processes (operator/main.ts, as the chart runs
// them) elect a leader on a Lease and share one audit file, as two pods on a ReadWriteMany
// volume would. The leader is killed with SIGKILL (no clean hand-over) twice: once right after
// the round's last delta arrived (it is verifying or aggregating), once mid-round with two of
// three deltas recorded; the killed replica comes back as the standby each time. Every round must
// close with every region, the published models must equal an independently computed FedAvg,
// each delta must be recorded once in the one audit chain the two replicas wrote, and that
// chain must verify. Runs in the disruptive suite (alone): its timings are Lease timings.
import { generateKeyPairSync } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CoordinationV1Api } from "@kubernetes/client-node";
import test from "ava";
import { trustedKey, verifyAuditExport } from "../../attestation/audit/mod.ts";
import { collectBytes } from "../../deltas/mod.ts";
import { fetchGlobalModel } from "../../transport/mod.ts";
import { federation } from "../operator/federation.ts";
import { type OperatorProcess, startOperator, waitForLine } from "../operator/operator-process.ts";
import { eventually, uniqueName } from "../testbed/harness.ts";
import { fullReliabilityRun, writeChaosResult } from "./results.ts";

const LEASE = { durationS: 4, renewS: 3, retryS: 1 };

test.serial(
  "a hub failover during rounds: the standby takes over, every round closes, each delta is counted once in one intact audit chain",
  async (t) => {
    t.timeout(12 * 60_000);
    const { tb, ns, regions, hubNc, hubOptions, startRun, publisher, getRun, expectEqualWeightFedAvg } =
      await federation(t);
    const dir = await mkdtemp(join(tmpdir(), "sovereign-failover-"));
    t.teardown(() => rm(dir, { recursive: true, force: true }));
    const keys = generateKeyPairSync("ed25519");
    const keyFile = join(dir, "audit-key.pem");
    await writeFile(keyFile, keys.privateKey.export({ format: "pem", type: "pkcs8" }), { mode: 0o600 });
    const auditFile = join(dir, "hub-audit.jsonl");
    const lease = uniqueName("sovereign-hub");
    const { nodeLabelSelector } = hubOptions();
    const nats = tb.description.nats.hub;
    const args = [
      "--mode=hub",
      `--kubeconfig=${tb.cluster("hub").kubeconfig}`,
      `--namespace=${ns}`,
      `--watch-namespace=${ns}`,
      `--region-selector=${nodeLabelSelector}`,
      `--leader-election-id=${lease}`,
      `--lease-duration=${LEASE.durationS}s`,
      `--renew-deadline=${LEASE.renewS}s`,
      `--retry-period=${LEASE.retryS}s`,
      "--metrics-bind-address=127.0.0.1:0",
      "--health-probe-bind-address=127.0.0.1:0",
      "--heartbeat-timeout=1h", // the fixture's regions report in once
      `--nats-url=${nats.url}`,
      `--nats-user=${nats.admin.user}`,
      `--nats-password=${nats.admin.password}`,
      "--insecure-skip-attestation", // the test's learner key is not bound to GPU evidence
      `--audit-log=${auditFile}`,
      `--audit-key=${keyFile}`,
    ];
    const replicas: OperatorProcess[] = [startOperator(args), startOperator(args)];
    const everyReplica = [...replicas];
    t.teardown(() => {
      for (const r of replicas) r.child.kill("SIGKILL");
    });
    const leases = tb.kubeConfig("hub").makeApiClient(CoordinationV1Api);
    const holder = async () =>
      (await leases.readNamespacedLease({ name: lease, namespace: ns }).catch(() => undefined))?.spec
        ?.holderIdentity ?? "";
    const pidOf = (r: OperatorProcess) => String(r.child.pid);
    const leaderNow = async () => {
      const h = await holder();
      return replicas.find((r) => r.child.exitCode === null && h.endsWith(`_${pidOf(r)}`));
    };
    const firstLeader = await eventually(leaderNow, "a hub replica leads", 60_000);

    // The standby's metrics address answers, but its audit export does not: its log is not open.
    const standby = replicas.find((r) => r !== firstLeader) as OperatorProcess;
    const standbyPort = Number(
      /"metrics":(\d+)/.exec(await waitForLine(standby.lines, /"serving probes and metrics"/))?.[1],
    );
    const standbyExport = await fetch(`http://127.0.0.1:${standbyPort}/audit/export`);
    t.is(standbyExport.status, 503);
    t.regex(await standbyExport.text(), /^AuditLogNotLeading:/);

    const rounds = fullReliabilityRun() ? 6 : 3;
    // Round 1 runs undisturbed; from round 2 on, odd rounds kill the leader after the last
    // delta, even rounds after two of three.
    const { runName, initial } = await startRun(t, "failover", {
      minRegions: 3,
      rounds,
      seed: 11,
      quorum: { minRegions: 3, graceWindowSeconds: 0, maxRoundSeconds: 600, lateDeltas: "Discard" },
    });
    const publish = publisher(runName);
    let theta = initial;
    const failovers: { round: number; when: string; newLeaderS: number; roundClosedS: number }[] = [];
    for (let round = 1; round <= rounds; round++) {
      await eventually(
        async () => ((await getRun(runName)).status?.roundProgress?.round === round ? true : undefined),
        `round ${round} open`,
        120_000,
      );
      const base = await fetchGlobalModel(hubNc, { namespace: ns, run: runName, round: round - 1 });
      await collectBytes(base.data);
      const killAfter = round === 1 ? undefined : round % 2 === 1 ? 3 : 2;
      let killedAt = 0;
      let killed: OperatorProcess | undefined;
      const kill = async () => {
        killed = await eventually(leaderNow, "the current leader");
        killedAt = Date.now();
        killed.child.kill("SIGKILL");
      };
      for (const [i, r] of regions.entries()) {
        await publish(r, i, round, 1000, base.digest);
        if (killAfter === 2 && i === 1) {
          // Mid-round: the two deltas are verified and recorded before the leader dies.
          await eventually(
            async () =>
              ((await getRun(runName)).status?.roundProgress?.deliveredRegions?.length ?? 0) >= 2
                ? true
                : undefined,
            `two deltas of round ${round} recorded`,
            120_000,
          );
          await kill();
        }
      }
      if (killAfter === 3) await kill();
      let newLeaderS = 0;
      if (killed) {
        const next = await eventually(
          async () => {
            const l = await leaderNow();
            return l && l !== killed ? l : undefined;
          },
          "the standby takes over",
          60_000,
        );
        newLeaderS = (Date.now() - killedAt) / 1000;
        // The killed pod comes back, as its Deployment would bring it back, as the new standby.
        const restarted = startOperator(args);
        replicas[replicas.indexOf(killed)] = restarted;
        everyReplica.push(restarted);
        t.truthy(next);
      }
      const closed = await eventually(
        async () => (await getRun(runName)).status?.rounds?.find((x) => x.round === round),
        `round ${round} closed`,
        180_000,
      );
      if (killed) {
        const roundClosedS = (Date.now() - killedAt) / 1000;
        failovers.push({
          round,
          when: killAfter === 3 ? "after the last delta" : "after 2 of 3 deltas",
          newLeaderS,
          roundClosedS,
        });
        t.log(
          `round ${round}: leader killed ${killAfter === 3 ? "after the last delta" : "mid-round"}; new leader after ${newLeaderS.toFixed(1)} s, round closed after ${roundClosedS.toFixed(1)} s`,
        );
      }
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
      Array.from({ length: rounds }, (_, i) => i + 1),
      "every round is in the history, once",
    );

    // One chain, written by every replica that led, verifies; each delta is recorded once.
    // (A clean stop of the current leader closes its log with a checkpoint.)
    const last = await eventually(leaderNow, "the current leader");
    for (const r of replicas) if (r !== last) r.child.kill("SIGKILL"); // no one takes over meanwhile
    last.child.kill("SIGTERM");
    await last.exited;
    const text = await readFile(auditFile, "utf8");
    const report = verifyAuditExport(text, { trustedKeys: [trustedKey(keys.publicKey)] });
    t.true(report.ok, JSON.stringify(report.failure));
    const entries = text
      .split("\n")
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { kind: string; subject: string });
    const accepted = entries.filter((e) => e.kind === "DeltaAccepted").map((e) => e.subject);
    const expected = regions.length * rounds;
    const distinct = new Set(accepted).size;
    t.is(distinct, expected, "every accepted delta is in the audit trail");
    t.is(accepted.length, distinct, "no delta is recorded twice");
    t.is(new Set(entries.filter((e) => e.kind === "RoundClosed").map((e) => e.subject)).size, rounds);
    const leaderships = everyReplica.filter((r) => r.lines.some((l) => /became leader/.test(l))).length;
    t.log(
      `${entries.length} audit entries from ${leaderships} leaderships; ${accepted.length} DeltaAccepted`,
    );

    await writeChaosResult({
      id: "hub-failover",
      order: 30,
      scenario: "Hub failover to a second replica during rounds",
      markdown: [
        `Two hub operator processes on one Lease (duration ${LEASE.durationS} s, renew deadline ${LEASE.renewS} s, retry ${LEASE.retryS} s) sharing one audit file; the leader killed with SIGKILL, the killed replica restarted as the standby.`,
        "",
        "| Round | Leader killed | New leader after | Round closed after |",
        "|---|---|---|---|",
        ...failovers.map(
          (f) => `| ${f.round} | ${f.when} | ${f.newLeaderS.toFixed(1)} s | ${f.roundClosedS.toFixed(1)} s |`,
        ),
        "",
        `- Deltas published: ${expected}; **lost: ${expected - distinct}**; **recorded twice: ${accepted.length - distinct}**.`,
        `- Rounds closed: ${done.rounds?.length ?? 0} of ${rounds}, each model equal to the reference FedAvg within 1e-5.`,
        `- One audit chain across ${leaderships} leaderships (${entries.length} entries): ${report.ok ? "verifies" : "BROKEN"}.`,
      ],
      deltas: { published: expected, lost: expected - distinct, doubleCounted: accepted.length - distinct },
    });
  },
);
