// The I/O edge of the gate: challenge a GPU node through the evidence source, verify what comes
// back against the AttestationPolicy (every GPU must pass, and all of them must be there), audit
// the verdict, and make the node's standing visible and enforced: the `sovereign.ai/attested`
// label (true / false) and annotations with the verdict's digest, time and reason; on entering
// quarantine a NodeQuarantined audit record, an Event and the node's learners stopped.
//
// One challenge per node at a time (`withNode`): the re-attestation loop and the gate's
// admissions of learners to the same node are serialised, so "the latest verdict" is well defined.
import { createHash } from "node:crypto";
import {
  CoreV1Api,
  type KubeConfig,
  PatchStrategy,
  setHeaderOptions,
  type V1Node,
  type V1Pod,
} from "@kubernetes/client-node";
import {
  type AuditLog,
  attestationVerdictRecord,
  nodeQuarantinedRecord,
} from "../../attestation/audit/mod.ts";
import {
  ALL_REASONS,
  canonicalJson,
  evaluatePolicy,
  type TrustAnchors,
  type Verdict,
  verdictDigest,
  verifyLocalEvidence,
} from "../../attestation/mod.ts";
import type { AttestationPolicySpec } from "../../crds/types.generated.ts";
import type { Clock } from "../runtime/clock.ts";
import { apiTime } from "../runtime/conditions.ts";
import type { EventRecorder } from "../runtime/events.ts";
import type { Logger } from "../runtime/log.ts";
import type { OperatorMetrics } from "../runtime/metrics.ts";
import {
  firstDueAt,
  GateReason,
  judgeNode,
  learnersToStop,
  NODE_ANNOTATIONS,
  type NodeState,
  type NodeVerdict,
  nodeGpus,
  summarise,
  unavailableBackoffMs,
} from "./attestation-rules.ts";
import { type EvidenceAppraiser, type EvidenceSource, isEvidenceError } from "./evidence-source.ts";
import { ATTESTED_LABEL } from "./registration.ts";

/** The AttestationPolicy the member verifies against: its name, generation (for the audit) and spec. */
export interface MemberPolicy {
  name: string;
  generation: number;
  spec: AttestationPolicySpec;
}

export const ATTESTATION_PURPOSES = ["admission", "reattestation"] as const;
export type AttestationPurpose = (typeof ATTESTATION_PURPOSES)[number];

export interface NodeRecord {
  latest?: NodeVerdict;
  /** When the node is next challenged by the re-attestation loop (ms). */
  dueAt: number;
  /** The time dueAt was reckoned from; a verdict after it (an admission's) restarts the period. */
  scheduledAt?: number;
  /** Consecutive challenges that got no evidence. */
  errors: number;
  /** After a challenge got no evidence: not tried again (by the gate) before this time. */
  unreachableUntil?: number;
  /** attestationInputs() when last looked at: a change makes the node due at once. */
  inputs?: string;
  /** The standing last written to the node, to notice transitions. */
  enforced?: NodeState["state"];
}

export type AttestOutcome =
  | { kind: "verdict"; passed: boolean; node: NodeVerdict; verdict?: Verdict }
  | { kind: "unavailable"; message: string };

export interface NodeAttesterDeps {
  region: string;
  regionKc: KubeConfig;
  policy: MemberPolicy;
  anchors: TrustAnchors;
  source: EvidenceSource;
  /**
   * Default: the local verifier against `anchors`, on the evidence as the node supplied it. setup.ts
   * passes local-references.ts's (which fetches what is missing first) or nras-appraiser.ts's.
   */
  appraise?: EvidenceAppraiser;
  audit: () => Promise<AuditLog>;
  clock: Clock;
  log: Logger;
  getNode: (name: string) => V1Node | undefined;
  /** This member's learner pods (quarantine stops those on the node). */
  ownPods: () => readonly V1Pod[];
  metrics?: OperatorMetrics;
  events?: EventRecorder;
  random?: () => number;
}

export const policyDigestOf = (spec: AttestationPolicySpec): string =>
  createHash("sha256").update(canonicalJson(spec)).digest("hex");

const MESSAGE_MAX = 1024;

