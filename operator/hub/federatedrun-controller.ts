// Hub: places each FederatedRun, hands every chosen region its RegionWork, and reports
// in the run's status what the regions report back. Fetch → decide (placement.ts) →
// apply the work → write status → requeue decision; a finalizer removes the run's work
// from every region's namespace before the run goes away.
import { CustomObjectsApi, type KubeConfig, PatchStrategy, setHeaderOptions } from "@kubernetes/client-node";
import { type AuditRecord, roundClosedRecord } from "../../attestation/audit/mod.ts";
import type {
  Condition,
  FederatedRun,
  FederatedRunStatus,
  FoldedLateDelta,
  RegionRunStatus,
  RegionWork,
  RoundOutcome,
  SovereignNode,
} from "../../crds/types.generated.ts";
import { HUB_FIELD_MANAGER, SOVEREIGN_API } from "../names.ts";
import { sameContent } from "../runtime/canonical.ts";
import type { Clock } from "../runtime/clock.ts";
import { apiTime, findCondition, setCondition } from "../runtime/conditions.ts";
import type { ReconcileResult } from "../runtime/controller.ts";
import type { EventRecorder } from "../runtime/events.ts";
import type { OperatorMetrics } from "../runtime/metrics.ts";
import { decidePlacement, type PlacementDecision } from "./placement.ts";
import { judgeRegionForRound } from "./quarantine.ts";
import { regionNamespace } from "./region-access.ts";
import {
  HUB_REFUSAL,
  type RegionEndpoint,
  type RoundCoordinator,
  type RoundSettings,
} from "./round-coordinator.ts";
import {
  afterPublish,
  decideRound,
  lateDeltaCandidates,
  quorumSize,
  type RoundProgress,
  resumeRound,
  suspendRound,
} from "./rounds.ts";

const ROUND_OUTCOMES: readonly RoundOutcome["outcome"][] = [
  "QuorumReached",
  "AllRegionsReported",
  "QuorumMissed",
  "Aborted",
];

export const CONTROLLER_NAME = "federatedrun";
export const FIELD_MANAGER = HUB_FIELD_MANAGER;
export const FINALIZER = "sovereign.ai/region-work";
export const RUN_UID_LABEL = "sovereign.ai/run-uid";
export const RUN_NAME_LABEL = "sovereign.ai/run-name";
export const RUN_NAMESPACE_LABEL = "sovereign.ai/run-namespace";

const G = SOVEREIGN_API;

/** The RegionWork of one run in one region: named after the run so it is unique per namespace. */
export function regionWorkName(run: FederatedRun): string {
  return `${run.metadata.namespace}.${run.metadata.name}`;
}

export function desiredRegionWork(
  run: FederatedRun,
  region: string,
  node: SovereignNode | undefined,
): RegionWork {
  const ns = run.metadata.namespace ?? "default";
  return {
    apiVersion: "sovereign.ai/v1alpha1",
    kind: "RegionWork",
    metadata: {
      name: regionWorkName(run),
      namespace: regionNamespace(region),
      labels: {
        [RUN_UID_LABEL]: run.metadata.uid ?? "",
        [RUN_NAME_LABEL]: run.metadata.name ?? "",
        [RUN_NAMESPACE_LABEL]: ns,
      },
    },
    spec: {
      run: { namespace: ns, name: run.metadata.name ?? "", uid: run.metadata.uid ?? "" },
      region,
      workload: run.spec.workload,
      attestation: run.spec.attestation,
      deltaEncoding: run.spec.deltaEncoding,
      round: run.status?.currentRound ?? 0,
      rounds: run.spec.rounds,
      nats: {
        subjectPrefix: `sovereign.${region}.${ns}.${run.metadata.name}`,
        jetStreamDomain: node?.spec.jetStreamDomain ?? region,
      },
      suspend: run.spec.suspend === true,
    },
  } as RegionWork;
}

