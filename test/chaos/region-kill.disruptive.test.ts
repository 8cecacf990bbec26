// A region killed mid-run and brought back (issue 10): `make demo --kill-region=region-b`, in
// the test suite. Once a third of the rounds closed, region-b's member operator, its leaf
// nats-server and its learner processes are SIGKILLed; after --outage seconds they are started
// again. The hub must notice (the region's SovereignNode not Ready, from missed heartbeats), keep
// closing rounds on region-a and region-c within the quorum of 2, and take region-b back: its
// fresh learner trains from the current global model and its deltas are aggregated again. The
// run must succeed with every accepted delta aggregated exactly once and the audit link intact.
// Measures the time to detect the failed region and to take it back (docs/reliability.md).
import test from "ava";
import type { Outage } from "../testbed/demo.ts";
import { type DemoRunResult, runDemo } from "../testbed/demo-run.ts";
import { useTestbed } from "../testbed/harness.ts";
import { fullReliabilityRun, writeChaosResult } from "./results.ts";

interface KilledRegionRun extends DemoRunResult {
  kill?: Outage;
}

const full = fullReliabilityRun();
// Each round trains H = 1000 steps of batch 256 (about a second here; more under load), so the
// run's length does not hang on the protocol's speed: a few rounds before the outage, the outage
// (longer than the hub's 20 s heartbeat timeout, so that it is detected), and enough rounds after
// it for the region to come back and contribute again. Coming back takes 40–70 s: member start,
// attestation and admission of a new learner pod, and nats-server's retry of the hub's mirror
// of the region (docs/architecture.md, "A region back from an outage").
const rounds = full ? 150 : 90;
const killAfter = full ? 10 : 4;
const outageSeconds = full ? 60 : 30;
const victim = "region-b";

/** "rounds 74–150 (77)" for a run of consecutive rounds, else the list. */
const roundsText = (rs: readonly number[]): string => {
  const first = rs[0];
  const last = rs.at(-1);
  if (first === undefined || last === undefined) return "no round";
  return last - first + 1 === rs.length
    ? `rounds ${first}–${last} (${rs.length})`
    : `rounds ${rs.join(", ")}`;
};