/** The verdict a node's annotations recorded, or undefined. */
export function verdictFromAnnotations(node: V1Node): NodeVerdict | undefined {
  const a = node.metadata?.annotations ?? {};
  const A = NODE_ANNOTATIONS;
  const evaluatedAt = Date.parse(a[A.time] ?? "");
  const collectedAt = Date.parse(a[A.evidenceTime] ?? "");
  const reason = a[A.reason];
  if (!reason || !a[A.policy] || Number.isNaN(evaluatedAt) || Number.isNaN(collectedAt)) return undefined;
  const passed = reason === GateReason.Verified;
  return {
    passed,
    reasons: passed ? [] : reason.split(","),
    message: a[A.message] ?? "",
    ...(a[A.verdict] ? { digest: a[A.verdict] } : {}),
    evaluatedAt,
    collectedAt,
    policyDigest: a[A.policy] as string,
  };
}

export class NodeAttester {
  readonly policyDigest: string;
  readonly #deps: NodeAttesterDeps;
  readonly #core: CoreV1Api;
  readonly #records = new Map<string, NodeRecord>();
  readonly #locks = new Map<string, Promise<unknown>>();
  readonly #random: () => number;
  readonly #appraise: EvidenceAppraiser;

  constructor(deps: NodeAttesterDeps) {
    this.#deps = deps;
    // Every outcome this attester can count starts at 0: Prometheus's increase() needs a sample
    // before the first event, or a dashboard misses the first failure of each reason.
    for (const purpose of ATTESTATION_PURPOSES) {
      const count = (result: string, reason: string) =>
        deps.metrics?.attestationVerifications.inc({ result, reason, purpose }, 0);
      count("passed", GateReason.Verified);
      count("error", GateReason.EvidenceUnavailable);
      for (const reason of [...ALL_REASONS, GateReason.EvidenceIncomplete]) count("failed", reason);
    }
    this.#core = deps.regionKc.makeApiClient(CoreV1Api);
    this.#random = deps.random ?? Math.random;
    this.policyDigest = policyDigestOf(deps.policy.spec);
    this.#appraise =
      deps.appraise ??
      ((input) =>
        verifyLocalEvidence({
          devices: input.devices,
          expectedNonce: input.nonce,
          collectedAt: input.collectedAt,
          anchors: deps.anchors,
        }));
  }

  get policy(): MemberPolicy {
    return this.#deps.policy;
  }

  /** The node's record, read from its annotations the first time (so a restart resumes). */
  record(name: string): NodeRecord {
    let rec = this.#records.get(name);
    if (rec) return rec;
    const node = this.#deps.getNode(name);
    const stored = node ? verdictFromAnnotations(node) : undefined;
    const latest = stored?.policyDigest === this.policyDigest ? stored : undefined;
    const label = node?.metadata?.labels?.[ATTESTED_LABEL];
    rec = {
      ...(latest ? { latest } : {}),
      dueAt: firstDueAt(
        latest,
        this.policyDigest,
        this.#deps.clock.now(),
        this.policy.spec.reattestation,
        this.#random,
      ),
      errors: 0,
      ...(latest ? { scheduledAt: latest.evaluatedAt } : {}),
      ...(latest
        ? { enforced: label === "true" ? "Attested" : label === "false" ? "Quarantined" : "Unknown" }
        : {}),
    };
    this.#records.set(name, rec);
    return rec;
  }

  forget(name: string): void {
    this.#records.delete(name);
    this.#updateGauge();
  }

