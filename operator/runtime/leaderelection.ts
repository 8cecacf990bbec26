// Leader election on a coordination.k8s.io Lease, with client-go's semantics, because
// @kubernetes/client-node has none:
// - a candidate takes the lease when it is free or its holder has not renewed it for
//   leaseDuration, measured on the candidate's own clock from when it last saw the
//   record change (never by comparing clocks across machines);
// - the leader renews every retryPeriod and gives up leadership if it cannot renew
//   within renewDeadline, so it stops acting before anyone else may start;
// - writes carry the lease's resourceVersion, so two candidates cannot both win;
// - on a clean shutdown the leader releases the lease so a successor need not wait.
import { CoordinationV1Api, type KubeConfig, type V1Lease, V1MicroTime } from "@kubernetes/client-node";
import { type Clock, realClock } from "./clock.ts";
import { type Logger, silentLogger } from "./log.ts";

export interface LeaderElectionRecord {
  holderIdentity: string;
  leaseDurationSeconds: number;
  acquireTime: number;
  renewTime: number;
  leaseTransitions: number;
}

/** Storage for the record; `version` is the optimistic-concurrency token. */
export interface LeaseLock {
  readonly description: string;
  get(): Promise<{ record: LeaderElectionRecord; version: string } | undefined>;
  create(record: LeaderElectionRecord): Promise<void>;
  /** Must fail when `version` is no longer current. */
  update(record: LeaderElectionRecord, version: string): Promise<void>;
}

export interface LeaderElectionConfig {
  lock: LeaseLock;
  identity: string;
  leaseDurationMs?: number;
  renewDeadlineMs?: number;
  retryPeriodMs?: number;
  clock?: Clock;
  log?: Logger;
  /** Called once leadership is gained; `signal` aborts when it is lost or released. */
  onStartedLeading: (signal: AbortSignal) => void;
  onStoppedLeading?: () => void;
  onNewLeader?: (identity: string) => void;
  /** Seconds-resolution gauge for leader_election_master_status. */
  onLeadershipChange?: (leading: boolean) => void;
}

/** client-go's jitter: retries are spread over [period, period × 1.2). */
const jitter = (ms: number) => ms * (1 + Math.random() * 0.2);

export class LeaderElector {
  private readonly cfg: Required<
    Omit<LeaderElectionConfig, "onStoppedLeading" | "onNewLeader" | "onLeadershipChange">
  > &
    Pick<LeaderElectionConfig, "onStoppedLeading" | "onNewLeader" | "onLeadershipChange">;
  private observed?: { record: LeaderElectionRecord; version: string };
  private observedAt = 0;
  private reportedLeader = "";
  private leading = false;

  constructor(config: LeaderElectionConfig) {
    const leaseDurationMs = config.leaseDurationMs ?? 15_000;
    const renewDeadlineMs = config.renewDeadlineMs ?? 10_000;
    const retryPeriodMs = config.retryPeriodMs ?? 2_000;
    // The same guards as client-go: otherwise a leader could lose the lease while
    // still believing it holds it.
    if (leaseDurationMs <= renewDeadlineMs)
      throw new RangeError("leaseDuration must be greater than renewDeadline");
    if (renewDeadlineMs <= retryPeriodMs * 1.2)
      throw new RangeError("renewDeadline must be greater than retryPeriod × 1.2");
    if (!config.identity) throw new RangeError("leader election needs a non-empty identity");
    this.cfg = {
      ...config,
      leaseDurationMs,
      renewDeadlineMs,
      retryPeriodMs,
      clock: config.clock ?? realClock,
      log: config.log ?? silentLogger,
    };
  }

  isLeader(): boolean {
    return this.leading;
  }

  /** The holder this candidate last saw, if any. */
  leader(): string {
    return this.observed?.record.holderIdentity ?? "";
  }

