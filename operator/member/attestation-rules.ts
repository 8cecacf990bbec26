// The attestation gate's decisions, as pure functions: which nodes may be challenged
// (the GPU operator's CC labels, a pre-filter that proves nothing), whether a node's latest
// verdict lets learners run there (passed and younger than the policy's maximum age), when to
// challenge it again (period plus jitter, so a region's nodes are never challenged at once),
// where to place a learner, and which learners a quarantine stops. The controllers only wire
// these to the API (attestation-controller.ts, attestation-gate.ts).
import type { V1Node, V1Pod } from "@kubernetes/client-node";
import type { AttestationPolicySpec } from "../../crds/types.generated.ts";

/** Reason codes of the gate itself, beside the verifier's (attestation/reasons.ts). */
export const GateReason = {
  /** The node's latest verdict passed and is younger than the policy's maximum age. */
  Verified: "Verified",
  /** The node's agent could not be reached or did not answer; retried with backoff. */
  EvidenceUnavailable: "EvidenceUnavailable",
  /** The evidence covers fewer distinct GPUs than the node advertises: every GPU must verify. */
  EvidenceIncomplete: "EvidenceIncomplete",
  /** No GPU node is attested (or could be) with enough free GPUs for the learner. */
  NoAttestedNode: "NoAttestedNode",
  /** The work names another AttestationPolicy than the one this member verifies against. */
  PolicyMismatch: "PolicyMismatch",
  /** The learner's key Secret is missing or belongs to another pod. */
  LearnerKeyMissing: "LearnerKeyMissing",
  /** NVIDIA's GPU operator does not report the node ready for confidential computing. */
  NotCcReady: "NotCcReady",
} as const;

/** Labels NVIDIA's GPU operator sets (gpu-feature-discovery and the CC manager). */
export const GPU_OPERATOR_LABELS = {
  present: "nvidia.com/gpu.present",
  ccCapable: "nvidia.com/cc.capable",
  ccModeState: "nvidia.com/cc.mode.state",
  ccReadyState: "nvidia.com/cc.ready.state",
} as const;
export const GPU_NODE_SELECTOR = `${GPU_OPERATOR_LABELS.present}=true`;
export const GPU_RESOURCE = "nvidia.com/gpu";

/** Where a node's latest verdict is kept, so a restarted member resumes from it. */
export const NODE_ANNOTATIONS = {
  verdict: "sovereign.ai/attestation-verdict",
  time: "sovereign.ai/attestation-time",
  evidenceTime: "sovereign.ai/attestation-evidence-time",
  reason: "sovereign.ai/attestation-reason",
  message: "sovereign.ai/attestation-message",
  policy: "sovereign.ai/attestation-policy",
  quarantinedAt: "sovereign.ai/quarantined-at",
  /** Set or change it (any value) to have the node challenged at once: `kubectl annotate node … sovereign.ai/reattest=$(date +%s) --overwrite`. */
  reattest: "sovereign.ai/reattest",
} as const;

// ---------------------------------------------------------------------------------------------
// Pre-filter

const CC_MODE_STATES: Record<AttestationPolicySpec["ccMode"], readonly string[]> = {
  On: ["on"],
  ProtectedPCIe: ["ppcie"],
  DevTools: ["on", "devtools"],
};

/**
 * Whether the GPU operator's labels make the node worth challenging for the policy's CC mode.
 * They are the node's own statement, so they can only rule a node out; only a verdict rules it
 * in. `cc.ready.state` is honoured when present (older GPU operators, and the testbed, do not set it).
 */
export function ccPrefilter(
  node: V1Node,
  ccMode: AttestationPolicySpec["ccMode"],
): { ok: true } | { ok: false; message: string } {
  const labels = node.metadata?.labels ?? {};
  const L = GPU_OPERATOR_LABELS;
  if (labels[L.present] !== "true") return { ok: false, message: `${L.present} is not true` };
  if (labels[L.ccCapable] !== "true") return { ok: false, message: `${L.ccCapable} is not true` };
  const state = labels[L.ccModeState];
  if (!CC_MODE_STATES[ccMode].includes(state ?? "")) {
    return {
      ok: false,
      message: `${L.ccModeState}=${state ?? "(unset)"}, the policy needs ${CC_MODE_STATES[ccMode].join(" or ")}`,
    };
  }
  const ready = labels[L.ccReadyState];
  if (ready !== undefined && ready !== "true") return { ok: false, message: `${L.ccReadyState}=${ready}` };
  return { ok: true };
}

/** GPUs the node offers (allocatable nvidia.com/gpu); every one of them must verify. */
export function nodeGpus(node: V1Node): number {
  const n = Number(node.status?.allocatable?.[GPU_RESOURCE] ?? node.status?.capacity?.[GPU_RESOURCE] ?? 0);
  return Number.isSafeInteger(n) && n > 0 ? n : 0;
}

