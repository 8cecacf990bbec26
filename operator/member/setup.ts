// Wires the member's controllers: its RegionWorks at the hub (through the scoped
// credential) and its learner pods in the region, plus the registration heartbeat.
import { CoreV1Api, CustomObjectsApi, type KubeConfig, type V1Pod } from "@kubernetes/client-node";
import type { NatsConnection } from "@nats-io/transport-node";
import type { RegionWork } from "../../crds/types.generated.ts";
import { regionNamespace } from "../hub/region-access.ts";
import { SOVEREIGN_API } from "../names.ts";
import { type Clock, realClock } from "../runtime/clock.ts";
import { Controller } from "../runtime/controller.ts";
import { SupervisedInformer } from "../runtime/informer.ts";
import type { Logger } from "../runtime/log.ts";
import type { OperatorMetrics } from "../runtime/metrics.ts";
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
}

export const REGISTRATION_KEY = "registration";

export function memberControllers(opts: MemberOptions) {
  const { metrics, log } = opts;
  const clock = opts.clock ?? realClock;
  const hubNamespace = regionNamespace(opts.region);
  const hubApi = opts.hubKc.makeApiClient(CustomObjectsApi);
  const core = opts.regionKc.makeApiClient(CoreV1Api);

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
      const pod = pods.get(key.split("/")[1] ?? "", LEARNER_NAMESPACE);
      const owner = pod?.metadata?.annotations?.["sovereign.ai/region-work"];
      if (owner) workController.enqueue(owner.split("/")[1] ?? owner);
      else for (const w of works.list()) workController.enqueue(w.metadata?.name ?? "");
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
      podsOf: (id) => pods.list(LEARNER_NAMESPACE).filter((p) => p.metadata?.labels?.[WORK_LABEL] === id),
      insecureSkipAttestation: opts.insecureSkipAttestation ?? false,
      nats: opts.nats,
      learnerNats: opts.learnerNats,
      now: () => clock.now(),
    }),
  });
  // Pods whose work vanished while this member was down are found by a sweep of every
  // work id the pods carry; each maps back to a work name through its annotation.
  const sweep = () => {
    for (const p of pods.list(LEARNER_NAMESPACE)) {
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
  });
  const registrationController = new Controller({
    name: "registration",
    workers: 1,
    metrics,
    log: log.child("registration"),
    clock,
    reconcile: async () => {
      sweep();
      return beat();
    },
  });
  registrationController.enqueue(REGISTRATION_KEY);
  return { informers: [works, pods], controllers: [workController, registrationController] };
}
