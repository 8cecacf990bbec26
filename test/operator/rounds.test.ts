// The round state machine on its own: quorum, the grace window, maxRoundSeconds, and a
// restart in the middle of any phase (the decision depends only on what status records).
import test from "ava";
import fc from "fast-check";
import {
  afterPublish,
  decideRound,
  lateDeltaCandidates,
  type RoundInputs,
  type RoundProgress,
  resumeRound,
  suspendRound,
} from "../../operator/hub/rounds.ts";

const T0 = Date.parse("2026-11-24T06:00:00Z");
const spec: RoundInputs["spec"] = {
  rounds: 3,
  placement: { minRegions: 2 },
  quorum: { minRegions: 2, graceWindowSeconds: 60, maxRoundSeconds: 600, lateDeltas: "Discard" },
};
const regions = ["region-a", "region-b", "region-c"];
const open: RoundProgress = {
  round: 1,
  phase: "WaitingForDeltas",
  startTime: "2026-11-24T06:00:00Z",
  deliveredRegions: [],
  retries: 0,
};
const inputs = (over: Partial<RoundInputs>): RoundInputs => ({
  spec,
  currentRound: 1,
  progress: open,
  eligibleRegions: regions,
  delivered: [],
  baseModelReady: true,
  now: T0,
  ...over,
});

test("the first round opens only once the initial model exists", (t) => {
  const waiting = decideRound(inputs({ currentRound: 0, progress: undefined, baseModelReady: false }));
  t.is(waiting.action, "wait");
  const opened = decideRound(inputs({ currentRound: 0, progress: undefined }));
  t.like(opened, { action: "open", progress: { round: 1, phase: "WaitingForDeltas", retries: 0 } });
});

test("below quorum the round waits until maxRoundSeconds, then records QuorumMissed and restarts", (t) => {
  const one = decideRound(inputs({ delivered: ["region-a"], now: T0 + 10_000 }));
  t.like(one, { action: "wait", requeueAfterMs: 590_000 });
  const missed = decideRound(inputs({ delivered: ["region-a"], now: T0 + 600_000 }));
  if (missed.action !== "retry") return t.fail(missed.action);
  t.is(missed.outcome.outcome, "QuorumMissed");
  t.deepEqual(missed.outcome.lateRegions, ["region-b", "region-c"]);
  t.is(missed.progress.retries, 1);
  t.is(missed.progress.round, 1, "the same round is retried");
  t.deepEqual(missed.progress.deliveredRegions, ["region-a"], "what was delivered still counts");
});

test("quorum opens the grace window; the round closes when it ends or when every region is in", (t) => {
  const quorum = decideRound(inputs({ delivered: ["region-b", "region-a"], now: T0 + 20_000 }));
  if (quorum.action !== "wait" || !quorum.progress) return t.fail();
  t.is(quorum.progress.phase, "GraceWindow");
  t.is(quorum.progress.quorumTime, "2026-11-24T06:00:20Z");
  t.is(quorum.requeueAfterMs, 60_000);

  const graceOver = decideRound(
    inputs({ progress: quorum.progress, delivered: ["region-a", "region-b"], now: T0 + 80_000 }),
  );
  if (graceOver.action !== "aggregate") return t.fail(graceOver.action);
  t.like(graceOver.outcome, {
    outcome: "QuorumReached",
    contributingRegions: ["region-a", "region-b"],
    lateRegions: ["region-c"],
  });

  const allIn = decideRound(inputs({ progress: quorum.progress, delivered: regions, now: T0 + 30_000 }));
  t.like(allIn, { action: "aggregate", outcome: { outcome: "AllRegionsReported", lateRegions: [] } });
});

