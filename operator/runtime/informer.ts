// An informer that stays up. client-node's ListWatch relists by itself on 410 Gone and on
// a client-side timeout, but any other watch error (a restarted API server, a reset
// connection) stops it for good. This wrapper restarts it with jittered exponential
// backoff, relisting so nothing that changed while it was down is missed, and resyncs
// periodically so a level-triggered controller re-reads every object now and then.
import {
  type KubeConfig,
  type KubernetesListObject,
  type KubernetesObject,
  makeInformer,
} from "@kubernetes/client-node";
import { type Clock, realClock } from "./clock.ts";
import { type Logger, silentLogger } from "./log.ts";
import type { OperatorMetrics } from "./metrics.ts";

export interface InformerOptions<T extends KubernetesObject> {
  kc: KubeConfig;
  /** API path, e.g. `/apis/sovereign.ai/v1alpha1/federatedruns`. */
  path: string;
  list: () => Promise<KubernetesListObject<T>>;
  labelSelector?: string;
  /** Called with `namespace/name` (or `name`) on every add, update, delete and resync. */
  onKey: (key: string) => void;
  resyncMs?: number;
  minBackoffMs?: number;
  maxBackoffMs?: number;
  clock?: Clock;
  log?: Logger;
  metrics?: OperatorMetrics;
}

export function objectKey(obj: KubernetesObject): string {
  const ns = obj.metadata?.namespace;
  return ns ? `${ns}/${obj.metadata?.name}` : (obj.metadata?.name ?? "");
}

export class SupervisedInformer<T extends KubernetesObject> {
  private inner?: ReturnType<typeof makeInformer<T>>;
  /** A replacement still listing; stopped too if we stop meanwhile. */
  private starting?: ReturnType<typeof makeInformer<T>>;
  private readonly opts: InformerOptions<T>;
  private readonly clock: Clock;
  private readonly log: Logger;
  private backoffMs: number;
  private stopped = true;
  private synced = false;
  private restartTimer?: unknown;
  private resyncTimer?: unknown;
  private generation = 0;
  restarts = 0;

  constructor(opts: InformerOptions<T>) {
    this.opts = opts;
    this.clock = opts.clock ?? realClock;
    this.log = opts.log ?? silentLogger;
    this.backoffMs = opts.minBackoffMs ?? 500;
  }

  /** True once the first list has been delivered (the cache reflects the server). */
  hasSynced(): boolean {
    return this.synced;
  }

  list(namespace?: string): ReadonlyArray<T> {
    return this.inner?.list(namespace) ?? [];
  }

  get(name: string, namespace?: string): T | undefined {
    return this.inner?.get(name, namespace);
  }

  async start(): Promise<void> {
    this.stopped = false;
    await this.startInner();
    this.scheduleResync();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.generation++;
    if (this.restartTimer) this.clock.clearTimeout(this.restartTimer);
    if (this.resyncTimer) this.clock.clearTimeout(this.resyncTimer);
    await Promise.all([this.inner?.stop(), this.starting?.stop()]);
  }

  private async startInner(): Promise<void> {
    const generation = ++this.generation;
    const informer = makeInformer<T>(this.opts.kc, this.opts.path, this.opts.list, this.opts.labelSelector);
    const emit = (obj: T) => {
      if (generation === this.generation) this.opts.onKey(objectKey(obj));
    };
    informer.on("add", emit);
    informer.on("update", emit);
    informer.on("delete", emit);
    informer.on("connect", () => {
      if (generation !== this.generation) return;
      this.backoffMs = this.opts.minBackoffMs ?? 500;
    });
    informer.on("error", (err) => {
      if (generation !== this.generation || this.stopped) return;
      this.restartLater(err);
    });
    this.starting = informer;
    try {
      await informer.start();
      if (this.stopped || generation !== this.generation) {
        await informer.stop();
        return;
      }
      // Swap only once the new list is in: until then readers keep the previous (complete)
      // cache rather than an empty one that would make a reconcile see nothing.
      const previous = this.inner;
      this.inner = informer;
      if (previous && previous !== informer) void previous.stop();
      this.synced = true;
    } catch (err) {
      this.restartLater(err);
    } finally {
      if (this.starting === informer) this.starting = undefined;
    }
  }

  private restartLater(err: unknown): void {
    if (this.stopped || this.restartTimer) return;
    const reason = (err as { code?: string | number })?.code ?? (err as Error)?.name ?? "unknown";
    this.opts.metrics?.informerRestarts.inc({ resource: this.opts.path, reason: String(reason) });
    const delay = this.backoffMs * (0.5 + Math.random());
    this.backoffMs = Math.min(this.backoffMs * 2, this.opts.maxBackoffMs ?? 30_000);
    this.log.warn("watch failed; restarting the informer with a fresh list", {
      path: this.opts.path,
      err,
      retryInMs: Math.round(delay),
    });
    const known = this.list().map(objectKey);
    this.restartTimer = this.clock.setTimeout(() => {
      this.restartTimer = undefined;
      if (this.stopped) return;
      this.restarts++;
      void this.startInner().then(() => {
        // Level-triggered: look again at everything we knew and everything that is
        // there now, which covers objects deleted or changed while the watch was down.
        for (const key of new Set([...known, ...this.list().map(objectKey)])) this.opts.onKey(key);
      });
    }, delay);
  }

  private scheduleResync(): void {
    const every = this.opts.resyncMs ?? 10 * 60_000;
    if (this.stopped || every <= 0) return;
    this.resyncTimer = this.clock.setTimeout(() => {
      for (const obj of this.list()) this.opts.onKey(objectKey(obj));
      this.scheduleResync();
    }, every);
  }
}
