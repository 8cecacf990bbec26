// The operator's Prometheus metrics. Controller and work-queue metrics use
// controller-runtime's names and labels, so dashboards built for Go operators read ours.
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import type { QueueObserver } from "./workqueue.ts";

/** FederatedRun status.phase values (crds/federatedrun), for sovereign_runs. */
const RUN_PHASES = ["Pending", "Placing", "Running", "Suspended", "Succeeded", "Failed"] as const;

export class OperatorMetrics {
  readonly registry = new Registry();

  readonly reconcileTotal = new Counter({
    name: "controller_runtime_reconcile_total",
    help: "Total number of reconciliations per controller",
    labelNames: ["controller", "result"] as const,
    registers: [this.registry],
  });
  readonly reconcileErrors = new Counter({
    name: "controller_runtime_reconcile_errors_total",
    help: "Total number of reconciliation errors per controller",
    labelNames: ["controller"] as const,
    registers: [this.registry],
  });
  readonly terminalReconcileErrors = new Counter({
    name: "controller_runtime_terminal_reconcile_errors_total",
    help: "Total number of terminal reconciliation errors per controller",
    labelNames: ["controller"] as const,
    registers: [this.registry],
  });
  readonly reconcileTime = new Histogram({
    name: "controller_runtime_reconcile_time_seconds",
    help: "Length of time per reconciliation per controller",
    labelNames: ["controller"] as const,
    buckets: [
      0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9, 1, 1.25,
      1.5, 1.75, 2, 2.5, 3, 3.5, 4, 4.5, 5, 6, 7, 8, 9, 10, 15, 20, 25, 30, 40, 50, 60,
    ],
    registers: [this.registry],
  });
  readonly activeWorkers = new Gauge({
    name: "controller_runtime_active_workers",
    help: "Number of currently used workers per controller",
    labelNames: ["controller"] as const,
    registers: [this.registry],
  });
  readonly maxConcurrentReconciles = new Gauge({
    name: "controller_runtime_max_concurrent_reconciles",
    help: "Maximum number of concurrent reconciles per controller",
    labelNames: ["controller"] as const,
    registers: [this.registry],
  });
  readonly workqueueDepth = new Gauge({
    name: "workqueue_depth",
    help: "Current depth of workqueue",
    labelNames: ["name", "controller"] as const,
    registers: [this.registry],
  });
  readonly workqueueAdds = new Counter({
    name: "workqueue_adds_total",
    help: "Total number of adds handled by workqueue",
    labelNames: ["name", "controller"] as const,
    registers: [this.registry],
  });
  readonly workqueueRetries = new Counter({
    name: "workqueue_retries_total",
    help: "Total number of retries handled by workqueue",
    labelNames: ["name", "controller"] as const,
    registers: [this.registry],
  });
  readonly workqueueQueueDuration = new Histogram({
    name: "workqueue_queue_duration_seconds",
    help: "How long in seconds an item stays in workqueue before being requested",
    labelNames: ["name", "controller"] as const,
    buckets: [1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 0.01, 0.1, 1, 10, 100, 1000],
    registers: [this.registry],
  });
  readonly workqueueWorkDuration = new Histogram({
    name: "workqueue_work_duration_seconds",
    help: "How long in seconds processing an item from workqueue takes",
    labelNames: ["name", "controller"] as const,
    buckets: [1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 0.01, 0.1, 1, 10, 100, 1000],
    registers: [this.registry],
  });
  readonly leaderElectionMaster = new Gauge({
    name: "leader_election_master_status",
    help: "Gauge of if the reporting system is master of the relevant lease, 0 indicates backup, 1 indicates master. 'name' is the string used to identify the lease.",
    labelNames: ["name"] as const,
    registers: [this.registry],
  });
  readonly informerRestarts = new Counter({
    name: "sovereign_informer_restarts_total",
    help: "Times an informer's watch failed and was restarted with a fresh list, by resource",
    labelNames: ["resource", "reason"] as const,
    registers: [this.registry],
  });

  readonly invalidObjects = new Counter({
    name: "sovereign_invalid_objects_total",
    help: "Objects that passed the API schema but cannot be acted on, by kind and reason code",
    labelNames: ["kind", "reason"] as const,
    registers: [this.registry],
  });

  readonly regionReady = new Gauge({
    name: "sovereign_region_ready",
    help: "1 when the hub judges the region Ready (accepted, attested, heartbeating), else 0",
    labelNames: ["region"] as const,
    registers: [this.registry],
  });
  readonly regionAttestedGpus = new Gauge({
    name: "sovereign_region_attested_gpus",
    help: "GPUs on attested GPU nodes, as the region's member last reported",
    labelNames: ["region"] as const,
    registers: [this.registry],
  });
  readonly runRegions = new Gauge({
    name: "sovereign_run_regions",
    help: "Regions of a FederatedRun by state (placed, ready)",
    labelNames: ["namespace", "run", "state"] as const,
    registers: [this.registry],
  });

