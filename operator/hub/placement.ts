// Placement: which regions a FederatedRun runs in, and why every other region was not
// chosen. A pure function of the run and the SovereignNodes, so the reconciler only
// fetches, calls this and writes the result to status and Events.
//
// Eligibility is an ordered chain of checks (the first failure is the region's reason),
// then eligible regions are ranked: regions already placed first (a run never moves
// between regions because another became more attractive), then the regions that cover a
// required jurisdiction, then the most attested GPUs, then by name so the choice is
// deterministic.
import type { FederatedRun, SovereignNode } from "../../crds/types.generated.ts";
import { selectorMatches } from "../runtime/labels.ts";

export type RegionRejection =
  | "NotAccepted"
  | "NotReady"
  | "Quarantined"
  | "SelectorMismatch"
  | "JurisdictionExcluded"
  | "InsufficientAttestedGpus"
  | "CapacityExceeded"
  | "MaxRegionsReached";

export interface RejectedRegion {
  name: string;
  reason: RegionRejection;
  message: string;
}

export type PlacementOutcome =
  | "RegionsSelected"
  | "NoMatchingRegions"
  | "TooFewRegions"
  | "RequiredJurisdictionUnavailable"
  | "PolicyNotFound";

export interface PlacementDecision {
  outcome: PlacementOutcome;
  /** Chosen region names, in ranking order. Empty unless outcome is RegionsSelected. */
  chosen: string[];
  rejected: RejectedRegion[];
  /**
   * Chosen regions, placed before, that fail a check they may recover from (NotReady,
   * Quarantined, InsufficientAttestedGpus). They stay placed: the run's quorum rules decide
   * without them, instead of the run being re-placed or stopped (operator/hub/quarantine.ts).
   */
  impaired: RejectedRegion[];
  message: string;
}

/** Failures a placed region keeps its place through: it may come back, and the run goes on meanwhile. */
const RECOVERABLE: ReadonlySet<RegionRejection> = new Set([
  "NotReady",
  "Quarantined",
  "InsufficientAttestedGpus",
]);

function condition(node: SovereignNode, type: string) {
  return node.status?.conditions?.find((c) => c.type === type);
}

/** GPUs one learner asks for: its nvidia.com/gpu limit (or request), 1 if it names none. */
export function gpusPerLearner(run: FederatedRun): number {
  const r = run.spec.workload.resources;
  const v = r?.limits?.["nvidia.com/gpu"] ?? r?.requests?.["nvidia.com/gpu"];
  const n = Number(v ?? 1);
  return Number.isFinite(n) && n > 0 ? n : 1;
}

type Check = (run: FederatedRun, node: SovereignNode) => Omit<RejectedRegion, "name"> | undefined;

const eligibility: Check[] = [
  (_run, node) =>
    node.spec.accepted
      ? undefined
      : {
          reason: "NotAccepted",
          message: "a hub administrator has not accepted this region (spec.accepted is false)",
        },
  (_run, node) => {
    const q = condition(node, "Quarantined");
    return q?.status === "True"
      ? { reason: "Quarantined", message: `the region is quarantined (${q.reason}): ${q.message}` }
      : undefined;
  },
  (_run, node) => {
    const ready = condition(node, "Ready");
    if (ready?.status === "True") return undefined;
    return {
      reason: "NotReady",
      message: ready
        ? `Ready is ${ready.status} (${ready.reason}): ${ready.message}`
        : "the region has not reported Ready yet",
    };
  },
  (run, node) =>
    selectorMatches(run.spec.placement.regionSelector, node.metadata.labels)
      ? undefined
      : { reason: "SelectorMismatch", message: "the region's labels do not match placement.regionSelector" },
  (run, node) =>
    (run.spec.placement.excludedJurisdictions ?? []).includes(node.spec.jurisdiction)
      ? {
          reason: "JurisdictionExcluded",
          message: `jurisdiction ${node.spec.jurisdiction} is in placement.excludedJurisdictions`,
        }
      : undefined,
  (run, node) => {
    const learners = run.spec.workload.learnersPerRegion;
    const max = node.spec.capacity?.maxLearners;
    return max !== undefined && max < learners
      ? {
          reason: "CapacityExceeded",
          message: `the region offers at most ${max} learners per run; the run needs ${learners}`,
        }
      : undefined;
  },
  (run, node) => {
    const need = run.spec.workload.learnersPerRegion * gpusPerLearner(run);
    const attested = node.status?.gpuNodes?.attestedGpus ?? 0;
    const offered = Math.min(attested, node.spec.capacity?.maxGpus ?? Number.POSITIVE_INFINITY);
    return offered < need
      ? {
          reason: "InsufficientAttestedGpus",
          message: `${offered} attested GPUs offered; the run needs ${need} (${run.spec.workload.learnersPerRegion} learners × ${gpusPerLearner(run)})`,
        }
      : undefined;
  },
];

