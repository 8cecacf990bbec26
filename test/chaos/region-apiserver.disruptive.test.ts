// A region's kube-apiserver restarted mid-run (issue 10): `make demo --restart=region-b/kube-apiserver`,
// in the test suite. The region's member operator loses its API server (its informers, its
// leader-election Lease, the learner pods it watches) for the seconds the server takes to come
// back; its learners talk to the region's nats-server only, so they keep training. The run
// must go on with every region, the member must not exit, every accepted delta be aggregated
// exactly once and the audit link stay intact. Measures how long the restart took and what the
// rounds after it looked like (docs/reliability.md).
import test from "ava";
import type { ServerRestart } from "../testbed/demo.ts";
import { type DemoRunResult, runDemo } from "../testbed/demo-run.ts";
import { useTestbed } from "../testbed/harness.ts";
import { fullReliabilityRun, writeChaosResult } from "./results.ts";

interface RestartRun extends DemoRunResult {
  restart?: ServerRestart;
}

const full = fullReliabilityRun();
// Rounds of H = 1000 steps of batch 256 (about a second each here), so that rounds close while
// the API server is away (a restart takes 5–15 s) and after it is back.
const rounds = full ? 48 : 24;
const restartAfter = full ? 8 : 4;
const victim = "region-b";

test("a region's API server restarted mid-run: its member carries on, the run keeps every region, nothing is lost", async (t) => {
  t.timeout(12 * 60_000);
  const tb = await useTestbed();
  const { result } = await runDemo<{ runs: RestartRun[] }>(
    t,
    [
      "--run=diloco",
      `--rounds=${rounds}`,
      `--restart=${victim}/kube-apiserver`,
      `--restart-after-round=${restartAfter}`,
      "--inner-steps=1000",
      "--batch=256",
      "--no-baselines",
      "--timeout=480",
    ],
    { timeoutMs: 11 * 60_000 },
  );
  const r = result.runs[0];
  if (!r) return t.fail("no run in the demo's result");
  const x = r.restart;
  if (!x?.backAt) return t.fail("the API server was never restarted");

  // runDemo fails the test if an operator process exited: the member rode it out.
  t.is(r.phase, "Succeeded");
  t.true(x.roundsAfter.length > 0, "rounds closed after the restart");
  const closedAfter = x.roundsAfter.filter((y) => y.outcome !== "QuorumMissed");
  const withEveryRegion = closedAfter.filter(
    (y) => [...y.contributingRegions].sort().join() === [...tb.regions].sort().join(),
  );
  // The learners never lost their NATS server, so every round after the restart has every
  // region (a round closed during the restart itself may have gone on quorum).
  t.true(
    withEveryRegion.length >= closedAfter.length - 1,
    `rounds after the restart with every region: ${withEveryRegion.length} of ${closedAfter.length}`,
  );
  t.is(r.deltas?.lost, 0);
  t.is(r.deltas?.doubleCounted, 0);
  t.deepEqual(r.link?.problems, []);
  t.true(r.link?.ok);

  const restartSeconds = (x.backAt - x.at) / 1000;
  const outcomes = [...new Set(closedAfter.map((y) => y.outcome))]
    .map((o) => `${closedAfter.filter((y) => y.outcome === o).length} ${o}`)
    .join(", ");
  t.log(
    `${x.process} restarted after round ${x.afterRound} in ${restartSeconds.toFixed(1)} s; ${withEveryRegion.length} of ${closedAfter.length} later rounds had every region; run ${r.phase} in ${r.seconds.toFixed(0)} s`,
  );
  await writeChaosResult({
    id: "region-apiserver",
    order: 12,
    scenario: "A region's API server restarted mid-run",
    markdown: [
      `After round ${x.afterRound} of a ${rounds}-round DiLoCo run (quorum 2 of 3), ${x.process} is stopped and started again (its data kept) while the region's member operator and learners run. Reproduce: \`node test/testbed/demo.ts --run=diloco --rounds=${rounds} --restart=${x.process} --restart-after-round=${restartAfter} --inner-steps=1000 --batch=256 --no-baselines\`.`,
      "",
      `- The API server was away for ${restartSeconds.toFixed(1)} s; the member operator did not exit.`,
      `- Rounds closed after the restart: ${closedAfter.length} (${outcomes}); with every region: ${withEveryRegion.length}.`,
      `- The run **${r.phase}** in ${r.seconds.toFixed(0)} s at ${((r.evaluation?.accuracy ?? 0) * 100).toFixed(1)}%.`,
      `- Deltas accepted: ${r.deltas?.accepted}; **lost: ${r.deltas?.lost}**; **counted twice: ${r.deltas?.doubleCounted}**; audit link intact: ${r.link?.ok ? "yes" : "NO"}.`,
    ],
    deltas: {
      published: r.deltas?.accepted ?? 0,
      lost: r.deltas?.lost ?? 0,
      doubleCounted: r.deltas?.doubleCounted ?? 0,
    },
  });
});
