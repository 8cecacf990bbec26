// Wires the member's controllers: its RegionWorks at the hub (through the scoped
// credential) and its learner pods in the region, plus the registration heartbeat; with an
// attestation configuration, the GPU nodes' re-attestation loop and the learners' gate.
import { generateKeyPairSync } from "node:crypto";
import {
  CoreV1Api,
  CustomObjectsApi,
  type KubeConfig,
  type V1Node,
  type V1Pod,
} from "@kubernetes/client-node";
import type { NatsConnection } from "@nats-io/transport-node";
import {
  AuditLog,
  type AuditStore,
  type CheckpointSigner,
  ed25519CheckpointSigner,
  MemoryAuditStore,
} from "../../attestation/audit/mod.ts";
import type { TrustAnchors } from "../../attestation/mod.ts";
import type { RegionWork } from "../../crds/types.generated.ts";
import { ModelMirrorSweeper, ORPHANED_MIRROR_AFTER_MS } from "../../transport/mod.ts";
import { regionNamespace } from "../hub/region-access.ts";
import { SOVEREIGN_API } from "../names.ts";
import { type Clock, realClock } from "../runtime/clock.ts";
import { Controller } from "../runtime/controller.ts";
import { eventRecorder } from "../runtime/events.ts";
import { SupervisedInformer } from "../runtime/informer.ts";
import type { Logger } from "../runtime/log.ts";
import type { OperatorMetrics } from "../runtime/metrics.ts";
import { type MemberPolicy, NodeAttester } from "./attestation-attester.ts";
import {
  CONTROLLER_NAME as ATTESTATION_CONTROLLER,
  nodeAttestationReconciler,
} from "./attestation-controller.ts";
import { GATE_CONTROLLER_NAME, gateReconciler, isGated } from "./attestation-gate.ts";
import { GPU_NODE_SELECTOR } from "./attestation-rules.ts";
import type { EvidenceSource } from "./evidence-source.ts";
import { type ReferenceClientOptions, ReferenceFetcher, referenceSettings } from "./local-references.ts";
import { NrasAppraiser, type NrasClientOptions } from "./nras-appraiser.ts";
import { type Registration, registrationReconciler } from "./registration.ts";
import {
  LEARNER_NAMESPACE,
  type LearnerNatsAccess,
  WORK_LABEL,
  workId,
  workReconciler,
} from "./work-controller.ts";

export interface MemberOptions {
  region: string;
  registration: Registration;
  regionKc: KubeConfig;
  hubKc: KubeConfig;
  metrics: OperatorMetrics;
  log: Logger;
  clock?: Clock;
  workers?: number;
  heartbeatIntervalMs?: number;
  insecureSkipAttestation?: boolean;
  /** The region's NATS server as the member; without it learners get no NATS settings. */
  nats?: NatsConnection;
  learnerNats?: LearnerNatsAccess;
  labels?: Record<string, string>;
  /** The gate: without it (and without insecureSkipAttestation) learner pods stay gated. */
  attestation?: MemberAttestation;
  /** Where verdicts, admissions and quarantines are recorded. Default: in memory, with a warning. */
  audit?: MemberAudit;
}

export interface MemberAttestation {
  /** The AttestationPolicy this region verifies against (the one its registration names). */
  policy: MemberPolicy;
  anchors: TrustAnchors;
  source: EvidenceSource;
  /** verification.mode NRAS only: how the member reaches NRAS (a CA to trust, a timeout). */
  nras?: NrasClientOptions;
  /** verification.mode Local only: how the member reaches the RIM service and OCSP responder (a CA to trust, a timeout). */
  references?: ReferenceClientOptions;
  /** GPU nodes to attest (default nvidia.com/gpu.present=true). */
  nodeSelector?: string;
  random?: () => number;
}

