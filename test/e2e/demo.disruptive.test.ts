// Runs alone (ava.disruptive.config.js): it labels the regions' GPU nodes and runs its own hub and members.
// `make demo`, as a newcomer runs it, in the test suite: operators as separate processes, three
// regions registered and accepted, learners (Python, the SDK) run by the testbed's pod runner,
// a real federated training of three rounds. It must succeed, and the global model must get
// better on every region's own held-out data: training that converges, not a simulation.
import { execFile } from "node:child_process";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import test from "ava";
import { useTestbed } from "../testbed/harness.ts";
import { repoRoot } from "../testbed/topology.ts";

const run = promisify(execFile);

interface RoundLine {
  round: number;
  loss_before: number;
  accuracy: number;
  delta_bytes: number;
}

test("make demo trains one model across three regions to a lower loss on each region's own data", async (t) => {
  t.timeout(10 * 60_000);
  const tb = await useTestbed();
  const result = await run(
    process.execPath,
    [join(repoRoot, "test", "testbed", "demo.ts"), "--rounds=3", "--timeout=420"],
    {
      cwd: repoRoot,
      maxBuffer: 16 * 1024 * 1024,
      timeout: 9 * 60_000,
    },
  ).catch((err: { stdout?: string; stderr?: string; code?: number }) => {
    t.log(err.stdout?.split("\n").slice(-40).join("\n"));
    t.log(err.stderr?.split("\n").slice(-20).join("\n"));
    throw new Error(`the demo exited ${err.code}`);
  });
  t.regex(result.stdout, /the run succeeded: 3 rounds/);
  t.regex(result.stdout, /delta bytes received by the hub: /);

  const learners = join(tb.description.stateDir, "logs", "demo", "learners");
  for (const region of tb.regions) {
    const lines: RoundLine[] = [];
    for (const file of await readdir(join(learners, region))) {
      for (const line of (await readFile(join(learners, region, file), "utf8")).split("\n")) {
        if (line.startsWith("{") && line.includes('"loss_before"')) lines.push(JSON.parse(line) as RoundLine);
      }
    }
    const first = lines.find((l) => l.round === 1);
    const last = lines.find((l) => l.round === 3);
    if (!first || !last)
      return t.fail(`${region}: learner reported rounds ${lines.map((l) => l.round).join(", ")}`);
    t.log(
      `${region}: loss of the global model on local held-out data ${first.loss_before.toFixed(4)} → ${last.loss_before.toFixed(4)}, accuracy ${(first.accuracy * 100).toFixed(1)}% → ${(last.accuracy * 100).toFixed(1)}%`,
    );
    t.true(
      last.loss_before < first.loss_before * 0.8,
      `${region}: the federated model improved on this region's data`,
    );
    t.true(last.delta_bytes > 0);
  }
});
