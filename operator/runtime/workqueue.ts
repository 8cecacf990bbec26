// A work queue with client-go's contract: a key is queued at most once however often it
// is added; a key being processed is never handed to a second worker, and if it was
// added meanwhile it is queued again when the first worker calls done(). Delayed and
// rate-limited adds go through timers, so a failing key backs off on its own.
import { type Clock, realClock } from "./clock.ts";
import { defaultControllerRateLimiter, type RateLimiter } from "./ratelimiter.ts";

/** What the queue reports, so metrics stay outside it (see metrics.ts). */
export interface QueueObserver {
  add?(): void;
  retry?(): void;
  depth?(n: number): void;
  /** Seconds a key waited in the queue before a worker took it. */
  queued?(seconds: number): void;
  /** Seconds a worker held a key. */
  worked?(seconds: number): void;
}

export class WorkQueue<K = string> {
  private readonly queue: K[] = [];
  private readonly dirty = new Set<K>();
  private readonly processing = new Map<K, number>();
  private readonly addedAt = new Map<K, number>();
  private readonly waiting = new Map<K, { at: number; handle: unknown }>();
  private readonly getters: ((key: K | undefined) => void)[] = [];
  private shuttingDown = false;
  private readonly clock: Clock;
  private readonly rateLimiter: RateLimiter<K>;
  private readonly observer: QueueObserver;

  constructor(opts: { clock?: Clock; rateLimiter?: RateLimiter<K>; observer?: QueueObserver } = {}) {
    this.clock = opts.clock ?? realClock;
    this.rateLimiter = opts.rateLimiter ?? defaultControllerRateLimiter<K>(() => this.clock.now());
    this.observer = opts.observer ?? {};
  }

  add(key: K): void {
    if (this.shuttingDown || this.dirty.has(key)) return;
    this.observer.add?.();
    this.dirty.add(key);
    this.addedAt.set(key, this.clock.now());
    if (this.processing.has(key)) return; // re-queued by done()
    this.push(key);
  }

  /** Adds the key after `ms`; an earlier pending time for the same key wins. */
  addAfter(key: K, ms: number): void {
    if (this.shuttingDown) return;
    if (ms <= 0) {
      this.add(key);
      return;
    }
    const at = this.clock.now() + ms;
    const pending = this.waiting.get(key);
    if (pending && pending.at <= at) return;
    if (pending) this.clock.clearTimeout(pending.handle);
    const handle = this.clock.setTimeout(() => {
      this.waiting.delete(key);
      this.add(key);
    }, ms);
    this.waiting.set(key, { at, handle });
  }

  addRateLimited(key: K): void {
    this.observer.retry?.();
    this.addAfter(key, this.rateLimiter.when(key));
  }

  /** The key succeeded: its backoff starts over next time it fails. */
  forget(key: K): void {
    this.rateLimiter.forget(key);
  }

  numRequeues(key: K): number {
    return this.rateLimiter.numRequeues(key);
  }

  /** The next key to work on, or `undefined` once the queue shuts down. */
  get(): Promise<K | undefined> {
    const key = this.take();
    if (key !== undefined || this.shuttingDown) return Promise.resolve(key);
    return new Promise((resolve) => this.getters.push(resolve));
  }

  done(key: K): void {
    const started = this.processing.get(key);
    if (started !== undefined) this.observer.worked?.((this.clock.now() - started) / 1000);
    this.processing.delete(key);
    if (this.dirty.has(key)) this.push(key);
  }

  get length(): number {
    return this.queue.length;
  }

  isProcessing(key: K): boolean {
    return this.processing.has(key);
  }

  /** Stops handing out keys; workers waiting in get() receive `undefined`. */
  shutdown(): void {
    this.shuttingDown = true;
    for (const { handle } of this.waiting.values()) this.clock.clearTimeout(handle);
    this.waiting.clear();
    for (const g of this.getters.splice(0)) g(undefined);
  }

  private push(key: K): void {
    const getter = this.getters.shift();
    if (getter) {
      getter(this.claim(key));
      return;
    }
    this.queue.push(key);
    this.observer.depth?.(this.queue.length);
  }

  private take(): K | undefined {
    const key = this.queue.shift();
    if (key === undefined) return undefined;
    this.observer.depth?.(this.queue.length);
    return this.claim(key);
  }

  private claim(key: K): K {
    this.dirty.delete(key);
    this.processing.set(key, this.clock.now());
    const added = this.addedAt.get(key);
    if (added !== undefined) this.observer.queued?.((this.clock.now() - added) / 1000);
    this.addedAt.delete(key);
    return key;
  }
}
