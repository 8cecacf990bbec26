// The goodput arithmetic (test/testbed/goodput.ts) on hand-made timelines whose figures can be
// worked out on paper: what counts as useful, and where the rest of the time went.
import test from "ava";
import type { RoundOutcome } from "../../crds/types.generated.ts";
import { computeGoodput, parseLearnerLog } from "./goodput.ts";

const log = (lines: object[]) => lines.map((l) => JSON.stringify(l)).join("\n");
const round = (
  n: number,
  regions: string[],
  folded: { region: string; round: number }[] = [],
): RoundOutcome => ({
  round: n,
  outcome: "QuorumReached",
  contributingRegions: regions,
  ...(folded.length ? { foldedLateDeltas: folded } : {}),
});

test("a synchronous learner: startup, training, waiting; only aggregated deltas are useful", (t) => {
  // 100 steps/s. Up at 0, first model at 2 (startup 2 s), trains 2–3 (100 steps, round 1),
  // publishes, waits 3–6 for round 2, trains 6–7 (round 2), publishes, ends at 7.5.
  const text = log([
    { event: "up", t: 0, learner: "l-0", pid: 1 },
    { event: "wait", t0: 0.5, t1: 2, why: "model" },
    { event: "train", t0: 2, t1: 3, steps: 100 },
    { round: 1, accuracy: 0.5 }, // a metrics line: not an event
    { event: "published", t: 3, delta_round: 1, steps: 100 },
    { event: "wait", t0: 3, t1: 6, why: "round" },
    { event: "train", t0: 6, t1: 7, steps: 100 },
    { event: "published", t: 7, delta_round: 2, steps: 100 },
    { event: "end", t: 7.5 },
  ]);
  const incs = parseLearnerLog("region-a", text);
  t.is(incs.length, 1);
  // Round 2 closed without region-a: its second delta is lost work.
  const g = computeGoodput(incs, [round(1, ["region-a"]), round(2, ["region-b"])]);
  const l = g.learners[0];
  if (!l) return t.fail();
  t.is(l.stepsPerSecond, 100);
  t.is(l.possible, 750);
  t.is(l.useful, 100);
  t.deepEqual(l.aggregatedRounds, [1]);
  t.is(l.lost.startup, 200);
  t.is(l.lost.waiting, 300);
  t.is(l.lost.lostWork, 100);
  t.is(Math.round(l.lost.other), 50); // the 0.5 s after the last publish
  t.is(g.goodput, 100 / 750);
});

test("a killed process ends at the kill; its replacement is counted separately; a late delta folded in counts", (t) => {
  const text = log([
    { event: "up", t: 0, learner: "l-0", pid: 1 },
    { event: "train", t0: 0, t1: 1, steps: 50 },
    { event: "published", t: 1, delta_round: 1, steps: 50 },
    { event: "train", t0: 1, t1: 1.5, steps: 25 }, // running ahead when killed
    // killed at 2; the pod's log gets the new process's lines appended
    { event: "up", t: 10, learner: "l-0", pid: 2 },
    { event: "train", t0: 12, t1: 14, steps: 100 },
    { event: "published", t: 14, delta_round: 4, steps: 100 },
    { event: "end", t: 14 },
  ]);
  const incs = parseLearnerLog("region-b", text);
  t.is(incs.length, 2);
  const g = computeGoodput(
    incs,
    [round(1, ["region-a"]), round(5, ["region-a"], [{ region: "region-b", round: 4 }])],
    [{ region: "region-b", t: 2 }],
  );
  const [dead, fresh] = g.learners;
  if (!dead || !fresh) return t.fail();
  t.true(dead.killed);
  t.is(dead.upSeconds, 2);
  t.is(dead.useful, 0, "round 1 closed without region-b");
  t.is(dead.lost.lostWork, 75);
  t.false(fresh.killed);
  t.is(fresh.upSeconds, 4);
  t.is(fresh.useful, 100, "folded into round 5 late");
  t.is(fresh.lost.startup, 100);
  // 50 steps/s × 2 s + 50 steps/s × 4 s
  t.is(g.possible, 300);
  t.is(g.goodput, 100 / 300);
});

test("time after the run's end is not the run's: a process started after it is left out", (t) => {
  const text = log([
    { event: "up", t: 0, learner: "l-0", pid: 1 },
    { event: "train", t0: 0, t1: 4, steps: 40 },
    { event: "published", t: 4, delta_round: 1, steps: 40 },
    { event: "end", t: 9 },
    { event: "up", t: 11, learner: "l-0", pid: 2 },
    { event: "train", t0: 11, t1: 12, steps: 10 },
    { event: "end", t: 12 },
  ]);
  const g = computeGoodput(parseLearnerLog("region-a", text), [round(1, ["region-a"])], [], 5);
  t.is(g.learners.length, 1);
  t.is(g.learners[0]?.upSeconds, 5);
  t.is(g.goodput, 40 / 50);
});

test("an aggregated (region, round) is credited once even if two processes published it", (t) => {
  const text = log([
    { event: "up", t: 0, learner: "l-0", pid: 1 },
    { event: "train", t0: 0, t1: 1, steps: 10 },
    { event: "published", t: 1, delta_round: 3, steps: 10 },
    { event: "up", t: 2, learner: "l-0", pid: 2 },
    { event: "train", t0: 2, t1: 3, steps: 10 },
    { event: "published", t: 3, delta_round: 3, steps: 10 },
    { event: "end", t: 3 },
  ]);
  const g = computeGoodput(
    parseLearnerLog("region-c", text),
    [round(3, ["region-c"])],
    [{ region: "region-c", t: 1 }],
  );
  t.is(g.useful, 10);
  t.deepEqual(
    g.learners.map((l) => l.useful),
    [10, 0],
  );
});