  /**
   * Campaigns until `signal` aborts: acquire, lead while renewals succeed, and on losing
   * the lease campaign again. Resolves after releasing the lease on abort.
   */
  async run(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      if (!(await this.acquire(signal))) break;
      const leadership = new AbortController();
      this.setLeading(true);
      this.cfg.onStartedLeading(leadership.signal);
      await this.renewUntilLost(signal);
      leadership.abort();
      this.setLeading(false);
      this.cfg.onStoppedLeading?.();
    }
    if (this.observed?.record.holderIdentity === this.cfg.identity) await this.release();
  }

  private setLeading(leading: boolean): void {
    this.leading = leading;
    this.cfg.onLeadershipChange?.(leading);
  }

  private sleep(ms: number, signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      if (signal.aborted) return resolve();
      const onAbort = () => {
        this.cfg.clock.clearTimeout(handle);
        resolve();
      };
      const handle = this.cfg.clock.setTimeout(() => {
        signal.removeEventListener("abort", onAbort);
        resolve();
      }, ms);
      signal.addEventListener("abort", onAbort, { once: true });
    });
  }

  private async acquire(signal: AbortSignal): Promise<boolean> {
    while (!signal.aborted) {
      if (await this.tryAcquireOrRenew()) {
        this.cfg.log.info("acquired lease", {
          lease: this.cfg.lock.description,
          identity: this.cfg.identity,
        });
        return true;
      }
      await this.sleep(jitter(this.cfg.retryPeriodMs), signal);
    }
    return false;
  }

  /** Renews every retryPeriod; returns when a renewal window of renewDeadline passes without success, or on abort. */
  private async renewUntilLost(signal: AbortSignal): Promise<void> {
    let lastRenew = this.cfg.clock.now();
    while (!signal.aborted) {
      await this.sleep(this.cfg.retryPeriodMs, signal);
      if (signal.aborted) return;
      if (await this.tryAcquireOrRenew()) {
        lastRenew = this.cfg.clock.now();
        continue;
      }
      if (
        this.cfg.clock.now() - lastRenew >= this.cfg.renewDeadlineMs ||
        this.leader() !== this.cfg.identity
      ) {
        this.cfg.log.warn("lost lease", { lease: this.cfg.lock.description, holder: this.leader() });
        return;
      }
    }
  }

  /** One attempt, exactly as client-go's tryAcquireOrRenew. */
  async tryAcquireOrRenew(): Promise<boolean> {
    const now = this.cfg.clock.now();
    const desired: LeaderElectionRecord = {
      holderIdentity: this.cfg.identity,
      leaseDurationSeconds: Math.ceil(this.cfg.leaseDurationMs / 1000),
      acquireTime: now,
      renewTime: now,
      leaseTransitions: 0,
    };
    let current: Awaited<ReturnType<LeaseLock["get"]>>;
    try {
      current = await this.cfg.lock.get();
      if (!current) {
        await this.cfg.lock.create(desired);
        this.remember({ record: desired, version: "" }, now);
        return true;
      }
    } catch (err) {
      this.cfg.log.debug("lease read/create failed", { err });
      return false;
    }
    if (!this.observed || !sameRecord(this.observed.record, current.record)) this.remember(current, now);
    const held = current.record.holderIdentity;
    const expired = this.observedAt + current.record.leaseDurationSeconds * 1000 <= now;
    if (held && held !== this.cfg.identity && !expired) return false;
    if (held === this.cfg.identity) {
      desired.acquireTime = current.record.acquireTime;
      desired.leaseTransitions = current.record.leaseTransitions;
    } else {
      desired.leaseTransitions = current.record.leaseTransitions + 1;
    }
    try {
      await this.cfg.lock.update(desired, current.version);
    } catch (err) {
      this.cfg.log.debug("lease update failed", { err });
      return false;
    }
    this.remember({ record: desired, version: current.version }, now);
    return true;
  }

  private remember(observed: { record: LeaderElectionRecord; version: string }, at: number): void {
    this.observed = observed;
    this.observedAt = at;
    const holder = observed.record.holderIdentity;
    if (holder && holder !== this.reportedLeader) {
      this.reportedLeader = holder;
      this.cfg.onNewLeader?.(holder);
    }
  }

  /** Hands the lease back so a successor does not wait out leaseDuration. */
  private async release(): Promise<void> {
    try {
      const current = await this.cfg.lock.get();
      if (!current || current.record.holderIdentity !== this.cfg.identity) return;
      const now = this.cfg.clock.now();
      await this.cfg.lock.update(
        { ...current.record, holderIdentity: "", leaseDurationSeconds: 1, renewTime: now, acquireTime: now },
        current.version,
      );
      this.cfg.log.info("released lease", { lease: this.cfg.lock.description });
    } catch (err) {
      this.cfg.log.warn("could not release lease; successors wait for it to expire", { err });
    }
  }
}

function sameRecord(a: LeaderElectionRecord, b: LeaderElectionRecord): boolean {
  return (
    a.holderIdentity === b.holderIdentity &&
    a.renewTime === b.renewTime &&
    a.leaseTransitions === b.leaseTransitions
  );
}

/** The lock on a real Lease object. */
export class KubernetesLeaseLock implements LeaseLock {
  readonly description: string;
  private readonly api: CoordinationV1Api;
  private readonly namespace: string;
  private readonly name: string;

  constructor(kc: KubeConfig, namespace: string, name: string) {
    this.api = kc.makeApiClient(CoordinationV1Api);
    this.namespace = namespace;
    this.name = name;
    this.description = `${namespace}/${name}`;
  }

  async get(): Promise<{ record: LeaderElectionRecord; version: string } | undefined> {
    let lease: V1Lease;
    try {
      lease = await this.api.readNamespacedLease({ name: this.name, namespace: this.namespace });
    } catch (err) {
      if ((err as { code?: number }).code === 404) return undefined;
      throw err;
    }
    const s = lease.spec ?? {};
    return {
      record: {
        holderIdentity: s.holderIdentity ?? "",
        leaseDurationSeconds: s.leaseDurationSeconds ?? 0,
        acquireTime: s.acquireTime ? new Date(s.acquireTime).getTime() : 0,
        renewTime: s.renewTime ? new Date(s.renewTime).getTime() : 0,
        leaseTransitions: s.leaseTransitions ?? 0,
      },
      version: lease.metadata?.resourceVersion ?? "",
    };
  }

  private body(record: LeaderElectionRecord, version?: string): V1Lease {
    return {
      apiVersion: "coordination.k8s.io/v1",
      kind: "Lease",
      metadata: {
        name: this.name,
        namespace: this.namespace,
        ...(version ? { resourceVersion: version } : {}),
      },
      spec: {
        holderIdentity: record.holderIdentity,
        leaseDurationSeconds: record.leaseDurationSeconds,
        // The API server parses these as RFC 3339 with exactly microseconds.
        acquireTime: new V1MicroTime(record.acquireTime),
        renewTime: new V1MicroTime(record.renewTime),
        leaseTransitions: record.leaseTransitions,
      },
    };
  }

  async create(record: LeaderElectionRecord): Promise<void> {
    await this.api.createNamespacedLease({ namespace: this.namespace, body: this.body(record) });
  }

  async update(record: LeaderElectionRecord, version: string): Promise<void> {
    await this.api.replaceNamespacedLease({
      name: this.name,
      namespace: this.namespace,
      body: this.body(record, version),
    });
  }
}
