// Wires the hub's controllers to their informers. Informer callbacks only enqueue keys;
// which keys a change concerns is decided here, in one place.
import { CustomObjectsApi, type KubeConfig } from "@kubernetes/client-node";
import type { NatsConnection } from "@nats-io/transport-node";
import {
  type AuditLog,
  type AuditRecord,
  deltaAcceptedRecord,
  deltaRefusedRecord,
} from "../../attestation/audit/mod.ts";
import type {
  AttestationPolicy,
  FederatedRun,
  RegionWork,
  SovereignNode,
} from "../../crds/types.generated.ts";
import { publicKeyFromField } from "../../deltas/mod.ts";
// The binding's format is the member's (it writes it); the hub only reads it.
import { learnerKeyBound, learnerKeyFromWork, learnerKeyValidAt } from "../learner-keys.ts";
import { HUB_FIELD_MANAGER, SOVEREIGN_API } from "../names.ts";
import { type Clock, realClock } from "../runtime/clock.ts";
import { Controller } from "../runtime/controller.ts";
import { eventRecorder } from "../runtime/events.ts";
import { objectKey, SupervisedInformer } from "../runtime/informer.ts";
import type { Logger } from "../runtime/log.ts";
import type { OperatorMetrics } from "../runtime/metrics.ts";
import {
  federatedRunReconciler,
  CONTROLLER_NAME as RUN_CONTROLLER,
  RUN_NAME_LABEL,
  RUN_NAMESPACE_LABEL,
  RUN_UID_LABEL,
} from "./federatedrun-controller.ts";
import { type LearnerKeyResolver, RoundCoordinator } from "./round-coordinator.ts";
import { CONTROLLER_NAME as NODE_CONTROLLER, sovereignNodeReconciler } from "./sovereignnode-controller.ts";

/** Where the hub tells a region's learners that a delta was refused, and why. */
export function refusalSubject(region: string, runKey: string): string {
  const [namespace, run] = runKey.split("/") as [string, string];
  return `sovereign.${region}.refusals.${namespace}.${run.replaceAll(".", "_")}`;
}

/**
 * Which key a learner's delta must be signed with: the key the region's member listed in the
 * run's RegionWork status after the learner's GPU node attested for it, provided the listed
 * nonce commits to that key, run and round, and the key is not revoked (its node failed a
 * later attestation) by the time the hub verifies the delta. Development mode
 * (--insecure-skip-attestation) trusts the key the manifest names instead.
 */
export function learnerKeyResolver(
  trustManifestKeys: boolean,
  workOf: (region: string, run: { namespace: string; name: string; uid: string }) => RegionWork | undefined,
  now: () => number,
): LearnerKeyResolver {
  return (region, manifest, run, opts) => {
    if (trustManifestKeys) return publicKeyFromField(manifest.learnerKey);
    const work = workOf(region, run);
    if (!work) return undefined;
    const entry = learnerKeyFromWork(work, manifest.learner, manifest.learnerKey);
    if (!entry || !learnerKeyBound(entry, work.spec.run.uid)) return undefined;
    if (!opts?.acceptedBefore && !learnerKeyValidAt(entry, now())) return undefined;
    return publicKeyFromField(entry.publicKey);
  };
}

const G = SOVEREIGN_API;

/**
 * Everything of a SovereignNode that a run's reconcile reads (placement, quarantine, the
 * region's JetStream domain): not the heartbeat time, which changes on every heartbeat. Runs
 * are re-queued only when this changes; with 1,000 runs, re-queueing every run on every
 * heartbeat of every region was most of the hub's work.
 */
export function placementView(node: SovereignNode): unknown {
  const conditions = (node.status?.conditions ?? [])
    .map((c) => [c.type, c.status, c.reason])
    .sort((a, b) => String(a[0]).localeCompare(String(b[0])));
  const { lastHeartbeatTime: _beat, conditions: _c, attestation, ...status } = node.status ?? {};
  return {
    labels: node.metadata.labels ?? {},
    spec: node.spec,
    status,
    lastFailureReason: attestation?.lastFailureReason,
    conditions,
  };
}