export function decidePlacement(
  run: FederatedRun,
  nodes: readonly SovereignNode[],
  previouslyPlaced: readonly string[] = [],
): PlacementDecision {
  const { minRegions, maxRegions, requiredJurisdictions = [] } = run.spec.placement;
  const rejected: RejectedRegion[] = [];
  const impaired: RejectedRegion[] = [];
  const eligible: SovereignNode[] = [];
  for (const node of [...nodes].sort((a, b) =>
    (a.metadata.name ?? "").localeCompare(b.metadata.name ?? ""),
  )) {
    const name = node.metadata.name ?? "";
    const failure = eligibility.map((check) => check(run, node)).find((r) => r !== undefined);
    if (failure && previouslyPlaced.includes(name) && RECOVERABLE.has(failure.reason)) {
      impaired.push({ name, ...failure });
      eligible.push(node);
    } else if (failure) rejected.push({ name, ...failure });
    else eligible.push(node);
  }

  const wasPlaced = (n: SovereignNode) => previouslyPlaced.includes(n.metadata.name ?? "");
  const coversRequired = (n: SovereignNode) => requiredJurisdictions.includes(n.spec.jurisdiction);
  const attested = (n: SovereignNode) => n.status?.gpuNodes?.attestedGpus ?? 0;
  const ranked = [...eligible].sort(
    (a, b) =>
      Number(wasPlaced(b)) - Number(wasPlaced(a)) ||
      Number(coversRequired(b)) - Number(coversRequired(a)) ||
      attested(b) - attested(a) ||
      (a.metadata.name ?? "").localeCompare(b.metadata.name ?? ""),
  );

  // Take one region per required jurisdiction first, so a cap on maxRegions never
  // crowds a required jurisdiction out; then fill up in ranking order.
  const limit = maxRegions ?? Number.POSITIVE_INFINITY;
  const chosen: SovereignNode[] = [];
  for (const j of requiredJurisdictions) {
    const pick = ranked.find((n) => n.spec.jurisdiction === j && !chosen.includes(n));
    if (pick && chosen.length < limit && !chosen.some((c) => c.spec.jurisdiction === j)) chosen.push(pick);
  }
  for (const n of ranked) if (chosen.length < limit && !chosen.includes(n)) chosen.push(n);
  for (const n of ranked) {
    if (!chosen.includes(n)) {
      rejected.push({
        name: n.metadata.name ?? "",
        reason: "MaxRegionsReached",
        message: `eligible, but placement.maxRegions (${maxRegions}) regions were already chosen`,
      });
    }
  }
  rejected.sort((a, b) => a.name.localeCompare(b.name));
  const names = chosen.map((n) => n.metadata.name ?? "");

  const missing = requiredJurisdictions.filter((j) => !chosen.some((n) => n.spec.jurisdiction === j));
  if (missing.length > 0) {
    return {
      outcome: "RequiredJurisdictionUnavailable",
      chosen: [],
      rejected,
      impaired: [],
      message: `no eligible region in required jurisdiction(s) ${missing.join(", ")}; placement is retried when regions change`,
    };
  }
  if (chosen.length === 0) {
    return {
      outcome: "NoMatchingRegions",
      chosen: [],
      rejected,
      impaired: [],
      message:
        "no accepted, ready region matches the placement rules; see status.regions for each region's reason",
    };
  }
  if (chosen.length < minRegions) {
    return {
      outcome: "TooFewRegions",
      chosen: [],
      rejected,
      impaired: [],
      message: `${chosen.length} eligible region(s) (${names.join(", ")}), fewer than placement.minRegions ${minRegions}; placement is retried when regions change`,
    };
  }
  const kept = impaired.filter((r) => names.includes(r.name));
  return {
    outcome: "RegionsSelected",
    chosen: names,
    rejected,
    impaired: kept,
    message:
      `placed on ${names.join(", ")}` +
      (kept.length > 0 ? `; ${kept.map((r) => `${r.name} stays placed while ${r.reason}`).join(", ")}` : ""),
  };
}