export interface FederatedRunReconcilerDeps {
  kc: KubeConfig;
  getRun: (namespace: string, name: string) => FederatedRun | undefined;
  listNodes: () => readonly SovereignNode[];
  policyExists: (name: string) => boolean;
  metrics?: OperatorMetrics;
  /** Every RegionWork of a run, by the run's uid. */
  workOf: (runUid: string) => readonly RegionWork[];
  events: EventRecorder;
  clock: Clock;
  /** The data plane for rounds; without it (no NATS configured) runs are placed but never start a round. */
  rounds?: RoundCoordinator;
  /** Records closed rounds in the audit trail. */
  audit?: (record: AuditRecord) => void;
}

export function federatedRunReconciler(
  deps: FederatedRunReconcilerDeps,
): (key: string) => Promise<ReconcileResult | undefined> {
  const api = deps.kc.makeApiClient(CustomObjectsApi);
  const apply = setHeaderOptions("Content-Type", PatchStrategy.ServerSideApply);
  const merge = setHeaderOptions("Content-Type", PatchStrategy.MergePatch);
  /** Round steps already reported by this process (bounded: old keys are dropped first). */
  const reported = new Set<string>();
  const once = (key: string) => {
    if (reported.has(key)) return false;
    reported.add(key);
    if (reported.size > 10_000) reported.delete(reported.values().next().value as string);
    return true;
  };
  /** Rounds resumed after a suspension, by run uid and suspendTime: a stale read resumes the same way. */
  const resumed = new Map<string, RoundProgress>();

  const setFinalizers = (run: FederatedRun, finalizers: string[]) =>
    api.patchNamespacedCustomObject(
      {
        ...G,
        plural: "federatedruns",
        namespace: run.metadata.namespace ?? "",
        name: run.metadata.name ?? "",
        // resourceVersion makes this a compare-and-swap: never drop someone else's finalizer.
        body: { metadata: { finalizers, resourceVersion: run.metadata.resourceVersion } },
      },
      merge,
    );

  const deleteWork = async (work: readonly RegionWork[]) => {
    for (const w of work) {
      await api
        .deleteNamespacedCustomObject({
          ...G,
          plural: "regionworks",
          namespace: w.metadata.namespace ?? "",
          name: w.metadata.name ?? "",
        })
        .catch((err: { code?: number }) => {
          if (err.code !== 404) throw err;
        });
    }
  };

  return async (key) => {
    const [namespace, name] = key.split("/") as [string, string];
    let run = deps.getRun(namespace, name);
    if (!run) {
      for (const state of ["placed", "ready", "quarantined"])
        deps.metrics?.runRegions.remove({ namespace, run: name, state });
      for (const outcome of ROUND_OUTCOMES) deps.metrics?.rounds.remove({ namespace, run: name, outcome });
      deps.metrics?.currentRound.remove({ namespace, run: name });
      return undefined;
    }
    const uid = run.metadata.uid ?? "";
    const finalizers = run.metadata.finalizers ?? [];

    if (run.metadata.deletionTimestamp) {
      deps.rounds?.forget({ namespace, run: name, uid });
      const work = deps.workOf(uid);
      if (work.length > 0) {
        await deleteWork(work);
        return { requeueAfterMs: 1_000 }; // until the informer shows them gone
      }
      if (finalizers.includes(FINALIZER))
        await setFinalizers(
          run,
          finalizers.filter((f) => f !== FINALIZER),
        );
      return undefined;
    }
    if (!finalizers.includes(FINALIZER)) {
      await setFinalizers(run, [...finalizers, FINALIZER]);
      return undefined; // the update comes back through the informer
    }

    const nodes = deps.listNodes();
    const placedBefore = (run.status?.regions ?? []).filter((r) => r.placed).map((r) => r.name);
    const policy = run.spec.attestation.policyRef.name;
    // A run whose policy is missing passes the schema but cannot be attested anywhere:
    // hold placement (keeping regions already placed) until the policy exists.
    const decision: PlacementDecision =
      deps.policyExists(policy) || placedBefore.length > 0
        ? decidePlacement(run, nodes, placedBefore)
        : {
            outcome: "PolicyNotFound",
            chosen: [],
            rejected: [],
            impaired: [],
            message: `AttestationPolicy ${policy} does not exist; create it or fix spec.attestation.policyRef`,
          };
    if (
      decision.outcome === "PolicyNotFound" &&
      findCondition(run.status?.conditions, "Placed")?.reason !== "PolicyNotFound"
    ) {
      deps.metrics?.invalidObjects.inc({ kind: "FederatedRun", reason: "PolicyNotFound" });
    }
    const now = new Date(deps.clock.now());
    const gen = run.metadata.generation;
    let conditions = run.status?.conditions;
    const regions: RegionRunStatus[] = [];

    // The open round: what the hub refused of each region for it is shown on the region.
    const openRound = (run.status?.roundProgress as RoundProgress | undefined)?.round;
    const refused =
      openRound !== undefined && deps.rounds
        ? deps.rounds.refusedRegions({ namespace, run: name, round: openRound, uid })
        : new Map();

    if (decision.outcome === "RegionsSelected") {
      const work = deps.workOf(uid);
      for (const region of decision.chosen) {
        const node = nodes.find((n) => n.metadata.name === region);
        const desired = desiredRegionWork(run, region, node);
        const existing = work.find((w) => w.spec.region === region);
        // Every heartbeat of every region re-queues every run: apply only what changed,
        // or each reconcile would cost one API write per region.
        const upToDate =
          existing !== undefined &&
          sameContent(existing.spec, desired.spec) &&
          sameContent(existing.metadata.labels, desired.metadata.labels);
        if (!upToDate) {
          await api.patchNamespacedCustomObject(
            {
              ...G,
              plural: "regionworks",
              namespace: regionNamespace(region),
              name: regionWorkName(run),
              fieldManager: FIELD_MANAGER,
              force: true,
              body: desired,
            },
            apply,
          );
        }
        const reported = existing?.status;
        const impaired = decision.impaired.find((r) => r.name === region);
        // Failed attestation (judged from the region's GPU counts, ahead of a refusal) is the
        // most specific cause: it wins even while placement still sees another impairment (the
        // region's Quarantined condition lags its GPU counts).
        const forRound = judgeRegionForRound(region, node, refused.get(region), openRound ?? 0);
        const judged =
          forRound?.quarantined || !impaired
            ? forRound
            : {
                quarantined: true,
                reason: impaired.reason === "Quarantined" ? "RegionQuarantined" : `Region${impaired.reason}`,
                message: `${impaired.message}; rounds go on without it until it recovers`,
              };
        regions.push({
          name: region,
          jurisdiction: node?.spec.jurisdiction,
          placed: true,
          learnersDesired: run.spec.workload.learnersPerRegion,
          learnersReady: reported?.learnersReady ?? 0,
          ...(reported?.lastDeltaRound !== undefined ? { lastDeltaRound: reported.lastDeltaRound } : {}),
          ...(reported?.bytesSent !== undefined ? { bytesSent: reported.bytesSent } : {}),
          reason: reported
            ? (findCondition(reported.conditions, "LearnersReady")?.reason ?? "WorkReceived")
            : "WorkSent",
          message:
            reported?.message ?? (reported ? "" : "waiting for the region's member operator to report"),
          ...(judged
            ? { quarantined: judged.quarantined, reason: judged.reason, message: judged.message }
            : {}),
        });
      }
      // Work for regions no longer chosen (only if they were dropped while unplaced).
      await deleteWork(deps.workOf(uid).filter((w) => !decision.chosen.includes(w.spec.region)));
      conditions = setCondition(
        conditions,
        {
          type: "Placed",
          status: "True",
          reason: "RegionsSelected",
          message: decision.message,
          observedGeneration: gen,
        },
        now,
      );
      if (findCondition(run.status?.conditions, "Placed")?.status !== "True") {
        await deps.events.record(run, "Normal", "RegionsSelected", decision.message);
      }
    } else {
      conditions = setCondition(
        conditions,
        {
          type: "Placed",
          status: "False",
          reason: decision.outcome,
          message: decision.message,
          observedGeneration: gen,
        },
        now,
      );
      if (findCondition(run.status?.conditions, "Placed")?.reason !== decision.outcome) {
        await deps.events.record(run, "Warning", decision.outcome, decision.message);
      }
    }
    for (const r of decision.rejected)
      regions.push({ name: r.name, placed: false, reason: r.reason, message: r.message });

    const placed = regions.filter((r) => r.placed);
    const ready = placed.filter((r) => (r.learnersReady ?? 0) >= (r.learnersDesired ?? 1));
    if (placed.length > 0) {
      conditions = setCondition(
        conditions,
        ready.length === placed.length
          ? {
              type: "Ready",
              status: "True",
              reason: "LearnersReady",
              message: `learners ready in ${ready.map((r) => r.name).join(", ")}`,
              observedGeneration: gen,
            }
          : {
              type: "Ready",
              status: "False",
              reason: "LearnersPending",
              message: `waiting for learners in ${placed
                .filter((r) => !ready.includes(r))
                .map((r) => `${r.name} (${r.learnersReady ?? 0}/${r.learnersDesired})`)
                .join(", ")}`,
              observedGeneration: gen,
            },
        now,
      );
    }
    deps.metrics?.runRegions.set({ namespace, run: name, state: "placed" }, placed.length);
    deps.metrics?.runRegions.set({ namespace, run: name, state: "ready" }, ready.length);
    deps.metrics?.runRegions.set(
      { namespace, run: name, state: "quarantined" },
      placed.filter((r) => r.quarantined === true).length,
    );
    const finished = run.status?.phase === "Succeeded" || run.status?.phase === "Failed";
    const suspended = run.spec.suspend === true && placed.length > 0 && !finished;
    const progressBefore = run.status?.roundProgress as RoundProgress | undefined;
    let suspendedProgress: RoundProgress | undefined;
    if (suspended) {
      // Learners stop in every region (RegionWork.spec.suspend) and the round's clock stops.
      suspendedProgress = progressBefore ? suspendRound(progressBefore, now.getTime()) : undefined;
      conditions = setCondition(
        conditions,
        {
          type: "Progressing",
          status: "False",
          reason: "Suspended",
          message: progressBefore
            ? `spec.suspend is true: learners are stopped and round ${progressBefore.round}'s clock stopped at ${suspendedProgress?.suspendTime}`
            : "spec.suspend is true: learners are stopped",
          observedGeneration: gen,
        },
        now,
      );
      if (once(`${uid}/suspended/${suspendedProgress?.suspendTime ?? run.metadata.generation}`))
        await deps.events.record(run, "Normal", "Suspended", "spec.suspend is true: learners are stopped");
    } else if (progressBefore?.suspendTime) {
      const key = `${uid}/${progressBefore.suspendTime}`;
      const progress = resumed.get(key) ?? resumeRound(progressBefore, now.getTime());
      resumed.set(key, progress);
      if (resumed.size > 1_000) resumed.delete(resumed.keys().next().value as string);
      run = { ...run, status: { ...run.status, roundProgress: progress } };
      if (once(`${key}/resumed`))
        await deps.events.record(
          run,
          "Normal",
          "Resumed",
          `spec.suspend is false: round ${progress.round} resumes with its deadlines moved by the pause`,
        );
    }
    const rounds =
      deps.rounds && placed.length > 0 && !finished && !suspended
        ? await advanceRound(
            run,
            deps.rounds,
            eligibleRegions(placed, nodes),
            placed.map((r) => r.name),
            unreachableRegions(placed, nodes),
            now,
            conditions,
            { ...deps, once },
          )
        : undefined;
    if (rounds) conditions = rounds.conditions;
    const quarantined = placed.filter((r) => r.quarantined === true);
    if (quarantined.length > 0) {
      conditions = setCondition(
        conditions,
        {
          type: "Degraded",
          status: "True",
          reason: "RegionQuarantined",
          message: quarantined.map((r) => `${r.name}: ${r.message}`).join("; "),
          observedGeneration: gen,
        },
        now,
      );
      for (const r of quarantined) {
        if (once(`${uid}/quarantine/${r.name}/${r.message}`))
          await deps.events.record(run, "Warning", "RegionQuarantined", r.message ?? r.name);
      }
    } else if (findCondition(conditions, "Degraded")?.reason === "RegionQuarantined") {
      conditions = setCondition(
        conditions,
        {
          type: "Degraded",
          status: "False",
          reason: "AsExpected",
          message: "no region is quarantined",
          observedGeneration: gen,
        },
        now,
      );
    }
    const phase: FederatedRunStatus["phase"] = finished
      ? run.status?.phase
      : rounds?.done
        ? "Succeeded"
        : rounds?.failed
          ? "Failed"
          : run.spec.suspend === true && placed.length > 0
            ? "Suspended"
            : placed.length > 0
              ? "Running"
              : "Placing";
    const currentRound = rounds?.currentRound ?? run.status?.currentRound ?? 0;
    deps.metrics?.currentRound.set({ namespace, run: name }, currentRound);
    // Every outcome starts at 0, so the first round closed with each shows in increase().
    for (const outcome of ROUND_OUTCOMES) deps.metrics?.rounds.inc({ namespace, run: name, outcome }, 0);
    const status: FederatedRunStatus = {
      phase,
      currentRound,
      ...(rounds?.progress ??
        (rounds
          ? {}
          : suspendedProgress
            ? { roundProgress: suspendedProgress }
            : run.status?.roundProgress
              ? { roundProgress: run.status.roundProgress }
              : {})),
      regionsPlaced: placed.length,
      regionsReady: ready.length,
      startTime: run.status?.startTime ?? apiTime(now),
      ...(rounds?.done || rounds?.failed
        ? { completionTime: apiTime(now) }
        : run.status?.completionTime
          ? { completionTime: run.status.completionTime }
          : {}),
      regions: regions.sort((a, b) => a.name.localeCompare(b.name)),
      ...((rounds?.history ?? run.status?.rounds) ? { rounds: rounds?.history ?? run.status?.rounds } : {}),
      conditions,
      observedGeneration: gen,
    };
    if (!sameContent(withoutStartTime(status), withoutStartTime(run.status))) {
      await api.patchNamespacedCustomObjectStatus(
        {
          ...G,
          plural: "federatedruns",
          namespace,
          name,
          fieldManager: FIELD_MANAGER,
          force: true,
          body: {
            apiVersion: "sovereign.ai/v1alpha1",
            kind: "FederatedRun",
            metadata: { name, namespace },
            status,
          },
        },
        apply,
      );
    }
    return rounds?.requeueAfterMs !== undefined ? { requeueAfterMs: rounds.requeueAfterMs } : undefined;
  };
}