  /** Set by the hub only: a member manages no runs. */
  #runPhases?: () => Iterable<string | undefined>;
  /** The hub says once how to list its runs' phases; sovereign_runs is computed at each scrape. */
  observeRunPhases(list: () => Iterable<string | undefined>): void {
    this.#runPhases = list;
  }
  readonly runsByPhase = new Gauge({
    name: "sovereign_runs",
    help: "FederatedRuns the hub manages, by status.phase (a run without a phase yet counts as Pending)",
    labelNames: ["phase"] as const,
    registers: [this.registry],
    collect: () => {
      const list = this.#runPhases;
      if (!list) return; // a member manages no runs: no series rather than zeros
      // Every phase, zeros included, so a panel shows a run entering a phase it never had.
      const counts = new Map<string, number>(RUN_PHASES.map((p) => [p, 0]));
      for (const phase of list()) {
        const p = phase ?? "Pending";
        counts.set(p, (counts.get(p) ?? 0) + 1);
      }
      for (const [phase, n] of counts) this.runsByPhase.set({ phase }, n);
    },
  });

  readonly rounds = new Counter({
    name: "sovereign_rounds_total",
    help: "Closed rounds by outcome (QuorumReached, AllRegionsReported, QuorumMissed, Aborted)",
    labelNames: ["namespace", "run", "outcome"] as const,
    registers: [this.registry],
  });
  readonly roundDuration = new Histogram({
    name: "sovereign_round_duration_seconds",
    help: "From a round's opening to its aggregate being published",
    labelNames: ["namespace", "run"] as const,
    buckets: [1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200],
    registers: [this.registry],
  });
  readonly currentRound = new Gauge({
    name: "sovereign_run_current_round",
    help: "The round a FederatedRun is on",
    labelNames: ["namespace", "run"] as const,
    registers: [this.registry],
  });
  readonly deltasAccepted = new Counter({
    name: "sovereign_deltas_accepted_total",
    help: "Deltas the hub verified against their signed manifest",
    labelNames: ["region"] as const,
    registers: [this.registry],
  });
  readonly learnerSteps = new Counter({
    name: "sovereign_learner_steps_total",
    help: "Inner training steps in the deltas the hub verified, by region (from their signed manifests)",
    labelNames: ["region"] as const,
    registers: [this.registry],
  });
  readonly learnerTrainSeconds = new Counter({
    name: "sovereign_learner_train_seconds_total",
    help: "Seconds the learners spent training for the deltas the hub verified, by region (the manifests' trainMs, as the learners measured it; the goodput panel)",
    labelNames: ["region"] as const,
    registers: [this.registry],
  });
  readonly learnerWaitSeconds = new Counter({
    name: "sovereign_learner_wait_seconds_total",
    help: "Seconds the learners spent waiting for a global model or stalled ahead of it, before the deltas the hub verified, by region (the manifests' waitMs)",
    labelNames: ["region"] as const,
    registers: [this.registry],
  });
  readonly deltaBytes = new Counter({
    name: "sovereign_delta_bytes_total",
    help: "Bytes of verified deltas received from each region",
    labelNames: ["region"] as const,
    registers: [this.registry],
  });
  readonly deltasRefused = new Counter({
    name: "sovereign_deltas_refused_total",
    help: "Deltas refused, by region and reason code",
    labelNames: ["region", "reason"] as const,
    registers: [this.registry],
  });

  // Member: the attestation gate (operator/member/attestation-*.ts).
  readonly attestationVerifications = new Counter({
    name: "sovereign_attestation_verifications_total",
    help: "GPU node attestations by result (passed, failed, error: no evidence), reason code (Verified when passed, else the first failure) and purpose (admission of a learner, reattestation)",
    labelNames: ["result", "reason", "purpose"] as const,
    registers: [this.registry],
  });
  readonly attestationDuration = new Histogram({
    name: "sovereign_attestation_duration_seconds",
    help: "From challenging a GPU node to its verdict (evidence collection and verification of every GPU)",
    buckets: [0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64],
    registers: [this.registry],
  });
  /** Set by the member's attestation controller: each GPU node's latest evidence age, read at scrape time. */
  evidenceAges: () => Iterable<readonly [node: string, seconds: number]> = () => [];
  readonly attestationEvidenceAge = new Gauge({
    name: "sovereign_attestation_evidence_age_seconds",
    help: "Age of each GPU node's latest evidence (since the member challenged it); learners are admitted only below the policy's maxEvidenceAgeSeconds",
    labelNames: ["node"] as const,
    registers: [this.registry],
    collect: () => {
      this.attestationEvidenceAge.reset();
      for (const [node, seconds] of this.evidenceAges()) this.attestationEvidenceAge.set({ node }, seconds);
    },
  });
  readonly quarantinedNodes = new Gauge({
    name: "sovereign_quarantined_nodes",
    help: "GPU nodes of the region quarantined after a failed or expired attestation: no new learners, running ones stopped",
    labelNames: ["region"] as const,
    registers: [this.registry],
  });
  readonly learnersAdmitted = new Counter({
    name: "sovereign_learners_admitted_total",
    help: "Learner pods whose attestation gate was released after a passing verdict of their node",
    labelNames: ["region"] as const,
    registers: [this.registry],
  });

  constructor(opts: { defaultMetrics?: boolean } = {}) {
    if (opts.defaultMetrics !== false) collectDefaultMetrics({ register: this.registry });
  }

  /** Wires a controller's work queue to the workqueue_* series. */
  queueObserver(controller: string): QueueObserver {
    const labels = { name: controller, controller };
    return {
      add: () => this.workqueueAdds.inc(labels),
      retry: () => this.workqueueRetries.inc(labels),
      depth: (n) => this.workqueueDepth.set(labels, n),
      queued: (s) => this.workqueueQueueDuration.observe(labels, s),
      worked: (s) => this.workqueueWorkDuration.observe(labels, s),
    };
  }
}
