// The round state machine of a running FederatedRun, as a pure function: from the run's
// spec, the round progress recorded in its status, which regions have delivered an
// accepted delta, and the time, decide the next step. The hub's reconciler applies it;
// everything it needs to resume after a restart is in the status it writes.
//
//   (no round) ──open──▶ WaitingForDeltas ──quorum──▶ GraceWindow ──grace over / all in──▶ Aggregating
//        ▲                      │ maxRoundSeconds without quorum: QuorumMissed, the round restarts
//        └──── next round ◀── Publishing ◀──────────────────────────────────────────────────┘
import type { FederatedRunSpec, FoldedLateDelta, RoundOutcome } from "../../crds/types.generated.ts";

export type RoundPhase = "WaitingForDeltas" | "GraceWindow" | "Aggregating" | "Publishing";

/** What the status records about the open round (status.roundProgress). */
export interface RoundProgress {
  round: number;
  phase: RoundPhase;
  /** RFC 3339: when this attempt at the round opened. */
  startTime: string;
  /** RFC 3339: when quorum was first met; the grace window runs from here. */
  quorumTime?: string;
  /** Regions whose delta for this round was accepted, sorted. Fixed once Aggregating. */
  deliveredRegions: string[];
  /** Attempts after QuorumMissed; 0 for the first. */
  retries: number;
  /** RFC 3339: when spec.suspend stopped the round's clock; unset while running. */
  suspendTime?: string;
  /** Late deltas of earlier rounds folded into this one (lateDeltas: NextRound). Fixed once Aggregating. */
  foldedLateDeltas?: FoldedLateDelta[];
}

export interface RoundInputs {
  spec: Pick<FederatedRunSpec, "rounds" | "quorum" | "placement">;
  /** status.currentRound: the round in progress, 0 before the first. */
  currentRound: number;
  progress: RoundProgress | undefined;
  /** Placed regions whose deltas count (not quarantined). */
  eligibleRegions: readonly string[];
  /** Every placed region, quarantined ones included: those are late, not "all reported". Default: eligibleRegions. */
  placedRegions?: readonly string[];
  /**
   * Eligible regions the hub has lost touch with (their SovereignNode not Ready: no heartbeat,
   * no attested GPU). A delta of theirs still counts if it arrives, but the grace window, which
   * is there for slow regions, does not wait for them.
   */
  unreachableRegions?: readonly string[];
  /** Regions with an accepted delta for progress.round, as the hub has verified them. */
  delivered: readonly string[];
  /** Whether the model the next round starts from exists (for round 1: the initial model). */
  baseModelReady: boolean;
  now: number;
}

export type RoundStep =
  | { action: "wait"; progress: RoundProgress | undefined; requeueAfterMs?: number; why: string }
  | { action: "open"; progress: RoundProgress }
  | { action: "aggregate"; progress: RoundProgress; outcome: RoundOutcome }
  | { action: "retry"; progress: RoundProgress; outcome: RoundOutcome }
  | { action: "complete" };

export function quorumSize(spec: RoundInputs["spec"]): number {
  return spec.quorum?.minRegions ?? spec.placement.minRegions ?? 1;
}

/**
 * Status times have whole seconds. Rounded up, never down: a grace window or a round that
 * starts at a recorded time is then never shorter than the spec says.
 */
const iso = (ms: number) => new Date(Math.ceil(ms / 1000) * 1000).toISOString().replace(/\.\d{3}Z$/, "Z");

