// Member: turns each RegionWork the hub hands this region into learner pods in the
// region's own cluster, and reports back through the RegionWork's status (the only thing
// its hub credential may write). Learner pods start behind the `sovereign.ai/attestation`
// scheduling gate, each with its own Ed25519 key in a Secret it mounts (owned by the pod):
// the attestation gate (attestation-gate.ts) releases a pod once its GPU node verified for a
// nonce that commits to that key, and this controller lists the bindings in the status as
// `learnerKeys`, revoking those of quarantined nodes and gone pods. With attestation disabled
// for development the member releases the pods itself and the work reports
// `unattested: true`, which the hub carries into the run's status.
//
// Pods carry the work's name as a label; a RegionWork that no longer exists at the hub
// leaves pods without an owner, and the next reconcile of that key deletes them. That is
// how a deleted run is cleaned up in regions the hub cannot reach into.
import { createHash } from "node:crypto";
import {
  CoreV1Api,
  CustomObjectsApi,
  type KubeConfig,
  PatchStrategy,
  setHeaderOptions,
  type V1EnvVar,
  type V1Pod,
  type V1Secret,
} from "@kubernetes/client-node";
import type { NatsConnection } from "@nats-io/transport-node";
import type { RegionWork, RegionWorkStatus } from "../../crds/types.generated.ts";
import { parseRegionWorkSpec } from "../../crds/validate.ts";
import {
  ensureRegionDeltaBucket,
  ensureRunModelMirror,
  purgeRegionDeltas,
  removeRunModelMirror,
} from "../../transport/mod.ts";
import { MEMBER_FIELD_MANAGER, SOVEREIGN_API } from "../names.ts";
import { sameContent } from "../runtime/canonical.ts";
import { findCondition, setCondition } from "../runtime/conditions.ts";
import type { ReconcileResult } from "../runtime/controller.ts";
import type { OperatorMetrics } from "../runtime/metrics.ts";
import {
  generateLearnerKey,
  LEARNER_KEY_FILE,
  LEARNER_KEY_MOUNT,
  learnerKeySecret,
  learnerKeySecretName,
  learnerKeysStatus,
  POD_ANNOTATIONS,
  secretBelongsTo,
} from "./attestation-keys.ts";
import { GateReason } from "./attestation-rules.ts";

export const LEARNER_NAMESPACE = "sovereign-learners";
export const ATTESTATION_GATE = "sovereign.ai/attestation";
export const WORK_LABEL = "sovereign.ai/work";
/** The uid of the FederatedRun a learner pod belongs to. */
export const RUN_UID_LABEL = "sovereign.ai/run-uid";
export const FIELD_MANAGER = MEMBER_FIELD_MANAGER;

/** A label-safe, stable name for one RegionWork (its `namespace.name` can exceed 63 characters). */
export function workId(workName: string): string {
  return createHash("sha256").update(workName).digest("hex").slice(0, 16);
}

function quantities(q: Record<string, number | string> | undefined): Record<string, string> | undefined {
  return q ? Object.fromEntries(Object.entries(q).map(([k, v]) => [k, String(v)])) : undefined;
}

/** How learner pods reach their region's NATS server (the SDK's SOVEREIGN_NATS_* variables). */
export interface LearnerNatsAccess {
  url: string;
  /** A Secret in the learner namespace with keys `user` and `password` for the learner NATS user. */
  credentialsSecret?: string;
}