  state(name: string, maxAgeSeconds = this.policy.spec.maxEvidenceAgeSeconds): NodeState {
    return judgeNode(this.record(name).latest, this.#deps.clock.now(), maxAgeSeconds);
  }

  /** When and why the node was quarantined, if it is: revokes the keys of learners admitted to it before. */
  quarantine(name: string): { at: number; reasons: string[] } | undefined {
    if (!this.#records.has(name) && !this.#deps.getNode(name)) return undefined;
    const s = this.state(name);
    return s.state === "Quarantined" ? { at: s.since, reasons: s.reasons } : undefined;
  }

  /** Each known node's latest evidence age, for the evidence age gauge. */
  *evidenceAges(): Iterable<readonly [string, number]> {
    const now = this.#deps.clock.now();
    for (const [name, rec] of this.#records) {
      if (rec.latest) yield [name, Math.max(0, (now - rec.latest.collectedAt) / 1000)] as const;
    }
  }

  /** Runs `fn` with the node to itself: no other challenge or standing change of it meanwhile. */
  async withNode<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const before = this.#locks.get(name) ?? Promise.resolve();
    const run = before.then(fn);
    const settled = run.catch(() => undefined);
    this.#locks.set(name, settled);
    try {
      return await run;
    } finally {
      if (this.#locks.get(name) === settled) this.#locks.delete(name);
    }
  }

  /**
   * Challenges the node with `nonce` and judges the answer. Call it inside `withNode`. The
   * verdict is audited before anything acts on it; a node that answers nothing keeps its
   * standing (until its evidence ages out) and is not tried again before a backoff.
   */
  async attest(name: string, nonce: Uint8Array, purpose: AttestationPurpose): Promise<AttestOutcome> {
    const { clock, policy, metrics, log } = this.#deps;
    const rec = this.record(name);
    const node = this.#deps.getNode(name);
    const gpus = node ? nodeGpus(node) : 0;
    const address = node?.status?.addresses?.find((a) => a.type === "InternalIP")?.address;
    const issuedAt = clock.now();
    const started = performance.now();
    let collectedAt = issuedAt;
    let facts: Awaited<ReturnType<EvidenceAppraiser>>;
    try {
      const devices = await this.#deps.source.collect({ node: name, address, nonce, gpus });
      const claimed = devices.collectedAt ? Date.parse(devices.collectedAt) : Number.NaN;
      collectedAt = Number.isNaN(claimed) ? issuedAt : Math.min(issuedAt, claimed);
      facts = await this.#appraise({
        devices: devices.devices,
        nonce,
        collectedAt: new Date(collectedAt).toISOString(),
      });
    } catch (err) {
      if (isEvidenceError(err) && err.reason === "EvidenceMalformed") {
        const verdict: NodeVerdict = {
          passed: false,
          reasons: ["EvidenceMalformed"],
          message: err.message,
          evaluatedAt: clock.now(),
          collectedAt: issuedAt,
          policyDigest: this.policyDigest,
        };
        rec.latest = verdict;
        rec.errors = 0;
        metrics?.attestationVerifications.inc({ result: "failed", reason: "EvidenceMalformed", purpose });
        log.warn("the node answered the challenge with something that is not evidence", { node: name, err });
        return { kind: "verdict", passed: false, node: verdict };
      }
      rec.errors++;
      const backoff = unavailableBackoffMs(rec.errors, policy.spec.reattestation, this.#random);
      rec.unreachableUntil = clock.now() + backoff;
      metrics?.attestationVerifications.inc({
        result: "error",
        reason: GateReason.EvidenceUnavailable,
        purpose,
      });
      log.warn("could not challenge the GPU node", {
        node: name,
        purpose,
        attempt: rec.errors,
        retryInMs: backoff,
        err,
      });
      return { kind: "unavailable", message: (err as Error).message };
    }
    const evaluatedAt = clock.now();
    const verdict = evaluatePolicy(facts, policy.spec, { at: new Date(evaluatedAt) });
    // Every GPU the node offers must be covered, each by its own device identity: eight copies
    // of one good GPU's evidence are one GPU.
    const distinctGpus = new Set(verdict.devices.filter((d) => d.kind === "gpu").map((d) => d.deviceId)).size;
    const complete = distinctGpus >= gpus && gpus > 0;
    const reasons: string[] = [...verdict.reasons, ...(complete ? [] : [GateReason.EvidenceIncomplete])];
    const findings = verdict.devices.flatMap((d) =>
      d.failures.map((f) => `${d.deviceId} ${f.subject}: ${f.message}`),
    );
    if (!complete) {
      findings.unshift(
        `the evidence covers ${distinctGpus} distinct GPUs and ${verdict.devices.length} devices, the node advertises ${gpus} GPUs; every GPU must verify`,
      );
    }
    const passed = verdict.passed && complete;
    const nodeVerdict: NodeVerdict = {
      passed,
      reasons: passed ? [] : [...new Set(reasons)],
      message: passed
        ? `${distinctGpus} GPUs verified under ${policy.name}`
        : findings.slice(0, 3).join("; ").slice(0, MESSAGE_MAX),
      digest: verdictDigest(verdict),
      evaluatedAt,
      collectedAt,
      policyDigest: verdict.policyDigest,
    };
    await (await this.#deps.audit()).append(
      attestationVerdictRecord({
        region: this.#deps.region,
        node: name,
        policy: { name: policy.name, generation: policy.generation },
        verdict,
      }),
    );
    rec.latest = nodeVerdict;
    rec.errors = 0;
    rec.unreachableUntil = undefined;
    metrics?.attestationDuration.observe((performance.now() - started) / 1000);
    metrics?.attestationVerifications.inc({
      result: passed ? "passed" : "failed",
      reason: passed
        ? GateReason.Verified
        : ((complete ? verdict.reasons[0] : GateReason.EvidenceIncomplete) ?? "Unknown"),
      purpose,
    });
    log.info(passed ? "GPU node attested" : "GPU node failed attestation", {
      node: name,
      purpose,
      gpus: distinctGpus,
      reasons: nodeVerdict.reasons,
      verdict: nodeVerdict.digest,
    });
    return { kind: "verdict", passed, node: nodeVerdict, verdict };
  }

  /**
   * Makes the node's standing true in the cluster: label and annotations, and while it is
   * quarantined, none of this member's learners on it. Idempotent (level-based): a member that
   * restarts mid-quarantine finishes it. Call it inside `withNode`.
   */
  async enforce(name: string): Promise<NodeState> {
    const node = this.#deps.getNode(name);
    const rec = this.record(name);
    const state = this.state(name);
    if (!node || state.state === "Unknown") return state;
    const latest = rec.latest as NodeVerdict;
    const A = NODE_ANNOTATIONS;
    const annotations: Record<string, string | null> = {
      [A.verdict]: latest.digest ?? null,
      [A.time]: apiTime(latest.evaluatedAt),
      [A.evidenceTime]: apiTime(latest.collectedAt),
      [A.reason]: state.state === "Attested" ? GateReason.Verified : state.reasons.join(","),
      [A.message]: (state.state === "Attested" ? latest.message : state.message).slice(0, MESSAGE_MAX),
      [A.policy]: latest.policyDigest,
      [A.quarantinedAt]: state.state === "Quarantined" ? apiTime(state.since) : null,
    };
    const label = state.state === "Attested" ? "true" : "false";
    const have = node.metadata?.annotations ?? {};
    const differs =
      node.metadata?.labels?.[ATTESTED_LABEL] !== label ||
      Object.entries(annotations).some(([k, v]) => (have[k] ?? null) !== v);
    if (differs) {
      await this.#core.patchNode(
        { name, body: { metadata: { labels: { [ATTESTED_LABEL]: label }, annotations } } },
        setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
      );
    }
    const before = rec.enforced;
    rec.enforced = state.state;
    const ref = { apiVersion: "v1", kind: "Node", metadata: { name, uid: node.metadata?.uid } };
    if (state.state === "Quarantined") {
      if (before !== "Quarantined") {
        const message = summarise(state.reasons, state.message);
        await (await this.#deps.audit()).append(
          nodeQuarantinedRecord({
            region: this.#deps.region,
            node: name,
            reasons: state.reasons,
            message: state.message.slice(0, MESSAGE_MAX),
            ...(latest.digest && !latest.passed ? { verdictDigest: latest.digest } : {}),
          }),
        );
        this.#deps.log.warn("GPU node quarantined: no new learners, its learners are stopped", {
          node: name,
          reasons: state.reasons,
        });
        void this.#deps.events?.record(ref, "Warning", "NodeQuarantined", message);
      }
      await this.#stopLearners(name, state);
    } else if (before !== "Attested") {
      void this.#deps.events?.record(
        ref,
        "Normal",
        "NodeAttested",
        `${latest.message}; learners may be admitted (verdict ${latest.digest?.slice(0, 12)})`,
      );
    }
    this.#updateGauge();
    return state;
  }

  async #stopLearners(name: string, state: Extract<NodeState, { state: "Quarantined" }>): Promise<void> {
    for (const pod of learnersToStop(name, this.#deps.ownPods())) {
      const podName = pod.metadata?.name ?? "";
      const namespace = pod.metadata?.namespace ?? "";
      this.#deps.log.warn("stopping a learner on a quarantined node", { node: name, pod: podName });
      try {
        await this.#core.deleteNamespacedPod({ name: podName, namespace });
      } catch (err) {
        if ((err as { code?: number }).code !== 404) throw err;
        continue;
      }
      void this.#deps.events?.record(
        { apiVersion: "v1", kind: "Pod", metadata: { name: podName, namespace, uid: pod.metadata?.uid } },
        "Warning",
        "NodeQuarantined",
        `stopped: its node ${name} is quarantined (${state.reasons.join(", ")}); deltas signed with its key after ${apiTime(state.since)} are refused`,
      );
    }
  }

  #updateGauge(): void {
    const now = this.#deps.clock.now();
    const max = this.policy.spec.maxEvidenceAgeSeconds;
    let n = 0;
    for (const rec of this.#records.values())
      if (judgeNode(rec.latest, now, max).state === "Quarantined") n++;
    this.#deps.metrics?.quarantinedNodes.set({ region: this.#deps.region }, n);
  }
}