export function decideRound(input: RoundInputs): RoundStep {
  const { spec, progress, now } = input;
  const graceMs = (spec.quorum?.graceWindowSeconds ?? 60) * 1000;
  const maxRoundMs = (spec.quorum?.maxRoundSeconds ?? 3600) * 1000;
  const quorum = quorumSize(spec);

  if (!progress) {
    const next = input.currentRound === 0 ? 1 : input.currentRound;
    if (input.currentRound > spec.rounds) return { action: "complete" };
    if (!input.baseModelReady) {
      return {
        action: "wait",
        progress,
        requeueAfterMs: 5_000,
        why: `round ${next} waits for the model it starts from (round-${next - 1} in the run's model bucket)`,
      };
    }
    return {
      action: "open",
      progress: {
        round: next,
        phase: "WaitingForDeltas",
        startTime: iso(now),
        deliveredRegions: [],
        retries: 0,
      },
    };
  }

  if (progress.phase === "Aggregating" || progress.phase === "Publishing") {
    // The aggregation job reports back; nothing to decide from deltas any more.
    return { action: "wait", progress, why: `round ${progress.round} is ${progress.phase.toLowerCase()}` };
  }

  const eligible = new Set(input.eligibleRegions);
  const placed = new Set([...eligible, ...(input.placedRegions ?? [])]);
  const delivered = [...new Set(input.delivered)].filter((r) => eligible.has(r)).sort();
  const started = Date.parse(progress.startTime);
  const base = { ...progress, deliveredRegions: delivered };
  const closing = (outcome: RoundOutcome["outcome"]): RoundStep => ({
    action: "aggregate",
    progress: { ...base, phase: "Aggregating" },
    outcome: {
      round: progress.round,
      outcome,
      contributingRegions: delivered,
      lateRegions: [...placed].filter((r) => !delivered.includes(r)).sort(),
      startTime: progress.startTime,
    },
  });

  if (delivered.length >= quorum) {
    // Every eligible region is in: nothing left to wait for, though a quarantined one makes it
    // a quorum round rather than one every placed region reported.
    if (delivered.length === eligible.size)
      return closing(delivered.length === placed.size ? "AllRegionsReported" : "QuorumReached");
    const unreachable = new Set(input.unreachableRegions ?? []);
    if ([...eligible].every((r) => delivered.includes(r) || unreachable.has(r)))
      return closing("QuorumReached");
    const quorumAt = progress.quorumTime ? Date.parse(progress.quorumTime) : now;
    const graceEnds = Math.min(quorumAt + graceMs, started + maxRoundMs);
    if (now >= graceEnds) return closing("QuorumReached");
    return {
      action: "wait",
      progress: { ...base, phase: "GraceWindow", quorumTime: progress.quorumTime ?? iso(now) },
      requeueAfterMs: graceEnds - now,
      why: `quorum (${delivered.length}/${quorum}) reached; waiting for ${eligible.size - delivered.length} more region(s) until the grace window ends`,
    };
  }

  if (now >= started + maxRoundMs) {
    return {
      action: "retry",
      progress: {
        ...base,
        phase: "WaitingForDeltas",
        startTime: iso(now),
        quorumTime: undefined,
        retries: progress.retries + 1,
      },
      outcome: {
        round: progress.round,
        outcome: "QuorumMissed",
        contributingRegions: [],
        lateRegions: [...eligible].filter((r) => !delivered.includes(r)).sort(),
        startTime: progress.startTime,
        completionTime: iso(now),
      },
    };
  }
  return {
    action: "wait",
    progress: { ...base, phase: "WaitingForDeltas", quorumTime: undefined },
    requeueAfterMs: started + maxRoundMs - now,
    why: `${delivered.length} of ${quorum} regions needed for quorum have delivered round ${progress.round}`,
  };
}

/** After the aggregate of `progress.round` is published: the next round's number, or done. */
export function afterPublish(
  spec: RoundInputs["spec"],
  round: number,
): { currentRound: number; done: boolean } {
  return round >= spec.rounds
    ? { currentRound: round, done: true }
    : { currentRound: round + 1, done: false };
}

/** The open round while spec.suspend is true: its clock stops at the first suspended step. */
export function suspendRound(progress: RoundProgress, now: number): RoundProgress {
  return progress.suspendTime ? progress : { ...progress, suspendTime: iso(now) };
}

/**
 * The open round once spec.suspend is false again: its deadlines move forward by the pause
 * (the CRD promises a suspension stops the round's clock), and suspendTime is cleared. An
 * aggregating round only loses the mark: its set is fixed and nothing waits on a deadline.
 */
export function resumeRound(progress: RoundProgress, now: number): RoundProgress {
  if (!progress.suspendTime) return progress;
  const { suspendTime, ...rest } = progress;
  const pausedMs = Math.max(0, now - Date.parse(suspendTime));
  if (rest.phase === "Aggregating" || rest.phase === "Publishing" || !Number.isFinite(pausedMs)) return rest;
  const shift = (t: string) => iso(Date.parse(t) + pausedMs);
  return {
    ...rest,
    startTime: shift(rest.startTime),
    ...(rest.quorumTime ? { quorumTime: shift(rest.quorumTime) } : {}),
  };
}

/** How many rounds late a delta may be and still be folded in (deltas/aggregate/staleness.ts). */
export const MAX_ROUNDS_LATE = 3;

/**
 * Late deltas round `round` may fold in under `quorum.lateDeltas: NextRound`: for each of the
 * last MAX_ROUNDS_LATE rounds that closed without some regions, those regions, unless an
 * earlier round already folded that region's delta for it (each late delta counts once).
 */
export function lateDeltaCandidates(
  history: readonly RoundOutcome[] | undefined,
  round: number,
): FoldedLateDelta[] {
  const folded = new Set(
    (history ?? []).flatMap((h) => (h.foldedLateDeltas ?? []).map((f) => `${f.region}@${f.round}`)),
  );
  const out: FoldedLateDelta[] = [];
  for (const h of history ?? []) {
    if (h.round >= round || h.round < round - MAX_ROUNDS_LATE || h.outcome === "QuorumMissed") continue;
    for (const region of h.lateRegions ?? [])
      if (!folded.has(`${region}@${h.round}`)) out.push({ region, round: h.round });
  }
  return out.sort((a, b) => a.round - b.round || a.region.localeCompare(b.region));
}