/** Placed regions whose deltas count: quarantined ones are left out, not waited for. */
function eligibleRegions(
  placed: readonly RegionRunStatus[],
  nodes: readonly SovereignNode[],
): RegionEndpoint[] {
  return placed
    .filter((r) => r.quarantined !== true)
    .map((r) => ({
      name: r.name,
      domain: nodes.find((n) => n.metadata.name === r.name)?.spec.jetStreamDomain ?? r.name,
    }));
}

/** Placed regions whose SovereignNode says they are not Ready (no heartbeat, nothing attested). */
function unreachableRegions(placed: readonly RegionRunStatus[], nodes: readonly SovereignNode[]): string[] {
  return placed
    .filter((r) => {
      const ready = nodes
        .find((n) => n.metadata.name === r.name)
        ?.status?.conditions?.find((c) => c.type === "Ready");
      return ready?.status === "False";
    })
    .map((r) => r.name);
}

/** How often an open round looks for newly delivered deltas in the hub's mirrors (besides arrivals, which wake it at once). */
const DELTA_POLL_MS = 2_000;
const MiB = 1024 * 1024;
const HISTORY_LIMIT = 100;

interface RoundAdvance {
  progress: { roundProgress?: RoundProgress };
  currentRound: number;
  history: RoundOutcome[] | undefined;
  conditions: Condition[] | undefined;
  requeueAfterMs?: number;
  done?: boolean;
  failed?: boolean;
}

