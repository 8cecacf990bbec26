import test from "ava";
import fc from "fast-check";
import { FakeClock } from "../../operator/runtime/clock.ts";
import {
  BucketRateLimiter,
  ItemExponentialRateLimiter,
  MaxOfRateLimiter,
} from "../../operator/runtime/ratelimiter.ts";
import { WorkQueue } from "../../operator/runtime/workqueue.ts";

test("a key added many times is queued once", async (t) => {
  const q = new WorkQueue<string>({ clock: new FakeClock() });
  q.add("a");
  q.add("a");
  q.add("b");
  q.add("a");
  t.is(q.length, 2);
  t.is(await q.get(), "a");
  t.is(await q.get(), "b");
  t.is(q.length, 0);
});

test("a key being processed is not handed out again until done, then it is re-queued once", async (t) => {
  const q = new WorkQueue<string>({ clock: new FakeClock() });
  q.add("run-1");
  const key = await q.get();
  t.is(key, "run-1");
  q.add("run-1");
  q.add("run-1");
  t.is(q.length, 0, "not queued while a worker holds it");
  let second: string | undefined;
  void q.get().then((k) => {
    second = k;
  });
  await Promise.resolve();
  t.is(second, undefined);
  q.done("run-1");
  await Promise.resolve();
  t.is(second, "run-1", "handed out again after done");
  q.done("run-1");
  t.is(q.length, 0);
});

test("addAfter fires on the clock, and the earliest pending time wins", async (t) => {
  const clock = new FakeClock();
  const q = new WorkQueue<string>({ clock });
  q.addAfter("k", 1000);
  q.addAfter("k", 5000);
  clock.advance(999);
  t.is(q.length, 0);
  clock.advance(1);
  t.is(q.length, 1);
  clock.advance(10_000);
  t.is(q.length, 1, "the later request did not add it a second time");
});

test("rate-limited retries back off exponentially per key, and forget resets", (t) => {
  const clock = new FakeClock();
  const limiter = new ItemExponentialRateLimiter<string>(5, 1000);
  const delays = [0, 1, 2, 3, 4, 5, 6, 7, 8].map(() => limiter.when("x"));
  t.deepEqual(delays, [5, 10, 20, 40, 80, 160, 320, 640, 1000]);
  t.is(limiter.numRequeues("x"), 9);
  t.is(limiter.when("y"), 5, "other keys are independent");
  limiter.forget("x");
  t.is(limiter.when("x"), 5);
  for (let i = 0; i < 2000; i++) limiter.when("z");
  t.is(limiter.when("z"), 1000, "no overflow past the cap");

  const q = new WorkQueue<string>({
    clock,
    rateLimiter: new ItemExponentialRateLimiter<string>(100, 10_000),
  });
  q.addRateLimited("k");
  clock.advance(99);
  t.is(q.length, 0);
  clock.advance(1);
  t.is(q.length, 1);
});

test("the token bucket allows a burst then paces at qps; the combined limiter takes the larger", (t) => {
  const clock = new FakeClock();
  const bucket = new BucketRateLimiter<string>(10, 3, () => clock.now());
  t.deepEqual([bucket.when("a"), bucket.when("b"), bucket.when("c")], [0, 0, 0]);
  t.is(bucket.when("d"), 100);
  clock.advance(1000);
  t.is(bucket.when("e"), 0, "refilled");
  const both = new MaxOfRateLimiter<string>(new ItemExponentialRateLimiter<string>(5, 1000), bucket);
  t.true(both.when("f") >= 5);
});

test("shutdown releases waiting workers and drops pending delayed adds", async (t) => {
  const clock = new FakeClock();
  const q = new WorkQueue<string>({ clock });
  const waiting = q.get();
  q.addAfter("late", 100);
  q.shutdown();
  t.is(await waiting, undefined);
  t.is(clock.pendingTimers(), 0);
  q.add("after-shutdown");
  t.is(await q.get(), undefined);
});

test("observer sees adds, retries, depth and durations", async (t) => {
  const clock = new FakeClock();
  const seen = { adds: 0, retries: 0, depth: [] as number[], queued: [] as number[], worked: [] as number[] };
  const q = new WorkQueue<string>({
    clock,
    observer: {
      add: () => seen.adds++,
      retry: () => seen.retries++,
      depth: (n) => seen.depth.push(n),
      queued: (s) => seen.queued.push(s),
      worked: (s) => seen.worked.push(s),
    },
  });
  q.add("a");
  clock.advance(2000);
  const k = (await q.get()) as string;
  clock.advance(500);
  q.done(k);
  q.addRateLimited("a");
  t.is(seen.adds, 1);
  t.is(seen.retries, 1);
  t.deepEqual(seen.queued, [2]);
  t.deepEqual(seen.worked, [0.5]);
  t.deepEqual(seen.depth, [1, 0]);
});

test("property: under any interleaving, no key is held by two workers and every added key is processed", async (t) => {
  const op = fc.oneof(
    fc.record({ kind: fc.constant("add" as const), key: fc.constantFrom("a", "b", "c") }),
    fc.record({ kind: fc.constant("take" as const) }),
    fc.record({ kind: fc.constant("done" as const), index: fc.nat(3) }),
  );
  await fc.assert(
    fc.asyncProperty(fc.array(op, { maxLength: 60 }), async (ops) => {
      const q = new WorkQueue<string>({ clock: new FakeClock() });
      const held: string[] = [];
      const pendingSinceLastTake = new Set<string>();
      for (const o of ops) {
        if (o.kind === "add") {
          q.add(o.key);
          pendingSinceLastTake.add(o.key);
        } else if (o.kind === "take") {
          if (q.length === 0) continue;
          const k = (await q.get()) as string;
          if (held.includes(k)) return false; // same key handed to two workers
          held.push(k);
          pendingSinceLastTake.delete(k);
        } else if (held.length > 0) {
          const [k] = held.splice(o.index % held.length, 1);
          q.done(k as string);
        }
      }
      // Drain: finish everything held, then everything queued; nothing added is lost.
      for (const k of held.splice(0)) q.done(k);
      while (q.length > 0) {
        const k = (await q.get()) as string;
        pendingSinceLastTake.delete(k);
        q.done(k);
      }
      return pendingSinceLastTake.size === 0;
    }),
    { numRuns: 300 },
  );
  t.pass();
});