export function learnerPod(work: RegionWork, index: number, nats?: LearnerNatsAccess): V1Pod {
  const s = work.spec;
  const id = workId(work.metadata.name ?? "");
  const natsEnv: V1EnvVar[] = nats
    ? [
        { name: "SOVEREIGN_NATS_URL", value: nats.url },
        ...(nats.credentialsSecret
          ? (["user", "password"] as const).map((key) => ({
              name: `SOVEREIGN_NATS_${key.toUpperCase()}`,
              valueFrom: { secretKeyRef: { name: nats.credentialsSecret as string, key } },
            }))
          : []),
      ]
    : [];
  const env: V1EnvVar[] = [
    ...natsEnv,
    { name: "SOVEREIGN_LEARNER_NAME", valueFrom: { fieldRef: { fieldPath: "metadata.name" } } },
    { name: "SOVEREIGN_LEARNER_KEY", value: `${LEARNER_KEY_MOUNT}/${LEARNER_KEY_FILE}` },
    { name: "SOVEREIGN_RUN", value: s.run.name },
    { name: "SOVEREIGN_RUN_NAMESPACE", value: s.run.namespace },
    { name: "SOVEREIGN_REGION", value: s.region },
    { name: "SOVEREIGN_ROUND", value: String(s.round ?? 0) },
    { name: "SOVEREIGN_ROUNDS", value: String(s.rounds) },
    { name: "SOVEREIGN_LEARNER_INDEX", value: String(index) },
    { name: "SOVEREIGN_LEARNERS", value: String(s.workload.learnersPerRegion) },
    { name: "SOVEREIGN_NATS_SUBJECT_PREFIX", value: s.nats.subjectPrefix },
    { name: "SOVEREIGN_JETSTREAM_DOMAIN", value: s.nats.jetStreamDomain },
    { name: "SOVEREIGN_DELTA_DTYPE", value: s.deltaEncoding.dtype },
    ...(s.workload.env ?? []).map((e) =>
      e.valueFrom
        ? { name: e.name, valueFrom: { secretKeyRef: e.valueFrom.secretKeyRef } }
        : { name: e.name, value: e.value ?? "" },
    ),
  ];
  const name = `learner-${id}-${index}`;
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: {
      name,
      namespace: LEARNER_NAMESPACE,
      labels: {
        [WORK_LABEL]: id,
        "sovereign.ai/run": s.run.name.slice(0, 63),
        [RUN_UID_LABEL]: s.run.uid,
        "sovereign.ai/learner-index": String(index),
        "app.kubernetes.io/managed-by": "sovereign-operator",
      },
      annotations: { "sovereign.ai/region-work": `${work.metadata.namespace}/${work.metadata.name}` },
    },
    spec: {
      schedulingGates: [{ name: ATTESTATION_GATE }],
      restartPolicy: "Never",
      nodeSelector: { "nvidia.com/gpu.present": "true" },
      // The learner's signing key: its own Secret, created right after the pod (it is owned by
      // the pod's uid) and before the gate opens, so the pod never starts without it.
      volumes: [
        {
          name: "learner-key",
          secret: { secretName: learnerKeySecretName(name), defaultMode: 0o400 },
        },
      ],
      containers: [
        {
          name: "learner",
          image: s.workload.image,
          command: s.workload.command,
          args: s.workload.args,
          env,
          volumeMounts: [{ name: "learner-key", mountPath: LEARNER_KEY_MOUNT, readOnly: true }],
          resources: {
            requests: quantities(s.workload.resources?.requests),
            limits: quantities(s.workload.resources?.limits),
          },
        },
      ],
    },
  };
}

export interface WorkReconcilerDeps {
  /** This member's region: work naming another region is refused. */
  region: string;
  hubKc: KubeConfig;
  regionKc: KubeConfig;
  /** The region's hub namespace, where its RegionWorks live. */
  hubNamespace: string;
  getWork: (name: string) => RegionWork | undefined;
  /** Learner pods of one work, from the region's pod informer. */
  podsOf: (id: string) => readonly V1Pod[];
  insecureSkipAttestation: boolean;
  now: () => number;
  metrics?: OperatorMetrics;
  /** The region's NATS server, as the member (creates the delta bucket, mirrors each run's models). */
  nats?: NatsConnection;
  learnerNats?: LearnerNatsAccess;
  /** When and why a GPU node was quarantined (from the attestation controller): revokes the keys of its learners. */
  nodeQuarantine?: (node: string) => { at: number; reasons: string[] } | undefined;
}

/** Why a RegionWork cannot be acted on, or undefined when it can. */
export function invalidWork(work: RegionWork, region: string): string | undefined {
  if (work.spec?.region !== region) {
    return `the work is for region "${work.spec?.region}", but this member serves "${region}"`;
  }
  const parsed = parseRegionWorkSpec(work.spec);
  if (!parsed.ok) return parsed.errors.map((e) => `${e.path}: ${e.message}`).join("; ");
  return undefined;
}

