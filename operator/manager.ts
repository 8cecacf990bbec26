// The manager runs what every mode shares: probe and metrics endpoints, leader election,
// the controllers (only while leading) and a graceful shutdown that lets in-flight
// reconciles finish and hands the Lease over.
import type { KubeConfig } from "@kubernetes/client-node";
import { type AuditStore, exportAuditLog } from "../attestation/audit/mod.ts";
import type { OperatorConfig } from "./config.ts";
import type { Controller } from "./runtime/controller.ts";
import type { SupervisedInformer } from "./runtime/informer.ts";
import { KubernetesLeaseLock, LeaderElector } from "./runtime/leaderelection.ts";
import type { Logger } from "./runtime/log.ts";
import type { OperatorMetrics } from "./runtime/metrics.ts";
import { type ProbeServer, startProbeServer } from "./runtime/server.ts";

export interface ManagerParts {
  config: OperatorConfig;
  kc: KubeConfig;
  metrics: OperatorMetrics;
  log: Logger;
  identity: string;
  // biome-ignore lint/suspicious/noExplicitAny: informers of any resource type
  informers: SupervisedInformer<any>[];
  controllers: Controller[];
  /**
   * Served read-only at /audit/export on the metrics address; a function when the store is
   * opened and closed with leadership (the hub's), undefined from it while not open.
   */
  auditStore?: AuditStore | (() => AuditStore | undefined);
  /**
   * What this replica holds only while it leads, opened before its controllers start and
   * closed after they stop (the hub's audit log).
   */
  leaderResources?: { open: () => Promise<unknown>; close: () => Promise<void> };
}

export class Manager {
  private readonly parts: ManagerParts;
  private probes: ProbeServer[] = [];
  private elector?: LeaderElector;
  private lastLoopAt = Date.now();

  constructor(parts: ManagerParts) {
    this.parts = parts;
  }

  /** Runs until `signal` aborts; resolves once everything has stopped. */
  async run(signal: AbortSignal): Promise<void> {
    const { config, metrics, log } = this.parts;
    const heartbeat = setInterval(() => {
      this.lastLoopAt = Date.now();
    }, 1000);
    heartbeat.unref();
    const healthz = {
      "event-loop": () => {
        const lag = Date.now() - this.lastLoopAt;
        return { ok: lag < 30_000, reason: `event loop stalled for ${lag} ms` };
      },
    };
    const readyz = {
      informers: () => {
        const unsynced = this.parts.informers.filter((i) => !i.hasSynced()).length;
        return { ok: !this.isLeading() || unsynced === 0, reason: `${unsynced} informer caches not synced` };
      },
    };
    // Without leader election this replica leads from the start: what it holds as leader (the
    // hub's audit log) is open before its endpoints answer, so /audit/export never sees it missing.
    if (!config.leaderElect) await this.parts.leaderResources?.open();
    const metricsAddr = config.metricsBindAddress;
    const probeAddr = config.healthProbeBindAddress;
    const { auditStore } = this.parts;
    const currentAuditStore = typeof auditStore === "function" ? auditStore : () => auditStore;
    const auditExport = auditStore
      ? () => {
          const store = currentAuditStore();
          return store && exportAuditLog(store);
        }
      : undefined;
    this.probes.push(await startProbeServer({ ...metricsAddr, metrics, healthz, readyz, auditExport }));
    if (probeAddr.port !== metricsAddr.port || probeAddr.host !== metricsAddr.host) {
      this.probes.push(await startProbeServer({ ...probeAddr, metrics, healthz, readyz }));
    }
    log.info("serving probes and metrics", {
      metrics: this.probes[0]?.port,
      probes: this.probes.at(-1)?.port,
    });

    const lead = async (leadership: AbortSignal) => {
      await this.parts.leaderResources?.open();
      await Promise.all(this.parts.informers.map((i) => i.start()));
      await Promise.all(this.parts.controllers.map((c) => c.run(leadership)));
      await Promise.all(this.parts.informers.map((i) => i.stop()));
      await this.parts.leaderResources?.close();
    };
    if (config.leaderElect) {
      let leading: Promise<void> = Promise.resolve();
      this.elector = new LeaderElector({
        lock: new KubernetesLeaseLock(this.parts.kc, config.namespace, config.leaderElectionId),
        identity: this.parts.identity,
        leaseDurationMs: config.leaseDurationMs,
        renewDeadlineMs: config.renewDeadlineMs,
        retryPeriodMs: config.retryPeriodMs,
        log: log.child("leader-election"),
        onStartedLeading: (leadership) => {
          log.info("became leader; starting controllers", { identity: this.parts.identity });
          leading = lead(leadership);
        },
        onStoppedLeading: () =>
          log.warn("stopped leading; controllers stop", { identity: this.parts.identity }),
        onNewLeader: (holder) => log.info("leader is", { holder }),
        onLeadershipChange: (isLeader) =>
          metrics.leaderElectionMaster.set({ name: config.leaderElectionId }, isLeader ? 1 : 0),
      });
      await this.elector.run(signal);
      await leading;
    } else {
      await lead(signal);
    }
    clearInterval(heartbeat);
    await Promise.all(this.probes.map((p) => p.close()));
    log.info("stopped");
  }

  isLeading(): boolean {
    return this.elector ? this.elector.isLeader() : true;
  }
}