test("the grace window does not wait for a region the hub has lost touch with, but its delta still counts when it comes", (t) => {
  // region-c is not Ready (no heartbeat): quorum from a and b closes the round at once.
  const closed = decideRound(
    inputs({ delivered: ["region-a", "region-b"], unreachableRegions: ["region-c"], now: T0 + 20_000 }),
  );
  if (closed.action !== "aggregate") return t.fail(closed.action);
  t.like(closed.outcome, {
    outcome: "QuorumReached",
    contributingRegions: ["region-a", "region-b"],
    lateRegions: ["region-c"],
  });
  // Below quorum an unreachable region changes nothing: the round still waits for deltas.
  t.like(
    decideRound(inputs({ delivered: ["region-a"], unreachableRegions: ["region-c"], now: T0 + 20_000 })),
    {
      action: "wait",
      progress: { phase: "WaitingForDeltas" },
    },
  );
  // A reachable region still missing keeps the grace window open.
  t.like(
    decideRound(
      inputs({ delivered: ["region-a", "region-b"], unreachableRegions: ["region-a"], now: T0 + 20_000 }),
    ),
    { action: "wait", progress: { phase: "GraceWindow" } },
  );
  // The unreachable region's delta, if it does arrive, is counted like any other.
  t.like(decideRound(inputs({ delivered: regions, unreachableRegions: ["region-c"], now: T0 + 20_000 })), {
    action: "aggregate",
    outcome: { outcome: "AllRegionsReported", contributingRegions: regions },
  });
});

test("the grace window never runs past maxRoundSeconds", (t) => {
  const late = decideRound(inputs({ delivered: ["region-a", "region-b"], now: T0 + 590_000 }));
  t.like(late, { action: "wait", requeueAfterMs: 10_000 });
});

test("deltas of regions no longer eligible (quarantined or unplaced) do not count", (t) => {
  const step = decideRound(
    inputs({
      eligibleRegions: ["region-a", "region-c"],
      delivered: ["region-a", "region-b"],
      now: T0 + 10_000,
    }),
  );
  if (step.action !== "wait" || !step.progress) return t.fail();
  t.deepEqual(step.progress.deliveredRegions, ["region-a"]);
  t.is(step.progress.phase, "WaitingForDeltas");
});

test("while aggregating or publishing, new deltas change nothing", (t) => {
  for (const phase of ["Aggregating", "Publishing"] as const) {
    const progress = { ...open, phase, deliveredRegions: ["region-a", "region-b"] };
    const step = decideRound(inputs({ progress, delivered: regions, now: T0 + 1_000_000 }));
    t.like(step, { action: "wait", progress });
  }
});

test("after the last round is published the run is done", (t) => {
  t.deepEqual(afterPublish(spec, 2), { currentRound: 3, done: false });
  t.deepEqual(afterPublish(spec, 3), { currentRound: 3, done: true });
});

test("a restarted hub decides exactly what it would have decided: the step depends only on recorded progress", (t) => {
  // Property: deciding from progress recorded at time a, then again at b ≥ a, gives the
  // same result as deciding directly at b from the progress recorded at a (no hidden state).
  fc.assert(
    fc.property(
      fc.subarray(regions),
      fc.integer({ min: 0, max: 700_000 }),
      fc.integer({ min: 0, max: 700_000 }),
      (delivered, a, gap) => {
        const first = decideRound(inputs({ delivered, now: T0 + a }));
        if (first.action !== "wait" || !first.progress) return true;
        const again = decideRound(inputs({ progress: first.progress, delivered, now: T0 + a + gap }));
        const twice = decideRound(
          inputs({
            progress: again.action === "wait" && again.progress ? again.progress : first.progress,
            delivered,
            now: T0 + a + gap,
          }),
        );
        t.deepEqual(twice, again);
        return true;
      },
    ),
  );
});

