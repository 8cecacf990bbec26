// Runs alone (ava.disruptive.config.js): it labels the regions' GPU nodes and runs its own hub and members.
// `make demo`, as a newcomer runs it, in the test suite, reduced to the DiLoCo run of 6 rounds:
// operators as separate processes (the hub under Node's permission model), three regions
// registered and accepted, learners (Python, the SDK) on each region's non-IID share of the
// digits. It must succeed and converge (above a threshold, and above every region alone), send
// ≥100× fewer bytes than synchronising every inner step, send deltas under a tenth of each
// region's data and move under a quarter of the data over each leaf link (beyond its background),
// keep the hub away from the data, and link
// every aggregate in the audit trail to its contributors' attested evidence.
import test from "ava";
import { runDemo } from "../testbed/demo-run.ts";
import { useTestbed } from "../testbed/harness.ts";

interface DemoResult {
  ok: boolean;
  hubDenied: boolean;
  datasets: Record<string, { bytes: number }>;
  baselines: { centralized: { accuracy: number }; alone: Record<string, { accuracy: number }> };
  runs: Array<{
    algorithm: string;
    phase: string;
    evaluation: { accuracy: number; regions: Record<string, number> };
    comm: { ratio: number; upPerRound: number };
    leaf: Record<string, { up: number; upNet?: number; down: number; reconnected: boolean }>;
    bytesSent: Record<string, number>;
    link: { ok: boolean; rounds: number; deltas: number; problems: string[] };
  }>;
}

test("make demo trains one model across three regions: converges, communicates little, keeps data in the regions, audits the link", async (t) => {
  t.timeout(10 * 60_000);
  const tb = await useTestbed();
  const rounds = 6;
  const { stdout, result: demo } = await runDemo<DemoResult>(
    t,
    ["--run=diloco", `--rounds=${rounds}`, "--timeout=420"],
    { timeoutMs: 9 * 60_000 },
  );
  t.regex(stdout, new RegExp(`the run succeeded: ${rounds} rounds`));
  t.regex(stdout, /Where to look next:/);
  t.true(demo.ok);
  const diloco = demo.runs[0];
  if (!diloco) return t.fail("no run");
  t.is(diloco.phase, "Succeeded");

  // Convergence: the federated model on the union of the regions' held-out digits.
  const alone = Object.values(demo.baselines.alone).map((a) => a.accuracy);
  t.log(
    `DiLoCo ${(diloco.evaluation.accuracy * 100).toFixed(1)}%, centralized ${(demo.baselines.centralized.accuracy * 100).toFixed(1)}%, alone ${alone.map((a) => (a * 100).toFixed(1)).join("/")}%`,
  );
  t.true(
    diloco.evaluation.accuracy >= 0.85,
    "the federated model reaches 85% on the union of the held-out sets",
  );
  t.true(diloco.evaluation.accuracy > Math.max(...alone), "better than any region alone");

  // Communication: int8 deltas every H steps against fp32 gradients every step.
  t.log(
    `bytes: ${diloco.comm.upPerRound.toFixed(0)} B up per round per region; ${diloco.comm.ratio.toFixed(0)}× fewer than per-step sync`,
  );
  t.true(diloco.comm.upPerRound > 0);
  t.true(diloco.comm.ratio >= 100, "≥100× fewer bytes than synchronising every inner step");

  // Sovereignty: what the region chose to send (its deltas, by the hub's count) is a small
  // fraction of its data; the leaf link's own counters carry at least that, and all the link
  // carried out of the region beyond its background (measured before the run; members sweep the
  // mirrors of gone runs, so on a quiet testbed it is 0) is under a quarter of the region's data:
  // the deltas and the JetStream traffic around them, about 2.6 KiB per round. That no data
  // crosses at all is shown by the hub's permission model below and by the audit link, not by a
  // byte count.
  for (const region of tb.regions) {
    const leaf = diloco.leaf[region];
    const data = demo.datasets[region]?.bytes ?? 0;
    const deltas = diloco.bytesSent[region] ?? 0;
    if (!leaf) return t.fail(`no leaf counters for ${region}`);
    t.log(
      `${region}: ${leaf.up} bytes left over the leaf, ${leaf.upNet} beyond its background (deltas ${deltas}); data ${data} bytes`,
    );
    t.true(deltas > 0 && deltas < data / 10, `${region}: the deltas are under a tenth of the region's data`);
    t.true(leaf.reconnected || leaf.up >= deltas, `${region}: the leaf carried at least the deltas`);
    if (!leaf.reconnected)
      t.true((leaf.upNet ?? leaf.up) < data / 4, `${region}: the run moved under a quarter of the data out`);
  }
  t.true(demo.hubDenied, "the hub's permission flags deny reading the regions' data");

  // The audit link: every aggregate → accepted deltas → bound learner keys → admissions → passing verdicts.
  t.deepEqual(diloco.link.problems, []);
  t.true(diloco.link.ok);
  t.is(diloco.link.rounds, rounds);
  t.is(diloco.link.deltas, rounds * tb.regions.length);
});