export interface MemberAudit {
  /** Default: in memory, with a warning (lost on restart). */
  store?: AuditStore;
  /** Signs the log's checkpoints; default a key made at start (checkpoints then verify only with its public key, logged once). */
  signer?: CheckpointSigner;
  /** Default member-<region>. */
  logId?: string;
}

export const REGISTRATION_KEY = "registration";

/** Opens the member's audit log once, on first use. */
function auditOpener(opts: MemberOptions, clock: typeof realClock, log: Logger): () => Promise<AuditLog> {
  let opened: Promise<AuditLog> | undefined;
  return () => {
    opened ??= (async () => {
      if (!opts.audit?.store) {
        log.warn(
          "the audit log is kept in memory only and is lost on restart; give --audit-log a file on a persistent volume",
          {},
        );
      }
      let signer = opts.audit?.signer;
      if (!signer) {
        signer = ed25519CheckpointSigner(generateKeyPairSync("ed25519").privateKey);
        log.warn(
          "audit checkpoints are signed with a key made at start; give --audit-key to sign with a kept key",
          {
            publicKey: signer.publicKey,
          },
        );
      }
      return AuditLog.open(opts.audit?.store ?? new MemoryAuditStore(), {
        logId: opts.audit?.logId ?? `member-${opts.region}`,
        signer,
        clock: () => new Date(clock.now()),
        openedBy: `sovereign-member/${opts.region}`,
      });
    })();
    return opened;
  };
}