/**
 * One step of the run's rounds: decide from status and the delivered deltas (rounds.ts),
 * start or collect the aggregation, and say what the status becomes.
 */
async function advanceRound(
  run: FederatedRun,
  coordinator: RoundCoordinator,
  endpoints: RegionEndpoint[],
  /** Every placed region, quarantined ones included (they are late, not absent). */
  placedNames: readonly string[],
  unreachable: readonly string[],
  now: Date,
  conditionsIn: Condition[] | undefined,
  deps: Pick<FederatedRunReconcilerDeps, "events" | "metrics" | "audit"> & { once: (key: string) => boolean },
): Promise<RoundAdvance> {
  const namespace = run.metadata.namespace ?? "default";
  const name = run.metadata.name ?? "";
  const gen = run.metadata.generation;
  const eligible = endpoints.map((e) => e.name);
  const settings: RoundSettings = {
    algorithm: run.spec.algorithm,
    maxDeltaBytes: (run.spec.deltaEncoding?.maxSizeMiB ?? 4096) * MiB,
    rounds: run.spec.rounds,
    foldsLate: run.spec.quorum?.lateDeltas === "NextRound" && !run.spec.algorithm.robustAggregator,
  };
  const progressIn = run.status?.roundProgress as RoundProgress | undefined;
  let history = run.status?.rounds;
  let conditions = conditionsIn;
  const currentRound = run.status?.currentRound ?? 0;
  const progressing = (reason: string, message: string, status: "True" | "False" = "True") => {
    conditions = setCondition(
      conditions,
      { type: "Progressing", status, reason, message, observedGeneration: gen },
      now,
    );
  };
  const degraded = (status: "True" | "False", reason: string, message: string) => {
    conditions = setCondition(
      conditions,
      { type: "Degraded", status, reason, message, observedGeneration: gen },
      now,
    );
  };
  // The informer may still show the status from before this process's last write, so the
  // same step can be decided twice: what it tells the world (metrics, audit, Events) is said once.
  const uid = run.metadata.uid ?? `${namespace}/${name}`;
  const once = (what: string) => deps.once(`${uid}/${what}`);
  const record = (outcome: RoundOutcome) => {
    // One entry per round (the list is keyed by round): a success replaces a QuorumMissed.
    history = [...(history ?? []).filter((h) => h.round !== outcome.round), outcome].slice(-HISTORY_LIMIT);
    // A round closes once; only QuorumMissed repeats, once per attempt. The attempt's start time
    // is not part of a closed round's key: two decisions from reads that differ in it (a round
    // opened twice from a stale read) would otherwise record the same close twice.
    const attempt = outcome.outcome === "QuorumMissed" ? `/${outcome.startTime}` : "";
    if (!once(`round-${outcome.round}/closed${attempt}`)) return;
    deps.metrics?.rounds.inc({ namespace, run: name, outcome: outcome.outcome });
    deps.audit?.(
      roundClosedRecord({
        run: `${namespace}/${name}`,
        round: outcome.round,
        outcome: outcome.outcome === "QuorumMissed" ? "QuorumMissed" : "QuorumMet",
        quorum: { required: quorumSize(run.spec) },
        contributed: outcome.contributingRegions ?? [],
        missing: outcome.lateRegions ?? [],
        ...(outcome.aggregateDigest ? { modelDigest: outcome.aggregateDigest } : {}),
        ...(outcome.foldedLateDeltas?.length
          ? { lateFolded: outcome.foldedLateDeltas.map((f) => `${f.region}@${f.round}`) }
          : {}),
      }),
    );
  };

  if (progressIn && (progressIn.phase === "Aggregating" || progressIn.phase === "Publishing")) {
    const ref = { namespace, run: name, round: progressIn.round, uid: run.metadata.uid ?? "" };
    const aggregation = coordinator.aggregation(
      ref,
      progressIn.deliveredRegions ?? [],
      settings,
      progressIn.foldedLateDeltas ?? [],
    );
    const contributing = [...aggregation.contributing];
    if (aggregation.state === "running") {
      return { progress: { roundProgress: progressIn }, currentRound, history, conditions };
    }
    if (aggregation.state === "failed") {
      progressing("RunFailed", `round ${ref.round} could not be aggregated: ${aggregation.message}`, "False");
      await deps.events.record(run, "Warning", aggregation.reason, aggregation.message);
      return { progress: {}, currentRound, history, conditions, failed: true };
    }
    const late = placedNames.filter((r) => !contributing.includes(r)).sort();
    record({
      round: ref.round,
      outcome: late.length === 0 ? "AllRegionsReported" : "QuorumReached",
      contributingRegions: [...contributing].sort(),
      lateRegions: late,
      ...(aggregation.late.length > 0 ? { foldedLateDeltas: [...aggregation.late] } : {}),
      aggregateDigest: aggregation.digest,
      startTime: progressIn.startTime,
      completionTime: apiTime(now),
    });
    deps.metrics?.roundDuration.observe(
      { namespace, run: name },
      (now.getTime() - Date.parse(progressIn.startTime)) / 1000,
    );
    const next = afterPublish(run.spec, ref.round);
    const message = `round ${ref.round} aggregated from ${contributing.join(", ")}; global model ${aggregation.digest}`;
    if (once(`round-${ref.round}/aggregated`))
      await deps.events.record(run, "Normal", "RoundAggregated", message);
    if (next.done) {
      progressing("RunCompleted", `all ${run.spec.rounds} rounds finished; ${message}`, "False");
      return { progress: {}, currentRound: next.currentRound, history, conditions, done: true };
    }
    progressing("RoundAggregated", message);
    if (late.length === 0)
      degraded("False", "AsExpected", "every eligible region contributed to the last round");
    return { progress: {}, currentRound: next.currentRound, history, conditions, requeueAfterMs: 0 };
  }

  const round = progressIn?.round ?? Math.max(1, currentRound);
  const ref = { namespace, run: name, round, uid: run.metadata.uid ?? "" };
  const delivered = coordinator.delivered(ref, endpoints, settings, progressIn?.deliveredRegions ?? []);
  const baseModelReady = progressIn ? true : (await coordinator.baseModelDigest(ref)) !== undefined;
  // lateDeltas: NextRound: the late deltas of earlier rounds are verified while this round is
  // open, and those verified when it closes are folded in. A robust rule ignores token weights,
  // so it could not down-weight a stale delta: with one, late deltas are discarded.
  const lateVerified: FoldedLateDelta[] = [];
  if (run.spec.quorum?.lateDeltas === "NextRound" && !run.spec.algorithm.robustAggregator && progressIn) {
    const candidates = lateDeltaCandidates(history, round);
    for (const r of new Set(candidates.map((c) => c.round))) {
      const regionsLate = candidates.filter((c) => c.round === r).map((c) => c.region);
      const found = coordinator.delivered(
        { ...ref, round: r },
        endpoints.filter((e) => regionsLate.includes(e.name)),
        settings,
      );
      lateVerified.push(
        ...found.filter((region) => regionsLate.includes(region)).map((region) => ({ region, round: r })),
      );
    }
  }
  const step = decideRound({
    spec: run.spec,
    currentRound,
    progress: progressIn,
    eligibleRegions: eligible,
    placedRegions: placedNames,
    // A region whose leaf link is down shows in its mirror within seconds, long before its
    // heartbeats are missed: the grace window waits for neither.
    unreachableRegions: [...new Set([...unreachable, ...(await coordinator.silentRegions(eligible))])],
    delivered,
    baseModelReady,
    now: now.getTime(),
  });
  switch (step.action) {
    case "complete":
      return { progress: {}, currentRound, history, conditions, done: true };
    case "open":
      progressing(
        "RoundInProgress",
        `round ${step.progress.round} of ${run.spec.rounds} is collecting deltas`,
      );
      if (once(`round-${step.progress.round}/opened`)) {
        await deps.events.record(
          run,
          "Normal",
          "RoundOpened",
          `round ${step.progress.round} of ${run.spec.rounds} opened`,
        );
      }
      return {
        progress: { roundProgress: step.progress },
        currentRound: step.progress.round,
        history,
        conditions,
        requeueAfterMs: DELTA_POLL_MS,
      };
    case "wait":
      if (!step.progress) progressing("WaitingForModel", step.why, "False");
      return {
        progress: step.progress ? { roundProgress: step.progress } : {},
        currentRound,
        history,
        conditions,
        requeueAfterMs: Math.min(step.requeueAfterMs ?? DELTA_POLL_MS, DELTA_POLL_MS),
      };
    case "aggregate": {
      const message = `round ${round} closes with ${step.outcome.contributingRegions?.join(", ")} (${step.outcome.outcome})`;
      progressing("RoundInProgress", message);
      if (once(`round-${round}/closing`))
        await deps.events.record(run, "Normal", step.outcome.outcome, message);
      if ((step.outcome.lateRegions ?? []).length > 0) {
        degraded(
          "True",
          "RegionsLate",
          `round ${round} closed without ${step.outcome.lateRegions?.join(", ")}`,
        );
      }
      // The set is fixed here, by the first decision, even if a stale read decides again with
      // more. It takes every eligible delta accepted by now, not only those the decision saw: a
      // delta verified in between (during the await above) is aggregated, rather than left
      // accepted and never used. Once fixed, a delta verified later is refused as DeltaTooLate.
      const acceptedSince = coordinator.acceptedRegions(ref).filter((r) => eligible.includes(r));
      const contributing = [...new Set([...step.progress.deliveredRegions, ...acceptedSince])].sort();
      const fixed = coordinator.aggregation(ref, contributing, settings, lateVerified);
      // A delta accepted before its region was quarantined is outside the set: refused, not left
      // unseen. Eligible regions are kept: one's delta accepted after the set was fixed may still
      // be folded into a later round.
      coordinator.excludeAccepted(
        ref,
        [...fixed.contributing, ...eligible],
        HUB_REFUSAL.regionQuarantined,
        (region) =>
          `${region} was quarantined before round ${round} closed, so its delta, accepted earlier, is not aggregated; its deltas count again once its GPUs pass attestation`,
      );
      return {
        progress: {
          roundProgress: {
            ...step.progress,
            deliveredRegions: [...fixed.contributing],
            ...(fixed.late.length > 0 ? { foldedLateDeltas: [...fixed.late] } : {}),
          },
        },
        currentRound,
        history,
        conditions,
      };
    }
    case "retry":
      record(step.outcome);
      degraded(
        "True",
        "QuorumMissed",
        `round ${round} missed quorum (${delivered.length} delivered); retrying`,
      );
      if (once(`round-${round}/missed/${step.outcome.startTime}`)) {
        await deps.events.record(run, "Warning", "QuorumMissed", `round ${round} missed quorum; retrying`);
      }
      return {
        progress: { roundProgress: step.progress },
        currentRound,
        history,
        conditions,
        requeueAfterMs: DELTA_POLL_MS,
      };
  }
}

/** startTime is set once; it must not make an otherwise unchanged status look changed. */
function withoutStartTime(s: FederatedRunStatus | undefined): unknown {
  if (!s) return undefined;
  const { startTime: _startTime, ...rest } = s;
  return rest;
}