export interface HubOptions {
  kc: KubeConfig;
  metrics: OperatorMetrics;
  log: Logger;
  clock?: Clock;
  workers?: number;
  heartbeatTimeoutMs?: number;
  /** Only FederatedRuns in this namespace (default: all namespaces). */
  watchNamespace?: string;
  /** Only SovereignNodes with these labels (default: all). */
  nodeLabelSelector?: string;
  /** The hub's NATS connection (its own JetStream domain): without it runs are placed but no round starts. */
  nats?: NatsConnection;
  /**
   * Development only (--insecure-skip-attestation): accept a delta signed by the key its own
   * manifest names. The signature then proves integrity, not that an attested GPU produced it.
   */
  trustManifestKeys?: boolean;
  /**
   * Where accepted and refused deltas and closed rounds are recorded for auditors: the log
   * itself, or how to open it (main opens the hub's when the replica starts leading).
   */
  audit?: AuditLog | (() => Promise<AuditLog>);
}

export function hubControllers(opts: HubOptions) {
  const { kc, metrics, log } = opts;
  const clock = opts.clock ?? realClock;
  const api = kc.makeApiClient(CustomObjectsApi);
  const events = eventRecorder(kc, HUB_FIELD_MANAGER, log);
  const informer = <T extends { metadata?: { name?: string } }>(
    plural: string,
    onKey: (key: string) => void,
    scope: { namespace?: string; labelSelector?: string } = {},
  ) =>
    new SupervisedInformer<T & { metadata: { name?: string } }>({
      kc,
      path: scope.namespace
        ? `/apis/sovereign.ai/v1alpha1/namespaces/${scope.namespace}/${plural}`
        : `/apis/sovereign.ai/v1alpha1/${plural}`,
      list: () =>
        scope.namespace
          ? api.listNamespacedCustomObject({
              ...G,
              plural,
              namespace: scope.namespace,
              labelSelector: scope.labelSelector,
            })
          : api.listClusterCustomObject({ ...G, plural, labelSelector: scope.labelSelector }),
      labelSelector: scope.labelSelector,
      onKey,
      metrics,
      log: log.child(`informer.${plural}`),
    });

  /** What runs see of each region (placementView); a heartbeat that changes nothing else re-queues no run. */
  const seenByRuns = new Map<string, string>();
  const nodes = informer<SovereignNode>(
    "sovereignnodes",
    (key) => {
      nodeController.enqueue(key);
      const node = nodes.get(key) as SovereignNode | undefined;
      const view = node ? JSON.stringify(placementView(node)) : "";
      if (seenByRuns.get(key) === view) return;
      if (node) seenByRuns.set(key, view);
      else seenByRuns.delete(key);
      for (const r of runs.list()) runController.enqueue(objectKey(r));
    },
    { labelSelector: opts.nodeLabelSelector },
  );
  const policies = informer<AttestationPolicy>("attestationpolicies", () => {
    for (const n of nodes.list()) nodeController.enqueue(objectKey(n));
    for (const r of runs.list()) runController.enqueue(objectKey(r));
  });
  const runs = informer<FederatedRun>("federatedruns", (key) => runController.enqueue(key), {
    namespace: opts.watchNamespace,
  });
  const works = informer<RegionWork>("regionworks", (key) => {
    const [ns, name] = key.split("/") as [string, string];
    const w = works.get(name, ns);
    const labels = w?.metadata.labels;
    if (labels?.[RUN_NAMESPACE_LABEL] && labels[RUN_NAME_LABEL]) {
      runController.enqueue(`${labels[RUN_NAMESPACE_LABEL]}/${labels[RUN_NAME_LABEL]}`);
    } else {
      // Deleted: the cache no longer has its labels; any run may be waiting for it.
      for (const r of runs.list()) runController.enqueue(objectKey(r));
    }
  });

  const nodeController = new Controller({
    name: NODE_CONTROLLER,
    workers: opts.workers,
    metrics,
    log: log.child(NODE_CONTROLLER),
    clock,
    reconcile: sovereignNodeReconciler({
      kc,
      getNode: (name) => nodes.get(name) as SovereignNode | undefined,
      getPolicy: (name) => policies.get(name) as AttestationPolicy | undefined,
      events,
      clock,
      heartbeatTimeoutMs: opts.heartbeatTimeoutMs ?? 60_000,
      metrics,
    }),
  });
  // The audit trail is written in the background: a reconcile never waits on it, and a
  // failed append is logged and counted (it breaks no chain: the log refuses to continue).
  const { audit } = opts;
  const openAudit = typeof audit === "function" ? audit : audit && (async () => audit);
  // A delta the previous leader accepted and audited, but had not yet recorded in the run's
  // status when it died, is verified again by the next leader: the shared log gets its
  // DeltaAccepted once. The subjects already there are read once per process.
  let auditedDeltas: Promise<Set<string>> | undefined;
  const deltaKey = (r: { subject: string; body: unknown }) =>
    `${r.subject}@${(r.body as { manifestDigest?: string }).manifestDigest ?? ""}`;
  // One chain, so appends keep the order in which they were made.
  let appending: Promise<unknown> = Promise.resolve();
  const appendAudit = (record: AuditRecord) => {
    appending = appending
      .then(async () => {
        const auditLog = await openAudit?.();
        if (!auditLog) return;
        if (record.kind === "DeltaAccepted") {
          auditedDeltas ??= (async () => {
            const seen = new Set<string>();
            for await (const e of auditLog.entriesFrom(0))
              if (e.kind === "DeltaAccepted") seen.add(deltaKey(e));
            return seen;
          })();
          const seen = await auditedDeltas;
          if (seen.has(deltaKey(record))) return;
          seen.add(deltaKey(record));
        }
        await auditLog.append(record);
      })
      .catch((err: unknown) => log.error("audit append failed", { error: String(err) }));
  };
  metrics.observeRunPhases(() => (runs.list() as FederatedRun[]).map((r) => r.status?.phase));
  const rounds = opts.nats
    ? new RoundCoordinator({
        nc: opts.nats,
        log: log.child("rounds"),
        keyFor: learnerKeyResolver(
          opts.trustManifestKeys === true,
          (region, run) =>
            (works.list() as RegionWork[]).find(
              (w) =>
                w.spec.region === region &&
                w.spec.run.namespace === run.namespace &&
                w.spec.run.name === run.name &&
                // Not the work of an earlier run of the same name, still being deleted.
                w.spec.run.uid === run.uid,
            ),
          () => clock.now(),
        ),
        onProgress: (key) => runController.enqueue(key),
        onAccepted: (run, delta, digest) => {
          metrics.deltasAccepted.inc({ region: delta.region });
          metrics.deltaBytes.inc({ region: delta.region }, delta.size);
          const m = delta.signed.manifest;
          metrics.learnerSteps.inc({ region: delta.region }, m.innerSteps);
          if (m.trainMs !== undefined)
            metrics.learnerTrainSeconds.inc({ region: delta.region }, m.trainMs / 1000);
          if (m.waitMs !== undefined)
            metrics.learnerWaitSeconds.inc({ region: delta.region }, m.waitMs / 1000);
          appendAudit(
            deltaAcceptedRecord({
              run,
              round: m.round,
              region: delta.region,
              learner: m.learner,
              manifestDigest: digest,
              learnerKey: m.learnerKey,
            }),
          );
        },
        onRefused: (run, refusal) => {
          metrics.deltasRefused.inc({ region: refusal.region, reason: refusal.reason });
          appendAudit(
            deltaRefusedRecord({
              run,
              round: refusal.round,
              region: refusal.region,
              ...(refusal.learner ? { learner: refusal.learner } : {}),
              reason: refusal.reason,
              message: refusal.message.slice(0, 1024),
              ...(refusal.manifestDigest ? { manifestDigest: refusal.manifestDigest } : {}),
            }),
          );
          // The learner hears why, on its own region's subjects (it may subscribe to those only).
          opts.nats?.publish(refusalSubject(refusal.region, run), JSON.stringify(refusal));
        },
      })
    : undefined;
  const runController = new Controller({
    name: RUN_CONTROLLER,
    workers: opts.workers,
    metrics,
    log: log.child(RUN_CONTROLLER),
    clock,
    reconcile: federatedRunReconciler({
      kc,
      getRun: (ns, name) => runs.get(name, ns) as FederatedRun | undefined,
      listNodes: () => nodes.list() as SovereignNode[],
      policyExists: (name) => policies.get(name) !== undefined,
      metrics,
      workOf: (uid) =>
        (works.list() as RegionWork[]).filter((w) => w.metadata.labels?.[RUN_UID_LABEL] === uid),
      events,
      clock,
      rounds,
      audit: appendAudit,
    }),
  });
  return { informers: [nodes, policies, runs, works], controllers: [nodeController, runController] };
}
