// The scheduling gate, one key per learner pod. Reconcile: fetch the pod (gone, released or not
// this member's → done); refuse a work under another policy; read the learner's key from its
// Secret; choose a CC-ready, unquarantined GPU node with room; challenge that node with a nonce
// that commits to the learner's key (attestation/nonce.ts) and judge the evidence; and only
// when that verdict passes — the node's latest, younger than the policy's and the run's maximum
// age — pin the pod to the node (required node affinity on metadata.name) and remove the gate,
// in one patch, recording the key binding in the pod's annotations for the RegionWork status.
// A pod that cannot be admitted says why in its `sovereign.ai/gate-status` annotation.
import { randomBytes } from "node:crypto";
import {
  CoreV1Api,
  type KubeConfig,
  PatchStrategy,
  setHeaderOptions,
  type V1Node,
  type V1Pod,
  type V1Secret,
} from "@kubernetes/client-node";
import { type AuditLog, podAdmittedRecord } from "../../attestation/audit/mod.ts";
import { deriveAttestationNonce } from "../../attestation/mod.ts";
import type { RegionWork } from "../../crds/types.generated.ts";
import type { Clock } from "../runtime/clock.ts";
import { apiTime } from "../runtime/conditions.ts";
import type { ReconcileResult } from "../runtime/controller.ts";
import type { EventRecorder } from "../runtime/events.ts";
import type { Logger } from "../runtime/log.ts";
import type { OperatorMetrics } from "../runtime/metrics.ts";
import type { NodeAttester } from "./attestation-attester.ts";
import {
  admissionAnnotations,
  learnerKeySecretName,
  POD_ANNOTATIONS,
  publicKeyOfSecret,
} from "./attestation-keys.ts";
import {
  ccPrefilter,
  chooseNode,
  effectiveMaxAgeSeconds,
  GateReason,
  learnerNode,
  nodeGpus,
  type PlacementCandidate,
  podGpus,
  verdictAdmits,
} from "./attestation-rules.ts";
import { ATTESTATION_GATE } from "./work-controller.ts";

export const GATE_CONTROLLER_NAME = "attestation-gate";
const REGION_WORK_ANNOTATION = "sovereign.ai/region-work";
/** A reservation (a pod being admitted to a node) lapses after this long, whatever happened. */
const RESERVATION_MS = 5 * 60_000;

export interface GateDeps {
  region: string;
  /** The region's hub namespace: the gate admits only pods of works from there. */
  hubNamespace: string;
  regionKc: KubeConfig;
  attester: NodeAttester;
  getPod: (name: string) => V1Pod | undefined;
  /** Every learner pod in the learner namespace (GPUs in use per node). */
  learnerPods: () => readonly V1Pod[];
  getWork: (name: string) => RegionWork | undefined;
  listNodes: () => readonly V1Node[];
  clock: Clock;
  audit: () => Promise<AuditLog>;
  log: Logger;
  metrics?: OperatorMetrics;
  events?: EventRecorder;
}

export const isGated = (pod: V1Pod): boolean =>
  pod.spec?.schedulingGates?.some((g) => g.name === ATTESTATION_GATE) ?? false;

const pointer = (key: string) => key.replaceAll("~", "~0").replaceAll("/", "~1");