/** What, when it changes, makes the node due at once: the GPU operator's CC labels and the reattest annotation. */
export function attestationInputs(node: V1Node): string {
  const labels = node.metadata?.labels ?? {};
  const L = GPU_OPERATOR_LABELS;
  return JSON.stringify([
    labels[L.present],
    labels[L.ccCapable],
    labels[L.ccModeState],
    labels[L.ccReadyState],
    node.metadata?.annotations?.[NODE_ANNOTATIONS.reattest],
  ]);
}

// ---------------------------------------------------------------------------------------------
// Verdicts and freshness

/** What the member keeps of a node's latest verdict (the whole verdict is in the audit log). */
export interface NodeVerdict {
  passed: boolean;
  /** Verifier reason codes, plus GateReason.EvidenceIncomplete; empty when passed. */
  reasons: string[];
  message: string;
  /** verdictDigest() of the verdict; absent when the evidence could not even be read. */
  digest?: string;
  /** When the verdict was reached (ms since the epoch). */
  evaluatedAt: number;
  /** When the challenge was issued (ms): the evidence's age counts from here. */
  collectedAt: number;
  /** sha256 of the canonical policy spec judged against. */
  policyDigest: string;
}

export type NodeState =
  | { state: "Unknown" }
  | { state: "Attested"; ageSeconds: number; expiresAt: number }
  | { state: "Quarantined"; since: number; reasons: string[]; message: string };

/** The smaller of the policy's evidence age limit and the run's own (which can only tighten it). */
export function effectiveMaxAgeSeconds(
  policy: Pick<AttestationPolicySpec, "maxEvidenceAgeSeconds">,
  runMax?: number,
): number {
  return runMax !== undefined && runMax > 0
    ? Math.min(policy.maxEvidenceAgeSeconds, runMax)
    : policy.maxEvidenceAgeSeconds;
}

/**
 * The node's standing from its latest verdict: learners may run on it only while the verdict
 * passed and its evidence is younger than the maximum age. A failed verdict quarantines the node
 * from the moment it was reached; a passing one that ages out quarantines it from the moment it
 * expired (EvidenceStale), as the member could not re-attest it in time.
 */
export function judgeNode(latest: NodeVerdict | undefined, now: number, maxAgeSeconds: number): NodeState {
  if (latest === undefined) return { state: "Unknown" };
  if (!latest.passed) {
    return {
      state: "Quarantined",
      since: latest.evaluatedAt,
      reasons: latest.reasons.length > 0 ? latest.reasons : ["AttestationFailed"],
      message: latest.message,
    };
  }
  const expiresAt = latest.collectedAt + maxAgeSeconds * 1000;
  if (now > expiresAt) {
    return {
      state: "Quarantined",
      since: expiresAt,
      reasons: ["EvidenceStale"],
      message: `the latest passing evidence (${new Date(latest.collectedAt).toISOString()}) is older than ${maxAgeSeconds} s and the node could not be re-attested since`,
    };
  }
  return { state: "Attested", ageSeconds: Math.max(0, (now - latest.collectedAt) / 1000), expiresAt };
}

/** The latest verdict passes and is younger than `maxAgeSeconds`: the gate's release condition. */
export const verdictAdmits = (latest: NodeVerdict | undefined, now: number, maxAgeSeconds: number): boolean =>
  judgeNode(latest, now, maxAgeSeconds).state === "Attested";

// ---------------------------------------------------------------------------------------------
// Re-attestation schedule

/** After a verdict (passed or failed): the period plus a uniform share of the jitter, per node. */
export function reattestationDelayMs(
  reattestation: AttestationPolicySpec["reattestation"],
  random: () => number,
): number {
  const period = reattestation?.periodSeconds ?? 3600;
  const jitter = reattestation?.jitterSeconds ?? 300;
  return Math.round((period + Math.min(Math.max(random(), 0), 1) * jitter) * 1000);
}

const BACKOFF_BASE_MS = 5_000;
const BACKOFF_MAX_MS = 5 * 60_000;

/**
 * After the node could not be challenged (agent down, timeout): 5 s doubling per consecutive
 * failure up to 5 min (never beyond the period), stretched by up to half again at random so
 * nodes that failed together do not retry together.
 */
export function unavailableBackoffMs(
  consecutiveErrors: number,
  reattestation: AttestationPolicySpec["reattestation"],
  random: () => number,
): number {
  const periodMs = (reattestation?.periodSeconds ?? 3600) * 1000;
  const base = Math.min(BACKOFF_BASE_MS * 2 ** Math.max(0, consecutiveErrors - 1), BACKOFF_MAX_MS, periodMs);
  return Math.round(base * (1 + 0.5 * Math.min(Math.max(random(), 0), 1)));
}

