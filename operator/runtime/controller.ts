// A controller: keys in, reconcile out. Informer callbacks only enqueue keys; workers
// take keys from the queue and call a level-triggered reconcile that reads the world
// afresh. A thrown error retries the key with per-key backoff; a TerminalError is
// reported and counted but not retried (the object must change first); a result with
// requeueAfterMs schedules the next look, e.g. for time-driven work like round deadlines.
import type { Clock } from "./clock.ts";
import { realClock } from "./clock.ts";
import { type Logger, silentLogger } from "./log.ts";
import type { OperatorMetrics } from "./metrics.ts";
import { WorkQueue } from "./workqueue.ts";

export interface ReconcileResult {
  requeueAfterMs?: number;
}

export type Reconcile = (key: string) => Promise<ReconcileResult | undefined>;

/** An error retrying cannot fix; the reconciler has already reported it on the object. */
export class TerminalError extends Error {
  override name = "TerminalError";
  readonly reason: string;

  constructor(reason: string, message: string, options?: { cause?: unknown }) {
    super(`${reason}: ${message}`, options);
    this.reason = reason;
  }
}

export interface ControllerOptions {
  name: string;
  reconcile: Reconcile;
  workers?: number;
  metrics?: OperatorMetrics;
  log?: Logger;
  clock?: Clock;
}

export class Controller {
  readonly name: string;
  readonly queue: WorkQueue<string>;
  private readonly reconcile: Reconcile;
  private readonly workers: number;
  private readonly metrics?: OperatorMetrics;
  private readonly log: Logger;
  private readonly clock: Clock;
  private active = 0;

  constructor(opts: ControllerOptions) {
    this.name = opts.name;
    this.reconcile = opts.reconcile;
    this.workers = opts.workers ?? 2;
    this.metrics = opts.metrics;
    this.log = opts.log ?? silentLogger;
    this.clock = opts.clock ?? realClock;
    this.queue = new WorkQueue<string>({
      clock: this.clock,
      observer: opts.metrics?.queueObserver(opts.name),
    });
    this.metrics?.maxConcurrentReconciles.set({ controller: this.name }, this.workers);
  }

  enqueue(key: string): void {
    this.queue.add(key);
  }

  /** Runs the workers until `signal` aborts, then lets in-flight reconciles finish. */
  async run(signal: AbortSignal): Promise<void> {
    const stop = () => this.queue.shutdown();
    if (signal.aborted) stop();
    signal.addEventListener("abort", stop, { once: true });
    await Promise.all(Array.from({ length: this.workers }, () => this.worker()));
  }

  private async worker(): Promise<void> {
    for (;;) {
      const key = await this.queue.get();
      if (key === undefined) return;
      try {
        await this.processKey(key);
      } finally {
        this.queue.done(key);
      }
    }
  }

  private async processKey(key: string): Promise<void> {
    const labels = { controller: this.name };
    const started = this.clock.now();
    this.active++;
    this.metrics?.activeWorkers.set(labels, this.active);
    try {
      const result = await this.reconcile(key);
      if (result?.requeueAfterMs !== undefined && result.requeueAfterMs > 0) {
        this.queue.forget(key);
        this.queue.addAfter(key, result.requeueAfterMs);
        this.metrics?.reconcileTotal.inc({ ...labels, result: "requeue_after" });
      } else {
        this.queue.forget(key);
        this.metrics?.reconcileTotal.inc({ ...labels, result: "success" });
      }
    } catch (err) {
      this.metrics?.reconcileErrors.inc(labels);
      this.metrics?.reconcileTotal.inc({ ...labels, result: "error" });
      if (err instanceof TerminalError) {
        this.metrics?.terminalReconcileErrors.inc(labels);
        this.queue.forget(key);
        this.log.error("reconcile failed for good; waiting for the object to change", { key, err });
      } else {
        this.queue.addRateLimited(key);
        this.log.warn("reconcile failed; retrying with backoff", {
          key,
          attempt: this.queue.numRequeues(key),
          err,
        });
      }
    } finally {
      this.active--;
      this.metrics?.activeWorkers.set(labels, this.active);
      this.metrics?.reconcileTime.observe(labels, (this.clock.now() - started) / 1000);
    }
  }
}