export function memberControllers(opts: MemberOptions) {
  const { metrics, log } = opts;
  const clock = opts.clock ?? realClock;
  const hubNamespace = regionNamespace(opts.region);
  const hubApi = opts.hubKc.makeApiClient(CustomObjectsApi);
  const core = opts.regionKc.makeApiClient(CoreV1Api);
  const gateOn = opts.attestation !== undefined && !opts.insecureSkipAttestation;
  if (!gateOn && !opts.insecureSkipAttestation) {
    log.warn("no attestation is configured: learner pods stay behind their scheduling gate", {});
  }
  const audit = auditOpener(opts, clock, log);
  // Opened at start, so its warnings and a store that cannot be opened show at once.
  if (gateOn) audit().catch((err: unknown) => log.error("the audit log cannot be opened", { err }));
  const ownsPod = (p: V1Pod) =>
    (p.metadata?.annotations?.["sovereign.ai/region-work"] ?? "").startsWith(`${hubNamespace}/`);

  const works = new SupervisedInformer<RegionWork>({
    kc: opts.hubKc,
    path: `/apis/sovereign.ai/v1alpha1/namespaces/${hubNamespace}/regionworks`,
    list: () =>
      hubApi.listNamespacedCustomObject({
        ...SOVEREIGN_API,
        plural: "regionworks",
        namespace: hubNamespace,
      }),
    onKey: (key) => workController.enqueue(key.split("/")[1] ?? key),
    metrics,
    log: log.child("informer.regionworks"),
  });
  const pods = new SupervisedInformer<V1Pod>({
    kc: opts.regionKc,
    path: `/api/v1/namespaces/${LEARNER_NAMESPACE}/pods`,
    list: () => core.listNamespacedPod({ namespace: LEARNER_NAMESPACE, labelSelector: WORK_LABEL }),
    labelSelector: WORK_LABEL,
    onKey: (key) => {
      const name = key.split("/")[1] ?? "";
      const pod = pods.get(name, LEARNER_NAMESPACE);
      const owner = pod?.metadata?.annotations?.["sovereign.ai/region-work"];
      // Another member may share this cluster (several regions on one cluster, or tests):
      // its pods are none of this member's business, and must never look orphaned to it.
      if (pod && owner) {
        if (ownsPod(pod)) workController.enqueue(owner.split("/")[1] ?? owner);
      } else for (const w of works.list()) workController.enqueue(w.metadata?.name ?? "");
      gateController?.enqueue(name);
    },
    metrics,
    log: log.child("informer.pods"),
  });
  const workController = new Controller({
    name: "regionwork",
    workers: opts.workers,
    metrics,
    log: log.child("regionwork"),
    clock,
    reconcile: workReconciler({
      region: opts.region,
      metrics,
      hubKc: opts.hubKc,
      regionKc: opts.regionKc,
      hubNamespace,
      getWork: (name) => works.get(name, hubNamespace) as RegionWork | undefined,
      podsOf: (id) =>
        pods.list(LEARNER_NAMESPACE).filter((p) => p.metadata?.labels?.[WORK_LABEL] === id && ownsPod(p)),
      insecureSkipAttestation: opts.insecureSkipAttestation ?? false,
      nats: opts.nats,
      learnerNats: opts.learnerNats,
      now: () => clock.now(),
      nodeQuarantine: (node) => attester?.quarantine(node),
    }),
  });

  // The gate: GPU nodes challenged on a jittered period, learners admitted one verdict each.
  const gate = gateOn ? (opts.attestation as MemberAttestation) : undefined;
  const events = gate ? eventRecorder(opts.regionKc, "sovereign-member", log) : undefined;
  const selector = gate?.nodeSelector ?? GPU_NODE_SELECTOR;
  const nodes = gate
    ? new SupervisedInformer<V1Node>({
        kc: opts.regionKc,
        path: "/api/v1/nodes",
        list: () => core.listNode({ labelSelector: selector }),
        labelSelector: selector,
        onKey: (key) => {
          nodeController?.enqueue(key);
          // A node's standing changed: gated learners may now have somewhere to go.
          for (const p of pods.list(LEARNER_NAMESPACE)) {
            if (isGated(p) && ownsPod(p)) gateController?.enqueue(p.metadata?.name ?? "");
          }
        },
        metrics,
        log: log.child("informer.nodes"),
      })
    : undefined;
  // Only where the facts come from differs between the modes; the verdict is the same evaluator's.
  const nras = gate?.policy.spec.verification.nras;
  if (gate?.policy.spec.verification.mode === "NRAS" && !nras) {
    throw new Error(
      `NrasSettingsRequired: AttestationPolicy ${gate.policy.name} has verification.mode NRAS but no verification.nras; give it url, acceptedIssuers and jwksUrl`,
    );
  }
  // Local mode completes what the node does not supply (RIMs, OCSP answers) from the policy's
  // services unless verification.local.fetch is false (air-gapped: a RIM mirror on the node).
  const local =
    gate?.policy.spec.verification.mode === "Local" ? referenceSettings(gate.policy.spec) : undefined;
  const appraiser =
    gate?.policy.spec.verification.mode === "NRAS" && nras
      ? new NrasAppraiser(nras, gate.nras)
      : gate && local?.fetch
        ? new ReferenceFetcher(local, gate.anchors, { clock, ...gate.references })
        : undefined;
  const attester =
    gate && nodes
      ? new NodeAttester({
          region: opts.region,
          regionKc: opts.regionKc,
          policy: gate.policy,
          anchors: gate.anchors,
          source: gate.source,
          ...(appraiser ? { appraise: appraiser.appraise } : {}),
          audit,
          clock,
          log: log.child(ATTESTATION_CONTROLLER),
          getNode: (name) => nodes.get(name),
          ownPods: () => pods.list(LEARNER_NAMESPACE).filter(ownsPod),
          metrics,
          events,
          random: gate.random,
        })
      : undefined;
  if (attester) metrics.evidenceAges = () => attester.evidenceAges();
  const nodeController =
    attester && nodes
      ? new Controller({
          name: ATTESTATION_CONTROLLER,
          workers: opts.workers,
          metrics,
          log: log.child(ATTESTATION_CONTROLLER),
          clock,
          reconcile: nodeAttestationReconciler({
            attester,
            getNode: (name) => nodes.get(name),
            clock,
            random: gate?.random,
            log: log.child(ATTESTATION_CONTROLLER),
          }),
        })
      : undefined;
  const gateController =
    attester && nodes
      ? new Controller({
          name: GATE_CONTROLLER_NAME,
          workers: opts.workers,
          metrics,
          log: log.child(GATE_CONTROLLER_NAME),
          clock,
          reconcile: gateReconciler({
            region: opts.region,
            hubNamespace,
            regionKc: opts.regionKc,
            attester,
            getPod: (name) => pods.get(name, LEARNER_NAMESPACE),
            learnerPods: () => pods.list(LEARNER_NAMESPACE),
            getWork: (name) => works.get(name, hubNamespace) as RegionWork | undefined,
            listNodes: () => nodes.list(),
            clock,
            audit,
            log: log.child(GATE_CONTROLLER_NAME),
            metrics,
            events,
          }),
        })
      : undefined;
  // Pods whose work vanished while this member was down are found by a sweep of every
  // work id the pods carry; each maps back to a work name through its annotation.
  const sweep = () => {
    for (const p of pods.list(LEARNER_NAMESPACE)) {
      if (!ownsPod(p)) continue;
      const owner = p.metadata?.annotations?.["sovereign.ai/region-work"];
      if (owner && workId(owner.split("/")[1] ?? "") === p.metadata?.labels?.[WORK_LABEL]) {
        workController.enqueue(owner.split("/")[1] ?? "");
      }
    }
  };
  const beat = registrationReconciler({
    region: opts.region,
    registration: opts.registration,
    regionKc: opts.regionKc,
    hubKc: opts.hubKc,
    clock,
    heartbeatIntervalMs: opts.heartbeatIntervalMs ?? 10_000,
    labels: opts.labels,
    // The gate's node cache holds exactly the inventory's nodes when it selects them the same way.
    gpuNodes: () => (nodes?.hasSynced() && selector === GPU_NODE_SELECTOR ? nodes.list() : undefined),
  });
  // Runs deleted while no member was up to see them go leave their model mirrors behind in
  // the region, each asking the hub for its gone source across the leaf link for ever.
  const mirrorSweeper = opts.nats ? new ModelMirrorSweeper(opts.nats, { now: () => clock.now() }) : undefined;
  let mirrorsSweptAt = Number.NEGATIVE_INFINITY;
  const sweepOrphanedMirrors = async () => {
    // Often enough that an orphan goes about a minute after it is first seen.
    if (!mirrorSweeper || clock.now() - mirrorsSweptAt < ORPHANED_MIRROR_AFTER_MS / 4) return;
    mirrorsSweptAt = clock.now();
    const inUse = works
      .list()
      .flatMap((w) => (w.spec?.run ? [{ namespace: w.spec.run.namespace, run: w.spec.run.name }] : []));
    const removed = await mirrorSweeper.sweep(inUse).catch((err: unknown) => {
      log.warn("looking for orphaned model mirrors failed; trying again shortly", { err });
      return [];
    });
    if (removed.length) {
      log.info("removed model mirrors whose run is gone at the hub", { streams: removed });
    }
  };
  const registrationController = new Controller({
    name: "registration",
    workers: 1,
    metrics,
    log: log.child("registration"),
    clock,
    reconcile: async () => {
      sweep();
      await sweepOrphanedMirrors();
      // A quiet log still gets its checkpoint within checkpointEverySeconds.
      if (gateOn) await (await audit()).checkpointIfDue();
      return beat();
    },
  });
  registrationController.enqueue(REGISTRATION_KEY);
  return {
    informers: nodes ? [works, pods, nodes] : [works, pods],
    controllers: [
      workController,
      registrationController,
      ...(nodeController ? [nodeController] : []),
      ...(gateController ? [gateController] : []),
    ],
    /** The gate's parts, for tests and tools: the node standings and the audit log. */
    attestation: attester ? { attester, audit } : undefined,
  };
}
