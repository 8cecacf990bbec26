// Goodput under failure (issue 10), as Decoupled DiLoCo defines it: the training steps the
// learners that were up completed and the hub aggregated ÷ the steps they could have completed
// in the same wall-clock time. Scenario: one of three regions (its member operator, its leaf
// nats-server and its learner processes) killed once a third of the rounds closed, for as long
// as that third took, then brought back. Run twice in one `make demo --goodput`: quorum 2 of 3
// with a grace window and learners that keep training while a round closes (one-round
// overlap), then the synchronous baseline (quorum = every region, grace 0, no overlap).
// Asserts what must hold in both (the run succeeded, the killed region rejoined from the
// current global model and contributed again, every accepted delta aggregated exactly once,
// the audit link and chains intact) and that the quorum run's measured goodput is above the
// baseline's; the 90% target is reported, not asserted (docs/reliability.md).
import test from "ava";
import { runDemo } from "../testbed/demo-run.ts";
import type { Goodput } from "../testbed/goodput.ts";
import { useTestbed } from "../testbed/harness.ts";
import { fullReliabilityRun, writeChaosResult } from "./results.ts";

interface GoodputRun {
  key: string;
  label: string;
  phase: string;
  rounds: { round: number; outcome: string; contributingRegions?: string[]; foldedLateDeltas?: unknown[] }[];
  seconds: number;
  innerSteps: number;
  batch: number;
  quorum: { minRegions?: number; graceWindowSeconds?: number };
  evaluation?: { accuracy: number };
  link?: { ok: boolean; rounds: number; deltas: number; problems: string[] };
  kill?: {
    region: string;
    afterRound: number;
    outageSeconds?: number;
    learnersKilled: number;
    contributedAfter: number[];
    rejoinedAtRound?: number;
  };
  goodput?: Goodput;
  deltas?: {
    published: number;
    accepted: number;
    aggregated: number;
    lost: number;
    doubleCounted: number;
    problems: string[];
  };
}

const pct = (x: number) => `${(x * 100).toFixed(1)}%`;

// Two real training runs of 24 rounds with a region outage take 17 minutes on this 2-core
// machine under load (the one passing run measured), too long and too timing-bound for every
// `make test`; `make reliability` runs it. The unit tests of the goodput arithmetic
// (test/testbed/goodput.test.ts) and of the SDK's overlap run in `make test`.
const goodputTest = fullReliabilityRun() ? test : test.skip;

