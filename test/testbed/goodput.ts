// Goodput of a federated run, as Decoupled DiLoCo defines it: the training steps the learners
// that were up completed and the hub actually used ÷ the steps they could have completed in
// the same wall-clock time. Measured from the learners' own timing events (examples/demo/
// train.py prints them: up, train, wait, published, end) and the run's round history (which
// region's delta each round aggregated, or folded in late). Time spent starting up, stalled
// waiting for the others, or on steps whose delta was never aggregated is lost.
import type { RoundOutcome } from "../../crds/types.generated.ts";

export interface LearnerEvent {
  event: "up" | "train" | "wait" | "published" | "end";
  /** Wall-clock seconds (up, published, end). */
  t?: number;
  /** Interval in wall-clock seconds (train, wait). */
  t0?: number;
  t1?: number;
  steps?: number;
  delta_round?: number;
  learner?: string;
  pid?: number;
  region?: string;
  why?: string;
}

/** One learner process, from its `up` event to its end. */
export interface Incarnation {
  region: string;
  learner: string;
  pid: number;
  events: LearnerEvent[];
}

/** Splits a learner pod's log (JSON lines, appended by each process the pod had) into processes. */
export function parseLearnerLog(region: string, text: string): Incarnation[] {
  const out: Incarnation[] = [];
  for (const line of text.split("\n")) {
    if (!line.startsWith('{"event"')) continue;
    let e: LearnerEvent;
    try {
      e = JSON.parse(line) as LearnerEvent;
    } catch {
      continue; // a line cut short by a kill
    }
    if (e.event === "up") out.push({ region, learner: e.learner ?? "", pid: e.pid ?? 0, events: [e] });
    else out.at(-1)?.events.push(e);
  }
  return out;
}

export interface LearnerGoodput {
  region: string;
  learner: string;
  pid: number;
  /** Seconds from the process's start to its end (or to the kill). */
  upSeconds: number;
  killed: boolean;
  /** Steps per second while training. */
  stepsPerSecond: number;
  trained: number;
  useful: number;
  possible: number;
  /** Lost, in step-equivalents (rate × seconds, or steps never aggregated). */
  lost: { startup: number; waiting: number; lostWork: number; other: number };
  /** Rounds whose aggregate used a delta of this process. */
  aggregatedRounds: number[];
}

export interface Goodput {
  /** Σ useful ÷ Σ possible over every learner process that was up. */
  goodput: number;
  useful: number;
  possible: number;
  /** Fractions of Σ possible. */
  lost: { startup: number; waiting: number; lostWork: number; other: number };
  learners: LearnerGoodput[];
}

const span = (e: LearnerEvent) => Math.max(0, (e.t1 ?? 0) - (e.t0 ?? 0));

/**
 * `kills`: when a region's learners were killed (wall-clock seconds); a process with no `end`
 * event ends at the first kill of its region after its last event, else at its last event.
 */
export function computeGoodput(
  incarnations: Incarnation[],
  rounds: RoundOutcome[],
  kills: { region: string; t: number }[] = [],
  /** When the run finished (wall-clock seconds): time after it is not the run's. */
  runEnd = Number.POSITIVE_INFINITY,
): Goodput {
  incarnations = incarnations.filter((inc) => (inc.events[0]?.t ?? 0) < runEnd);
  // (region, round) pairs the hub aggregated: on time, or folded into a later round.
  const aggregated = new Set<string>();
  for (const r of rounds) {
    for (const g of r.contributingRegions ?? []) aggregated.add(`${g}/${r.round}`);
    for (const f of r.foldedLateDeltas ?? []) aggregated.add(`${f.region}/${f.round}`);
  }
  // Each aggregated (region, round) is credited once, to the process that published it first.
  const credited = new Map<string, { inc: Incarnation; steps: number }>();
  for (const inc of incarnations) {
    for (const e of inc.events) {
      if (e.event !== "published" || e.delta_round === undefined) continue;
      const key = `${inc.region}/${e.delta_round}`;
      if (!aggregated.has(key)) continue;
      const prev = credited.get(key);
      const prevT = prev?.inc.events.find(
        (x) => x.event === "published" && x.delta_round === e.delta_round,
      )?.t;
      if (!prev || (e.t ?? 0) < (prevT ?? 0)) credited.set(key, { inc, steps: e.steps ?? 0 });
    }
  }
  const trainOf = (inc: Incarnation) => inc.events.filter((e) => e.event === "train");
  const allTrain = incarnations.flatMap(trainOf);
  const overallRate =
    allTrain.reduce((n, e) => n + (e.steps ?? 0), 0) /
    Math.max(
      1e-9,
      allTrain.reduce((s, e) => s + span(e), 0),
    );

  const learners = incarnations.map((inc): LearnerGoodput => {
    const upT = inc.events[0]?.t ?? 0;
    const endEvent = inc.events.find((e) => e.event === "end")?.t;
    const lastT = Math.max(upT, ...inc.events.map((e) => e.t1 ?? e.t ?? 0));
    const kill = kills.filter((k) => k.region === inc.region && k.t >= lastT).sort((a, b) => a.t - b.t)[0];
    const endT = Math.min(endEvent ?? kill?.t ?? lastT, Math.max(upT, runEnd));
    const train = trainOf(inc);
    const trained = train.reduce((n, e) => n + (e.steps ?? 0), 0);
    const trainSeconds = train.reduce((s, e) => s + span(e), 0);
    // A process killed before it trained at all: the run's average rate stands for its own.
    const rate = trainSeconds > 0 ? trained / trainSeconds : overallRate;
    const upSeconds = Math.max(0, endT - upT);
    const possible = rate * upSeconds;
    let useful = 0;
    const aggregatedRounds: number[] = [];
    for (const [key, c] of credited) {
      if (c.inc !== inc) continue;
      useful += c.steps;
      aggregatedRounds.push(Number(key.split("/")[1]));
    }
    const firstTrain = train[0]?.t0 ?? endT;
    const startup = rate * Math.max(0, firstTrain - upT);
    const waiting =
      rate *
      inc.events
        .filter((e) => e.event === "wait" && (e.t0 ?? 0) >= firstTrain)
        .reduce((s, e) => s + span(e), 0);
    const lostWork = Math.max(0, trained - useful);
    return {
      region: inc.region,
      learner: inc.learner,
      pid: inc.pid,
      upSeconds,
      killed: endEvent === undefined && kill !== undefined,
      stepsPerSecond: rate,
      trained,
      useful,
      possible,
      lost: { startup, waiting, lostWork, other: possible - useful - startup - waiting - lostWork },
      aggregatedRounds: aggregatedRounds.sort((a, b) => a - b),
    };
  });
  const sum = (f: (l: LearnerGoodput) => number) => learners.reduce((n, l) => n + f(l), 0);
  const possible = sum((l) => l.possible);
  const frac = (f: (l: LearnerGoodput) => number) => (possible > 0 ? sum(f) / possible : 0);
  return {
    goodput: frac((l) => l.useful),
    useful: sum((l) => l.useful),
    possible,
    lost: {
      startup: frac((l) => l.lost.startup),
      waiting: frac((l) => l.lost.waiting),
      lostWork: frac((l) => l.lost.lostWork),
      other: frac((l) => l.lost.other),
    },
    learners,
  };
}