test("a region killed mid-run is detected, the run goes on within quorum, and the region rejoins from the current model", async (t) => {
  t.timeout(14 * 60_000);
  const tb = await useTestbed();
  const { result } = await runDemo<{ runs: KilledRegionRun[] }>(
    t,
    [
      "--run=diloco",
      `--rounds=${rounds}`,
      `--kill-region=${victim}`,
      `--kill-after-round=${killAfter}`,
      `--outage=${outageSeconds}`,
      "--inner-steps=1000",
      "--batch=256",
      "--grace=2",
      "--no-baselines",
      "--timeout=720",
    ],
    { timeoutMs: 13 * 60_000 },
  );
  const r = result.runs[0];
  if (!r) return t.fail("no run in the demo's result");
  const k = r.kill;
  if (!k) return t.fail("the region was never killed");

  t.is(r.phase, "Succeeded", "one region down does not stop the federation");
  const others = tb.regions.filter((g) => g !== victim).sort();
  // Detected: the hub showed the region not Ready for missed heartbeats, and Ready once back.
  t.truthy(k.detectedAt, "the hub showed the killed region not Ready");
  t.is(k.detectedReason, "HeartbeatMissed");
  t.truthy(k.restoredAt);
  t.truthy(k.readyAgainAt, "the hub showed the region Ready again once it was back");
  // The run went on without it: once the hub gave up on it, rounds closed on the other two
  // (before that, deltas it published before it went down may still complete a round).
  const without = k.roundsDuring.filter((y) => y.closedAt > (k.detectedAt ?? 0) + 1000);
  t.true(without.length > 0, "rounds closed while the region was down");
  for (const x of without) {
    t.is(x.outcome, "QuorumReached", `round ${x.round}`);
    t.deepEqual([...x.contributingRegions].sort(), others, `round ${x.round}, closed during the outage`);
  }
  // It rejoined from the current model: its fresh learner's first round is after every round
  // closed without it, and its deltas were aggregated again.
  t.truthy(k.rejoinedAtRound);
  const lastWithout = Math.max(...k.roundsDuring.map((x) => x.round));
  t.true(
    (k.rejoinedAtRound ?? 0) > lastWithout,
    "the fresh learner trained on a model newer than the outage",
  );
  t.true(k.contributedAfter.length > 0, "the region's deltas were aggregated again after it came back");
  // Nothing lost, nothing twice, every aggregate traced to passing evidence.
  t.is(r.deltas?.lost, 0);
  t.is(r.deltas?.doubleCounted, 0);
  t.deepEqual(r.link?.problems, []);
  t.true(r.link?.ok);
  t.true((r.evaluation?.accuracy ?? 0) >= 0.8);

  const sec = (from: number, to?: number) => (to === undefined ? "-" : ((to - from) / 1000).toFixed(1));
  t.log(
    `detected after ${sec(k.killedAt, k.detectedAt)} s; back after ${k.outageSeconds?.toFixed(0)} s; Ready again ${sec(k.restoredAt ?? 0, k.readyAgainAt)} s later; learner back ${sec(k.restoredAt ?? 0, k.learnerBackAt)} s; rejoined at round ${k.rejoinedAtRound}; contributed to ${roundsText(k.contributedAfter)}`,
  );
  const firstWithout = k.roundsDuring.find((x) => !x.contributingRegions.includes(victim));
  await writeChaosResult({
    id: "region-kill",
    order: 15,
    scenario: "A region killed mid-run and brought back: time to detect it and to take it back",
    markdown: [
      `After round ${k.afterRound} of a ${rounds}-round DiLoCo run (quorum 2 of 3, grace 2 s), ${victim}'s member operator, leaf nats-server and learner processes are SIGKILLed and started again ${k.outageSeconds?.toFixed(0)} s later. The hub gives up on a region after 20 s without a heartbeat (members beat every 5 s; \`--heartbeat-timeout\`, default 60 s); the demo reads the hub's SovereignNode every second. Reproduce: \`node test/testbed/demo.ts --run=diloco --rounds=${rounds} --kill-region=${victim} --kill-after-round=${killAfter} --outage=${outageSeconds} --inner-steps=1000 --batch=256 --grace=2 --no-baselines\`.`,
      "",
      "| Step | Time |",
      "|---|---|",
      `| The hub shows ${victim} not Ready (${k.detectedReason}) | ${sec(k.killedAt, k.detectedAt)} s after it went down |`,
      `| First round closed without it (quorum and grace: the run does not wait for the heartbeat timeout) | ${firstWithout ? `round ${firstWithout.round}, ${sec(k.killedAt, firstWithout.closedAt)} s after it went down` : "none"} |`,
      `| Rounds closed while it was down | ${k.roundsDuring.length} (rounds ${k.roundsDuring[0]?.round}–${k.roundsDuring.at(-1)?.round}) |`,
      `| The hub shows it Ready again | ${sec(k.restoredAt ?? 0, k.readyAgainAt)} s after it came back |`,
      `| Its fresh learner starts (attested, admitted) | ${sec(k.restoredAt ?? 0, k.learnerBackAt)} s after it came back |`,
      `| Its first round again | round ${k.rejoinedAtRound} (from the then-current global model); aggregated in ${roundsText(k.contributedAfter)} |`,
      "",
      `- The run **${r.phase}** in ${r.seconds.toFixed(0)} s at ${((r.evaluation?.accuracy ?? 0) * 100).toFixed(1)}%.`,
      `- Deltas accepted: ${r.deltas?.accepted}; **lost: ${r.deltas?.lost}**; **counted twice: ${r.deltas?.doubleCounted}**; every aggregate linked to passing evidence in the audit trail.`,
    ],
    deltas: {
      published: r.deltas?.accepted ?? 0,
      lost: r.deltas?.lost ?? 0,
      doubleCounted: r.deltas?.doubleCounted ?? 0,
    },
  });
});