export function workReconciler(
  deps: WorkReconcilerDeps,
): (key: string) => Promise<ReconcileResult | undefined> {
  const core = deps.regionKc.makeApiClient(CoreV1Api);
  const hub = deps.hubKc.makeApiClient(CustomObjectsApi);
  const apply = setHeaderOptions("Content-Type", PatchStrategy.ServerSideApply);
  let namespaceReady = false;
  /** RegionWork name → the run whose model bucket this member mirrors for it. */
  const modelMirrors = new Map<string, { namespace: string; run: string }>();
  /** RegionWork name → rounds before this one purged from the region's bucket. */
  const purgedBefore = new Map<string, number>();
  /** Failed learners replaced per work, for the replacement back-off. */
  const replaced = new Map<string, { count: number; at: number }>();

  const ensureNamespace = async () => {
    if (namespaceReady) return;
    try {
      await core.createNamespace({ body: { metadata: { name: LEARNER_NAMESPACE } } });
    } catch (err) {
      if ((err as { code?: number }).code !== 409) throw err;
    }
    namespaceReady = true;
  };

  /** The pod's key Secret, created when missing or left over from an earlier pod of the same name. */
  const ensureKeySecret = async (pod: V1Pod): Promise<void> => {
    const secretName = learnerKeySecretName(pod.metadata?.name ?? "");
    let existing: V1Secret | undefined;
    try {
      existing = await core.readNamespacedSecret({ name: secretName, namespace: LEARNER_NAMESPACE });
    } catch (err) {
      if ((err as { code?: number }).code !== 404) throw err;
    }
    if (existing && secretBelongsTo(existing, pod)) return;
    if (existing) {
      // Another pod instance's key: replace it only if this pod is the one that exists now (an
      // informer copy of a pod deleted and re-created under its name must not take the new one's key).
      const current = await core.readNamespacedPod({
        name: pod.metadata?.name ?? "",
        namespace: LEARNER_NAMESPACE,
      });
      if (current.metadata?.uid !== pod.metadata?.uid) return;
      await core.deleteNamespacedSecret({ name: secretName, namespace: LEARNER_NAMESPACE }).catch((err) => {
        if ((err as { code?: number }).code !== 404) throw err;
      });
    }
    const body = learnerKeySecret(pod, generateLearnerKey(), {
      [WORK_LABEL]: pod.metadata?.labels?.[WORK_LABEL] ?? "",
    });
    await core.createNamespacedSecret({ namespace: LEARNER_NAMESPACE, body }).catch((err) => {
      if ((err as { code?: number }).code !== 409) throw err;
    });
  };

  const writeStatus = (name: string, status: RegionWorkStatus) =>
    hub.patchNamespacedCustomObjectStatus(
      {
        ...SOVEREIGN_API,
        plural: "regionworks",
        namespace: deps.hubNamespace,
        name,
        fieldManager: FIELD_MANAGER,
        force: true,
        body: {
          apiVersion: "sovereign.ai/v1alpha1",
          kind: "RegionWork",
          metadata: { name, namespace: deps.hubNamespace },
          status,
        },
      },
      apply,
    );

  return async (key) => {
    const name = key.includes("/") ? (key.split("/")[1] as string) : key;
    const id = workId(name);
    const work = deps.getWork(name);
    const pods = deps.podsOf(id);
    if (!work) {
      const mirrored = modelMirrors.get(name);
      if (mirrored && deps.nats) {
        await removeRunModelMirror(deps.nats, mirrored);
        // The run is gone (or left this region): its deltas need not wait for the bucket's max age.
        await purgeRegionDeltas(deps.nats, deps.region, {
          ...mirrored,
          beforeRound: Number.MAX_SAFE_INTEGER,
        });
        modelMirrors.delete(name);
      }
      purgedBefore.delete(name);
      replaced.delete(name);
      // The hub withdrew the work (run deleted or region unplaced): remove its learners.
      for (const p of pods) {
        await core
          .deleteNamespacedPod({ name: p.metadata?.name ?? "", namespace: LEARNER_NAMESPACE })
          .catch((err: { code?: number }) => {
            if (err.code !== 404) throw err;
          });
      }
      return undefined;
    }
    const invalid = invalidWork(work, deps.region);
    if (invalid) {
      // Nothing to retry until the hub changes the work; say so where the hub reads it.
      const conditions = setCondition(
        work.status?.conditions,
        {
          type: "Applied",
          status: "False",
          reason: "InvalidWork",
          message: invalid,
          observedGeneration: work.metadata.generation,
        },
        new Date(deps.now()),
      );
      if (findCondition(work.status?.conditions, "Applied")?.reason !== "InvalidWork") {
        deps.metrics?.invalidObjects.inc({ kind: "RegionWork", reason: "InvalidWork" });
      }
      await writeStatus(name, { ...work.status, phase: "Failed", conditions, message: invalid });
      return undefined;
    }
    await ensureNamespace();
    if (deps.nats && !modelMirrors.has(name)) {
      // Where learners publish, and the run's models fetched once into the region for all of them.
      await ensureRegionDeltaBucket(deps.nats, deps.region);
      const ref = { namespace: work.spec.run.namespace, run: work.spec.run.name };
      // Mirrored afresh by each member process: a mirror left by an earlier run of the same
      // name (or by a member that stopped without cleaning up) would still serve that run's
      // models, and the hub's bucket behind it may have been recreated since.
      await removeRunModelMirror(deps.nats, ref);
      await ensureRunModelMirror(deps.nats, work.spec.nats.jetStreamDomain, ref);
      modelMirrors.set(name, ref);
    }
    // Suspended work keeps no learners: the loop below that removes learners beyond the desired
    // count deletes them all, and their keys are revoked as gone pods (learnerKeysStatus).
    const suspended = work.spec.suspend === true;
    const desired = suspended ? 0 : work.spec.workload.learnersPerRegion;
    // Deltas of rounds the hub can no longer use (it folds late deltas at most 3 rounds back).
    const round = work.spec.round ?? 0;
    if (deps.nats && round - 3 > (purgedBefore.get(name) ?? 1)) {
      await purgeRegionDeltas(deps.nats, deps.region, {
        namespace: work.spec.run.namespace,
        run: work.spec.run.name,
        beforeRound: round - 3,
      });
      purgedBefore.set(name, round - 3);
    }
    // A run deleted and created again under the same name gets a RegionWork of the same name:
    // learners left from the old run (another uid) go, and the new run's are created next pass.
    const stale = pods.filter((p) => (p.metadata?.labels?.[RUN_UID_LABEL] ?? "") !== work.spec.run.uid);
    for (const p of stale) {
      await core
        .deleteNamespacedPod({ name: p.metadata?.name ?? "", namespace: LEARNER_NAMESPACE })
        .catch((err: { code?: number }) => {
          if (err.code !== 404) throw err;
        });
    }
    if (stale.length > 0) return { requeueAfterMs: 1_000 };
    // A learner whose process died (killed, its node or the whole region went down) is left
    // Failed by restartPolicy Never. Replace it, so that the region rejoins the run: the new
    // pod gets a new key and attestation, and its learner starts at the work's current round
    // from the current global model; the dead pod's key is revoked as a gone pod. Replacements
    // back off (10 s doubling, at most 5 min) so that a learner that fails at once does not
    // loop; the back-off starts afresh with each member process, as after a region outage.
    const failedLearners = pods.filter(
      (p) =>
        p.status?.phase === "Failed" &&
        !p.metadata?.deletionTimestamp &&
        Number(p.metadata?.labels?.["sovereign.ai/learner-index"]) < desired,
    );
    let replaceAfterMs: number | undefined;
    if (failedLearners.length > 0) {
      const last = replaced.get(name);
      const wait = last ? Math.min(10_000 * 2 ** (last.count - 1), 300_000) - (deps.now() - last.at) : 0;
      if (wait <= 0) {
        for (const p of failedLearners) {
          await core
            .deleteNamespacedPod({ name: p.metadata?.name ?? "", namespace: LEARNER_NAMESPACE })
            .catch((err: { code?: number }) => {
              if (err.code !== 404) throw err;
            });
        }
        replaced.set(name, { count: (last?.count ?? 0) + 1, at: deps.now() });
        return { requeueAfterMs: 1_000 };
      }
      replaceAfterMs = wait;
    }
    const existing = new Set(pods.map((p) => p.metadata?.name));
    let createError = "";
    /** Gated pods whose key Secret is in place: only those may be released. */
    const keyed = new Set<string>();
    for (let i = 0; i < desired; i++) {
      const pod = learnerPod(work, i, deps.learnerNats);
      if (existing.has(pod.metadata?.name)) continue;
      try {
        const created = await core.createNamespacedPod({ namespace: LEARNER_NAMESPACE, body: pod });
        await ensureKeySecret(created);
        keyed.add(created.metadata?.name ?? "");
      } catch (err) {
        if ((err as { code?: number }).code === 409) continue;
        createError = `creating ${pod.metadata?.name} failed: ${(err as { body?: string }).body ?? String(err)}`;
      }
    }
    for (const p of pods) {
      if (
        !p.metadata?.deletionTimestamp &&
        p.spec?.schedulingGates?.some((g) => g.name === ATTESTATION_GATE)
      ) {
        await ensureKeySecret(p);
        keyed.add(p.metadata?.name ?? "");
      }
    }
    // Learners beyond the desired count (the work shrank) go.
    for (const p of pods) {
      const index = Number(p.metadata?.labels?.["sovereign.ai/learner-index"]);
      if (index >= desired)
        await core
          .deleteNamespacedPod({ name: p.metadata?.name ?? "", namespace: LEARNER_NAMESPACE })
          .catch(() => undefined);
    }
    if (deps.insecureSkipAttestation) {
      for (const p of pods) {
        if (
          keyed.has(p.metadata?.name ?? "") &&
          p.spec?.schedulingGates?.some((g) => g.name === ATTESTATION_GATE)
        ) {
          // A JSON patch that replaces the list: a strategic merge of a shorter list
          // would keep the gate (lists of gates merge by name).
          await core.patchNamespacedPod({
            name: p.metadata?.name ?? "",
            namespace: LEARNER_NAMESPACE,
            body: [
              {
                op: "replace",
                path: "/spec/schedulingGates",
                value: (p.spec.schedulingGates ?? []).filter((g) => g.name !== ATTESTATION_GATE),
              },
            ],
          });
        }
      }
    }

    const live = pods.filter((p) => Number(p.metadata?.labels?.["sovereign.ai/learner-index"]) < desired);
    const gated = live.filter((p) => p.spec?.schedulingGates?.some((g) => g.name === ATTESTATION_GATE));
    const waiting = gated.length;
    // Why the gated ones wait, as the gate wrote it on each pod ("Reason: message").
    const gateStatuses = gated
      .map((p) => p.metadata?.annotations?.[POD_ANNOTATIONS.gateStatus])
      .filter((x): x is string => Boolean(x));
    const blocking = [GateReason.PolicyMismatch, GateReason.NoAttestedNode].find(
      (r) =>
        waiting > 0 && gateStatuses.length === waiting && gateStatuses.every((g) => g.startsWith(`${r}:`)),
    );
    const scheduled = live.filter((p) => p.spec?.nodeName).length;
    const ready = live.filter((p) =>
      p.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True"),
    ).length;
    const failed = live.filter((p) => p.status?.phase === "Failed").length;
    const now = new Date(deps.now());
    const gen = work.metadata.generation;
    let conditions = setCondition(
      work.status?.conditions,
      createError
        ? {
            type: "Applied",
            status: "False",
            reason: "PodCreateFailed",
            message: createError,
            observedGeneration: gen,
          }
        : {
            type: "Applied",
            status: "True",
            reason: "PodsCreated",
            message: `${desired} learner pods in ${LEARNER_NAMESPACE}`,
            observedGeneration: gen,
          },
      now,
    );
    conditions = setCondition(
      conditions,
      suspended
        ? {
            type: "LearnersReady",
            status: "False",
            reason: "Suspended",
            message: `the run is suspended: ${pods.length > 0 ? `stopping ${pods.length} learners` : "no learners run"}`,
            observedGeneration: gen,
          }
        : failed > 0
          ? {
              type: "LearnersReady",
              status: "False",
              reason: "LearnersFailed",
              message: `${failed} learner pods failed`,
              observedGeneration: gen,
            }
          : ready >= desired
            ? {
                type: "LearnersReady",
                status: "True",
                reason: "LearnersRunning",
                message: `${ready}/${desired} learners running`,
                observedGeneration: gen,
              }
            : waiting > 0
              ? {
                  type: "LearnersReady",
                  status: "False",
                  reason: blocking ?? "AttestationPending",
                  message: `${waiting} learners wait for their GPU node's attestation${gateStatuses[0] ? `; ${gateStatuses[0].replace(/^[A-Za-z]+: /, "")}` : ""}`,
                  observedGeneration: gen,
                }
              : {
                  type: "LearnersReady",
                  status: "False",
                  reason: "LearnersPending",
                  message: `${ready}/${desired} learners running`,
                  observedGeneration: gen,
                },
      now,
    );
    const learnerKeys = learnerKeysStatus(
      work.status?.learnerKeys,
      pods,
      deps.nodeQuarantine ?? (() => undefined),
      deps.now(),
    );
    const status: RegionWorkStatus = {
      phase: suspended ? "Suspended" : failed > 0 ? "Failed" : ready >= desired ? "Running" : "Pending",
      learnersDesired: desired,
      learnersScheduled: scheduled,
      learnersReady: ready,
      learnersWaitingForAttestation: waiting,
      unattested: deps.insecureSkipAttestation,
      ...(learnerKeys.length > 0 ? { learnerKeys } : {}),
      observedGeneration: gen,
      conditions,
      message: createError || (conditions.find((c) => c.type === "LearnersReady")?.message ?? ""),
    };
    if (!sameContent(work.status, status)) await writeStatus(name, status);
    if (createError) return { requeueAfterMs: 5_000 };
    return replaceAfterMs !== undefined ? { requeueAfterMs: replaceAfterMs } : undefined;
  };
}