/**
 * When a node seen for the first time (or after a restart) is due: now without a usable verdict,
 * else one jittered period after the verdict's evidence — so a restarted member keeps the nodes'
 * phases spread instead of challenging them all at once.
 */
export function firstDueAt(
  latest: NodeVerdict | undefined,
  policyDigest: string,
  now: number,
  reattestation: AttestationPolicySpec["reattestation"],
  random: () => number,
): number {
  if (latest === undefined || latest.policyDigest !== policyDigest) return now;
  return Math.max(now, latest.collectedAt + reattestationDelayMs(reattestation, random));
}

// ---------------------------------------------------------------------------------------------
// Placement

export interface PlacementCandidate {
  name: string;
  state: NodeState;
  prefilter: { ok: true } | { ok: false; message: string };
  gpus: number;
  /** GPUs requested by learner pods bound, pinned or being admitted to the node. */
  usedGpus: number;
  /** Learner pods bound, pinned or being admitted to the node. */
  learners: number;
  /** The node's agent failed to answer; not challenged again before this time (ms). */
  unreachableUntil?: number;
}

/**
 * Where to admit a learner needing `needGpus`: a CC-ready, unquarantined, reachable node with
 * room, preferring nodes already attested (no extra risk of a failing challenge), then the one
 * with the fewest learners (spread, so one failing node stops as few as possible), then the most
 * free GPUs, then by name. Without one, says for every node why not.
 */
export function chooseNode(
  candidates: readonly PlacementCandidate[],
  needGpus: number,
  now: number,
): { node: string } | { node?: undefined; reason: string; message: string } {
  const why: string[] = [];
  const fit = candidates.filter((c) => {
    const free = c.gpus - c.usedGpus;
    if (!c.prefilter.ok) why.push(`${c.name}: not CC-ready (${c.prefilter.message})`);
    else if (c.state.state === "Quarantined")
      why.push(`${c.name}: quarantined (${c.state.reasons.join(", ")})`);
    else if ((c.unreachableUntil ?? 0) > now)
      why.push(
        `${c.name}: agent unreachable, next try ${new Date(c.unreachableUntil as number).toISOString()}`,
      );
    else if (c.gpus === 0 || free < needGpus)
      why.push(`${c.name}: ${free} of ${c.gpus} GPUs free, need ${needGpus}`);
    else return true;
    return false;
  });
  const rank = (c: PlacementCandidate) => (c.state.state === "Attested" ? 0 : 1);
  fit.sort(
    (a, b) =>
      rank(a) - rank(b) ||
      a.learners - b.learners ||
      b.gpus - b.usedGpus - (a.gpus - a.usedGpus) ||
      a.name.localeCompare(b.name),
  );
  const best = fit[0];
  if (best) return { node: best.name };
  return {
    reason: GateReason.NoAttestedNode,
    message:
      candidates.length === 0
        ? "the region has no GPU node"
        : `no GPU node can take the learner: ${why.sort().join("; ")}`,
  };
}

/** GPUs a pod asks for (limits, else requests, summed over its containers). */
export function podGpus(pod: V1Pod): number {
  let total = 0;
  for (const c of pod.spec?.containers ?? []) {
    const q = c.resources?.limits?.[GPU_RESOURCE] ?? c.resources?.requests?.[GPU_RESOURCE];
    const n = Number(q ?? 0);
    if (Number.isFinite(n) && n > 0) total += n;
  }
  return total;
}

// ---------------------------------------------------------------------------------------------
// Quarantine

/** The annotation the gate pins a learner with (its node, before the scheduler binds it). */
export const ATTESTED_NODE_ANNOTATION = "sovereign.ai/attested-node";

/** The node a learner pod runs on or is pinned to. */
export const learnerNode = (pod: V1Pod): string | undefined =>
  pod.spec?.nodeName || pod.metadata?.annotations?.[ATTESTED_NODE_ANNOTATION] || undefined;

/** Learners a quarantine of `node` stops: those bound or pinned there and not already finished or going. */
export function learnersToStop(node: string, pods: readonly V1Pod[]): V1Pod[] {
  return pods.filter(
    (p) =>
      learnerNode(p) === node &&
      !p.metadata?.deletionTimestamp &&
      p.status?.phase !== "Succeeded" &&
      p.status?.phase !== "Failed",
  );
}

/** One line for logs, Events and annotations: the reasons and the first message. */
export function summarise(reasons: readonly string[], message: string, max = 1024): string {
  const text = `${reasons.join(",")}: ${message}`;
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}
