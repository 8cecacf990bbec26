import test from "ava";
import { FakeClock } from "../../operator/runtime/clock.ts";
import {
  type LeaderElectionRecord,
  LeaderElector,
  type LeaseLock,
} from "../../operator/runtime/leaderelection.ts";

/** An in-memory Lease with resourceVersion semantics; `partitioned` makes one client's calls fail. */
class MemoryLease {
  record?: LeaderElectionRecord;
  version = 0;
  writes = 0;

  client(name: string, partitioned: Set<string>): LeaseLock {
    const check = () => {
      if (partitioned.has(name)) throw new Error(`${name}: connection refused`);
    };
    return {
      description: "memory/lease",
      get: async () => {
        check();
        return this.record ? { record: { ...this.record }, version: String(this.version) } : undefined;
      },
      create: async (r) => {
        check();
        if (this.record) throw new Error("AlreadyExists");
        this.record = { ...r };
        this.version++;
        this.writes++;
      },
      update: async (r, v) => {
        check();
        if (v !== String(this.version)) throw new Error("Conflict");
        this.record = { ...r };
        this.version++;
        this.writes++;
      },
    };
  }
}

/** Advances fake time in small steps, letting the electors' promises run in between. */
async function run(clock: FakeClock, ms: number, each?: () => void): Promise<void> {
  for (let t = 0; t < ms; t += 50) {
    clock.advance(50);
    for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
    each?.();
  }
}

function candidates(n: number) {
  const clock = new FakeClock();
  const lease = new MemoryLease();
  const partitioned = new Set<string>();
  const events: string[] = [];
  const electors = Array.from({ length: n }, (_, i) => {
    const id = `replica-${i}`;
    return new LeaderElector({
      lock: lease.client(id, partitioned),
      identity: id,
      leaseDurationMs: 15_000,
      renewDeadlineMs: 10_000,
      retryPeriodMs: 2_000,
      clock,
      onStartedLeading: () => events.push(`${id} started`),
      onStoppedLeading: () => events.push(`${id} stopped`),
    });
  });
  return { clock, lease, partitioned, events, electors };
}

test("exactly one of several candidates leads, and it keeps renewing", async (t) => {
  const { clock, lease, electors, events } = candidates(3);
  const abort = new AbortController();
  const done = electors.map((e) => e.run(abort.signal));
  await run(clock, 60_000, () => t.true(electors.filter((e) => e.isLeader()).length <= 1));
  t.is(electors.filter((e) => e.isLeader()).length, 1);
  t.is(events.length, 1);
  t.true(lease.writes >= 25, "renewed about every retry period");
  abort.abort();
  await run(clock, 1000);
  await Promise.all(done);
});

test("a leader cut off from the API server stops leading before anyone else starts", async (t) => {
  const { clock, lease, partitioned, electors, events } = candidates(2);
  const abort = new AbortController();
  const done = electors.map((e) => e.run(abort.signal));
  await run(clock, 5_000);
  const leader = electors.findIndex((e) => e.isLeader());
  t.not(leader, -1);
  const other = electors[1 - leader] as LeaderElector;
  partitioned.add(`replica-${leader}`);
  const cutAt = clock.now();
  let leaderStoppedAt = 0;
  let otherStartedAt = 0;
  await run(clock, 40_000, () => {
    if (!leaderStoppedAt && !electors[leader]?.isLeader()) leaderStoppedAt = clock.now();
    if (!otherStartedAt && other.isLeader()) otherStartedAt = clock.now();
    t.false(electors[leader]?.isLeader() && other.isLeader(), "never two leaders at once");
  });
  t.true(leaderStoppedAt > 0 && otherStartedAt > 0);
  t.true(leaderStoppedAt - cutAt <= 10_000 + 2_500, "old leader gives up within renewDeadline");
  t.true(otherStartedAt > leaderStoppedAt, "successor starts after the old leader stopped");
  t.true(
    otherStartedAt - cutAt <= 15_000 + 2 * 2_400 + 100,
    "successor takes over within leaseDuration + retry",
  );
  t.is(lease.record?.holderIdentity, `replica-${1 - leader}`);
  t.is(lease.record?.leaseTransitions, 1);
  t.deepEqual(events.slice(-2), [`replica-${leader} stopped`, `replica-${1 - leader} started`]);
  abort.abort();
  await run(clock, 1000);
  await Promise.all(done);
});

test("a leader that shuts down cleanly releases the lease and the successor takes it at once", async (t) => {
  const { clock, lease, electors } = candidates(2);
  const aborts = electors.map(() => new AbortController());
  const done = electors.map((e, i) => e.run((aborts[i] as AbortController).signal));
  await run(clock, 3_000);
  const leader = electors.findIndex((e) => e.isLeader());
  aborts[leader]?.abort();
  await run(clock, 50);
  await done[leader];
  t.is(lease.record?.holderIdentity, "", "released");
  const releasedAt = clock.now();
  let takeover = 0;
  await run(clock, 20_000, () => {
    if (!takeover && electors[1 - leader]?.isLeader()) takeover = clock.now();
  });
  t.true(takeover > 0 && takeover - releasedAt <= 2_400 + 100, "within one retry period");
  for (const a of aborts) a.abort();
  await run(clock, 1000);
  await Promise.all(done);
});

test("a stale write loses: two candidates cannot both take a free lease", async (t) => {
  const lease = new MemoryLease();
  const none = new Set<string>();
  lease.record = {
    holderIdentity: "",
    leaseDurationSeconds: 1,
    acquireTime: 0,
    renewTime: 0,
    leaseTransitions: 3,
  };
  const clock = new FakeClock();
  const mk = (id: string) =>
    new LeaderElector({ lock: lease.client(id, none), identity: id, clock, onStartedLeading: () => {} });
  const [a, b] = [mk("a"), mk("b")];
  const results = await Promise.all([a.tryAcquireOrRenew(), b.tryAcquireOrRenew()]);
  t.deepEqual(results.sort(), [false, true], "exactly one wins the conflict");
  t.is(lease.record?.leaseTransitions, 4);
});

test("timing parameters that would let a leader outlive its lease are refused", (t) => {
  const base = { lock: new MemoryLease().client("x", new Set()), identity: "x", onStartedLeading: () => {} };
  t.throws(() => new LeaderElector({ ...base, leaseDurationMs: 10_000, renewDeadlineMs: 10_000 }), {
    message: /leaseDuration must be greater than renewDeadline/,
  });
  t.throws(() => new LeaderElector({ ...base, renewDeadlineMs: 2_000, retryPeriodMs: 2_000 }), {
    message: /renewDeadline must be greater than retryPeriod/,
  });
  t.throws(() => new LeaderElector({ ...base, identity: "" }), { message: /non-empty identity/ });
});