goodputTest(
  "goodput with one of three regions killed for a third of the run: quorum + overlap against the synchronous baseline (make reliability only: about 17 minutes)",
  async (t) => {
    const full = fullReliabilityRun();
    // Rounds of real compute (H = 2000 Adam steps of batch 256: seconds per round on a loaded
    // machine) and enough of them that the killed region, back after a third of the run, is
    // re-admitted (member start, attestation of its new learner's key: 20 s to over 2 minutes
    // under load) with rounds left to contribute to. The reduced form took 17 minutes at load
    // average 30–58 on 2 cores, not the 4 it was meant to; a second attempt under load ~28 hit
    // the demo's 900 s per-run limit, hence the generous limits below (limits, not expectations).
    const rounds = full ? 45 : 24;
    const innerSteps = 2000;
    t.timeout((full ? 130 : 75) * 60_000);
    const tb = await useTestbed();
    const victim = tb.regions[1] ?? "region-b";
    const argv = [
      "--goodput",
      `--rounds=${rounds}`,
      `--inner-steps=${innerSteps}`,
      "--batch=256",
      `--kill-region=${victim}`,
      "--grace=2",
      "--no-baselines",
      `--timeout=${full ? 3600 : 1800}`,
    ];
    t.log(`node test/testbed/demo.ts ${argv.join(" ")}`);
    const { stdout, result: demo } = await runDemo<{ runs: GoodputRun[] }>(t, argv, {
      timeoutMs: (full ? 128 : 73) * 60_000,
      tailLines: 60,
    });
    for (const l of stdout
      .split("\n")
      .filter((x) => /kill-region|goodput|deltas diloco|after the outage/.test(x)))
      t.log(l);
    const [quorum, sync] = demo.runs;
    if (!quorum || !sync) return t.fail(`expected two runs, got ${demo.runs.length}`);

    for (const r of [quorum, sync]) {
      // Both succeed: the quorum run goes on without the region; the synchronous one stalls
      // (its rounds cannot close without every region) until the region is back, then finishes.
      t.is(r.phase, "Succeeded", `${r.label}: the run succeeded`);
      // Every round aggregated once (a QuorumMissed attempt, retried, aggregates nothing).
      t.deepEqual(
        r.rounds.filter((x) => x.outcome !== "QuorumMissed").map((x) => x.round),
        Array.from({ length: rounds }, (_, i) => i + 1),
        `${r.label}: every round in the history, once`,
      );
      const kill = r.kill;
      if (!kill) return t.fail(`${r.label}: ${victim} was not killed`);
      t.true(kill.learnersKilled >= 1, `${r.label}: a learner process of ${victim} was killed`);
      t.truthy(kill.outageSeconds, `${r.label}: ${victim} came back`);
      // The region rejoined: its fresh learner trained from the then-current global model and
      // the hub aggregated its work after the outage.
      t.true(
        (kill.rejoinedAtRound ?? 0) > kill.afterRound,
        `${r.label}: the fresh learner started after round ${kill.afterRound}`,
      );
      t.true(kill.contributedAfter.length > 0, `${r.label}: ${victim} contributed after coming back`);
      // Nothing lost, nothing counted twice: each accepted delta aggregated exactly once.
      t.deepEqual(r.deltas?.problems, [], `${r.label}: delta accounting`);
      t.is(r.deltas?.lost, 0);
      t.is(r.deltas?.doubleCounted, 0);
      // The audit link from every aggregate to attested learners, across the restarted member.
      t.deepEqual(r.link?.problems, [], `${r.label}: audit link`);
      t.true(r.link?.ok);
      t.regex(stdout, new RegExp(`audit trail ${victim}: intact`));
      t.truthy(r.goodput, `${r.label}: goodput measured`);
    }
    t.regex(stdout, /audit trail hub: intact/);
    const gq = quorum.goodput as Goodput;
    const gs = sync.goodput as Goodput;
    t.log(`goodput: quorum + overlap ${pct(gq.goodput)}, synchronous ${pct(gs.goodput)} (target ≥ 90%)`);
    // A real comparison: both measured on the same testbed, the same scenario, minutes apart.
    t.true(gq.goodput > gs.goodput, "the quorum run's goodput is above the synchronous baseline's");

    const rows = [quorum, sync].map((r) => {
      const g = r.goodput as Goodput;
      const missed = r.rounds.filter((x) => x.outcome === "QuorumMissed").length;
      return `| ${r.label} | ${r.quorum.minRegions} of 3, grace ${r.quorum.graceWindowSeconds} s | **${pct(g.goodput)}** | ${pct(g.lost.startup)} | ${pct(g.lost.waiting)} | ${pct(g.lost.lostWork)} | ${pct(g.lost.other)} | ${r.rounds.length - missed}${missed ? ` (+${missed} QuorumMissed)` : ""} | ${r.kill?.outageSeconds?.toFixed(0)} s (after round ${r.kill?.afterRound}) | ${r.kill?.contributedAfter.join(", ")} | ${r.evaluation ? pct(r.evaluation.accuracy) : "-"} | ${r.seconds.toFixed(0)} s |`;
    });
    const published = quorum.deltas && sync.deltas ? quorum.deltas.accepted + sync.deltas.accepted : 0;
    const lost = (quorum.deltas?.lost ?? 0) + (sync.deltas?.lost ?? 0);
    const doubled = (quorum.deltas?.doubleCounted ?? 0) + (sync.deltas?.doubleCounted ?? 0);
    await writeChaosResult({
      id: "goodput",
      order: 20,
      scenario:
        "Goodput with one of three regions killed for a third of the run, against a synchronous baseline",
      markdown: [
        `${victim}'s member operator, leaf nats-server and learner processes SIGKILLed once round ⌈R/3⌉ closed, brought back after as long as the run had taken; DiLoCo on the demo's digits, H = ${innerSteps} Adam steps of batch 256 per round, ${rounds} rounds. Goodput = steps of aggregated deltas ÷ (steps per second × time up), summed over every learner process while it was up; the rest is the lost part, by cause (target ≥ 90%: reported, not asserted). Reproduce: \`node test/testbed/demo.ts --goodput --rounds=${rounds} --inner-steps=${innerSteps} --batch=256 --kill-region=${victim} --grace=2 --no-baselines\`.`,
        "",
        "| Run | Quorum | Goodput | Startup | Waiting for the round | Work not aggregated | Publish/fetch/evaluate | Rounds | Outage | Rounds the region contributed to after it | Final accuracy | Run time |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ...rows,
        "",
        `- Deltas accepted: ${published}; **lost: ${lost}**; **counted twice: ${doubled}**; audit link and chains intact in both runs.`,
      ],
      deltas: { published, lost, doubleCounted: doubled },
    });
  },
);