export function gateReconciler(deps: GateDeps): (key: string) => Promise<ReconcileResult | undefined> {
  const core = deps.regionKc.makeApiClient(CoreV1Api);
  const merge = setHeaderOptions("Content-Type", PatchStrategy.MergePatch);
  const { attester, clock, log } = deps;
  /** Pods being admitted right now → node: counted until the informer shows them pinned. */
  const reservations = new Map<string, { node: string; gpus: number; at: number }>();

  const usage = (node: string, except: string): { gpus: number; learners: number } => {
    const out = { gpus: 0, learners: 0 };
    const shown = new Set<string>();
    for (const p of deps.learnerPods()) {
      const name = p.metadata?.name ?? "";
      const on = learnerNode(p);
      if (name === except || !on || p.status?.phase === "Succeeded" || p.status?.phase === "Failed") continue;
      shown.add(name);
      if (on === node) {
        out.gpus += podGpus(p);
        out.learners++;
      }
    }
    for (const [name, r] of reservations) {
      if (name === except || shown.has(name) || r.node !== node) continue;
      if (clock.now() - r.at > RESERVATION_MS) reservations.delete(name);
      else {
        out.gpus += r.gpus;
        out.learners++;
      }
    }
    return out;
  };

  /** Says on the pod why it still waits; an Event when the reason changes. */
  const waitWith = async (pod: V1Pod, reason: string, message: string): Promise<void> => {
    const status = `${reason}: ${message}`.slice(0, 2048);
    const before = pod.metadata?.annotations?.[POD_ANNOTATIONS.gateStatus];
    if (before === status) return;
    const name = pod.metadata?.name ?? "";
    const namespace = pod.metadata?.namespace ?? "";
    await core.patchNamespacedPod(
      { name, namespace, body: { metadata: { annotations: { [POD_ANNOTATIONS.gateStatus]: status } } } },
      merge,
    );
    if (!before?.startsWith(`${reason}:`)) {
      void deps.events?.record(
        { apiVersion: "v1", kind: "Pod", metadata: { name, namespace, uid: pod.metadata?.uid } },
        reason === GateReason.EvidenceUnavailable ? "Normal" : "Warning",
        reason,
        message.slice(0, 1024),
      );
    }
  };

  const readSecret = async (pod: V1Pod): Promise<V1Secret | undefined> => {
    try {
      return await core.readNamespacedSecret({
        name: learnerKeySecretName(pod.metadata?.name ?? ""),
        namespace: pod.metadata?.namespace ?? "",
      });
    } catch (err) {
      if ((err as { code?: number }).code === 404) return undefined;
      throw err;
    }
  };

  return async (name) => {
    const pod = deps.getPod(name);
    if (!pod || pod.metadata?.deletionTimestamp || !isGated(pod)) {
      reservations.delete(name);
      return undefined;
    }
    const [workNamespace, workName] = (pod.metadata?.annotations?.[REGION_WORK_ANNOTATION] ?? "").split("/");
    if (workNamespace !== deps.hubNamespace || !workName) return undefined;
    const work = deps.getWork(workName);
    if (!work) return undefined; // the work controller removes pods of withdrawn work
    const policy = attester.policy;
    if (work.spec.attestation.policyRef.name !== policy.name) {
      // attestation is immutable in the work: nothing to retry until the hub replaces it.
      await waitWith(
        pod,
        GateReason.PolicyMismatch,
        `the run requires AttestationPolicy ${work.spec.attestation.policyRef.name}; this region's member verifies against ${policy.name}`,
      );
      return undefined;
    }
    // The informer may lag our own release of this pod: a challenge costs seconds of CPU, a read does not.
    const current = await core
      .readNamespacedPod({ name, namespace: pod.metadata?.namespace ?? "" })
      .catch((err: { code?: number }) => {
        if (err.code === 404) return undefined;
        throw err;
      });
    if (!current || current.metadata?.uid !== pod.metadata?.uid || !isGated(current)) return undefined;
    const key = publicKeyOfSecret(await readSecret(pod), pod);
    if ("problem" in key) {
      // The work controller creates the Secret right after the pod: only a lasting absence is news.
      const age = clock.now() - Date.parse(String(pod.metadata?.creationTimestamp ?? ""));
      if (!(age < 30_000)) {
        await waitWith(
          pod,
          GateReason.LearnerKeyMissing,
          `${key.problem}; the member creates it with the pod`,
        );
      }
      return { requeueAfterMs: 2_000 };
    }
    const maxAge = effectiveMaxAgeSeconds(policy.spec, work.spec.attestation.maxEvidenceAgeSeconds);
    const now = clock.now();
    const candidates: PlacementCandidate[] = deps.listNodes().map((n) => {
      const nodeName = n.metadata?.name ?? "";
      const used = usage(nodeName, name);
      return {
        name: nodeName,
        // Candidacy by the node's standing under the policy; the run's tighter age limit applies
        // to the admission's own (fresh) verdict below.
        state: attester.state(nodeName),
        prefilter: ccPrefilter(n, policy.spec.ccMode),
        gpus: nodeGpus(n),
        usedGpus: used.gpus,
        learners: used.learners,
        unreachableUntil: attester.record(nodeName).unreachableUntil,
      };
    });
    const need = podGpus(pod);
    const choice = chooseNode(candidates, need, now);
    if (choice.node === undefined) {
      log.debug("no node for a learner", { pod: name, why: choice.message });
      await waitWith(pod, choice.reason, choice.message);
      return { requeueAfterMs: 30_000 };
    }
    const node = choice.node;
    log.debug("challenging a node to admit a learner", { pod: name, node });
    reservations.set(name, { node, gpus: need, at: now });
    let admitted = false;
    /** The pod or its key changed while its node was challenged: nothing is released. */
    let changed = false;
    try {
      const challenge = randomBytes(32);
      const round = work.spec.round ?? 0;
      const nonce = deriveAttestationNonce({
        hubChallenge: challenge,
        runId: work.spec.run.uid,
        round,
        learnerPublicKey: key.raw,
      });
      const outcome = await attester.withNode(node, async () => {
        // Even a freshly attested node is challenged again: the GPUs must sign this learner's nonce.
        const result = await attester.attest(node, nonce, "admission");
        await attester.enforce(node);
        if (result.kind !== "verdict" || !result.passed) return result;
        const latest = attester.record(node).latest;
        if (latest?.digest !== result.node.digest || !verdictAdmits(latest, clock.now(), maxAge)) {
          return { kind: "unavailable" as const, message: `node ${node}'s latest verdict no longer admits` };
        }
        const entry = {
          publicKey: key.publicKey,
          node,
          verdictDigest: result.node.digest as string,
          policyDigest: result.node.policyDigest,
          attestedAt: apiTime(result.node.evaluatedAt),
          nonce: Buffer.from(nonce).toString("hex"),
          challenge: challenge.toString("base64url"),
          round,
        };
        const fresh = await core.readNamespacedPod({ name, namespace: pod.metadata?.namespace ?? "" });
        const keyNow = publicKeyOfSecret(await readSecret(fresh), fresh);
        if (
          fresh.metadata?.uid !== pod.metadata?.uid ||
          !isGated(fresh) ||
          fresh.metadata?.deletionTimestamp ||
          !("publicKey" in keyNow) ||
          keyNow.publicKey !== key.publicKey
        ) {
          changed = true;
          return result;
        }
        // Audited before it is done: an admission no auditor can see never happens.
        await (await deps.audit()).append(
          podAdmittedRecord({
            region: deps.region,
            node,
            pod: { namespace: fresh.metadata?.namespace ?? "", name, uid: fresh.metadata?.uid ?? "" },
            verdictDigest: entry.verdictDigest,
            nonce: entry.nonce,
          }),
        );
        await release(fresh, node, admissionAnnotations(entry));
        admitted = true;
        deps.metrics?.learnersAdmitted.inc({ region: deps.region });
        log.info("learner admitted", { pod: name, node, verdict: entry.verdictDigest, key: entry.publicKey });
        void deps.events?.record(
          {
            apiVersion: "v1",
            kind: "Pod",
            metadata: { name, namespace: fresh.metadata?.namespace, uid: fresh.metadata?.uid },
          },
          "Normal",
          "PodAdmitted",
          `pinned to ${node} after verdict ${entry.verdictDigest.slice(0, 12)} (${result.node.message}); the gate is released`,
        );
        return result;
      });
      // Released, replaced or deleted meanwhile: done. Its key Secret changed: admit it again.
      if (admitted || changed) return admitted ? undefined : { requeueAfterMs: 1_000 };
      const reason =
        outcome.kind === "verdict"
          ? (outcome.node.reasons[0] ?? "AttestationFailed")
          : GateReason.EvidenceUnavailable;
      const message =
        outcome.kind === "verdict"
          ? `node ${node} failed attestation and is quarantined (${outcome.node.reasons.join(", ")}); another node is tried`
          : `node ${node} could not be challenged: ${outcome.message}; another node is tried`;
      await waitWith(pod, reason, message);
      return { requeueAfterMs: 1_000 };
    } finally {
      if (!admitted) reservations.delete(name);
    }
  };

  async function release(pod: V1Pod, node: string, annotations: Record<string, string>): Promise<void> {
    const affinity = {
      requiredDuringSchedulingIgnoredDuringExecution: {
        nodeSelectorTerms: [{ matchFields: [{ key: "metadata.name", operator: "In", values: [node] }] }],
      },
    };
    if (pod.spec?.affinity?.nodeAffinity) {
      throw new Error(
        `pod ${pod.metadata?.name} already has a node affinity; learner pods are created without one`,
      );
    }
    const ops: object[] = [{ op: "test", path: "/metadata/uid", value: pod.metadata?.uid }];
    if (!pod.metadata?.annotations) ops.push({ op: "add", path: "/metadata/annotations", value: {} });
    for (const [k, v] of Object.entries(annotations)) {
      ops.push({ op: "add", path: `/metadata/annotations/${pointer(k)}`, value: v });
    }
    if (pod.metadata?.annotations?.[POD_ANNOTATIONS.gateStatus] !== undefined) {
      ops.push({ op: "remove", path: `/metadata/annotations/${pointer(POD_ANNOTATIONS.gateStatus)}` });
    }
    // Kubernetes lets a gated pod's node affinity be set (KEP-3838) but not an ungated one's,
    // so pin and release go in one patch: the pod is never free to land elsewhere.
    ops.push(
      pod.spec?.affinity
        ? { op: "add", path: "/spec/affinity/nodeAffinity", value: affinity }
        : { op: "add", path: "/spec/affinity", value: { nodeAffinity: affinity } },
      {
        op: "replace",
        path: "/spec/schedulingGates",
        value: (pod.spec?.schedulingGates ?? []).filter((g) => g.name !== ATTESTATION_GATE),
      },
    );
    await core.patchNamespacedPod({
      name: pod.metadata?.name ?? "",
      namespace: pod.metadata?.namespace ?? "",
      body: ops,
    });
  }
}