test("a quarantined region is not waited for, but the round it misses is a quorum round with it late", (t) => {
  const step = decideRound(
    inputs({
      eligibleRegions: ["region-a", "region-b"],
      placedRegions: regions,
      delivered: ["region-a", "region-b"],
      now: T0 + 5_000,
    }),
  );
  if (step.action !== "aggregate") return t.fail(step.action);
  t.is(step.outcome.outcome, "QuorumReached");
  t.deepEqual(step.outcome.contributingRegions, ["region-a", "region-b"]);
  t.deepEqual(step.outcome.lateRegions, ["region-c"]);
  // Its delta, should one verify, does not count while it is quarantined.
  const without = decideRound(
    inputs({ eligibleRegions: ["region-a", "region-b"], placedRegions: regions, delivered: ["region-c"] }),
  );
  t.is(without.action, "wait");
});

test("a suspension stops the round's clock: on resume its deadlines move by the pause, once", (t) => {
  const inGrace: RoundProgress = {
    ...open,
    phase: "GraceWindow",
    quorumTime: "2026-11-24T06:01:00Z",
    deliveredRegions: ["region-a", "region-b"],
  };
  const suspended = suspendRound(inGrace, T0 + 70_000);
  t.is(suspended.suspendTime, "2026-11-24T06:01:10Z");
  // Suspended again later: the clock stopped at the first suspension, not the last.
  t.is(suspendRound(suspended, T0 + 500_000).suspendTime, "2026-11-24T06:01:10Z");
  const resumed = resumeRound(suspended, T0 + 70_000 + 3_600_000);
  t.is(resumed.suspendTime, undefined);
  t.is(resumed.startTime, "2026-11-24T07:00:00Z");
  t.is(resumed.quorumTime, "2026-11-24T07:01:00Z");
  // 10 s of the 60 s grace window had run before the pause: 50 s are left after it.
  const step = decideRound(
    inputs({ progress: resumed, delivered: ["region-a", "region-b"], now: T0 + 3_670_000 }),
  );
  t.like(step, { action: "wait", requeueAfterMs: 50_000 });
  t.is(resumeRound(resumed, T0 + 9_999_999), resumed, "a round that is not suspended is left alone");
  const aggregating = suspendRound({ ...inGrace, phase: "Aggregating" }, T0);
  t.deepEqual(resumeRound(aggregating, T0 + 60_000), { ...inGrace, phase: "Aggregating" });
});

test("suspend and resume at any times never shorten a round (property)", (t) => {
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: 600_000 }),
      fc.integer({ min: 0, max: 10_000_000 }),
      (before, pause) => {
        const s = suspendRound(open, T0 + before);
        const r = resumeRound(s, Date.parse(s.suspendTime as string) + pause);
        // The time the round had run before the pause plus what is left after is never less than the full round.
        const ranBefore = Date.parse(s.suspendTime as string) - Date.parse(open.startTime);
        const resumedAt = Date.parse(s.suspendTime as string) + pause;
        const leftAfter = Date.parse(r.startTime) + 600_000 - resumedAt;
        return ranBefore + leftAfter >= 600_000;
      },
    ),
  );
  t.pass();
});

test("late deltas a round may fold in: late regions of the last three closed rounds, each folded once", (t) => {
  const history = [
    { round: 1, outcome: "QuorumReached" as const, lateRegions: ["region-c"] },
    {
      round: 2,
      outcome: "QuorumReached" as const,
      lateRegions: ["region-b", "region-c"],
      foldedLateDeltas: [{ region: "region-c", round: 1 }],
    },
    { round: 3, outcome: "AllRegionsReported" as const, lateRegions: [] },
    { round: 4, outcome: "QuorumMissed" as const, lateRegions: ["region-a"] },
  ];
  // Round 5 may fold region-b and region-c of round 2 (round 1's region-c is already folded, and
  // a QuorumMissed attempt is not a closed round).
  t.deepEqual(lateDeltaCandidates(history, 5), [
    { region: "region-b", round: 2 },
    { region: "region-c", round: 2 },
  ]);
  // Round 6 is four rounds after round 2: too stale.
  t.deepEqual(lateDeltaCandidates(history, 6), []);
  t.deepEqual(lateDeltaCandidates(undefined, 2), []);
  t.deepEqual(lateDeltaCandidates(history, 1), [], "nothing from the round itself or later ones");
});
