// Leader election on a real Lease in the testbed's hub apiserver, with real time, and
// the failover figures (a crashed leader; a leader that shut down cleanly).
import { CoordinationV1Api } from "@kubernetes/client-node";
import test from "ava";
import {
  KubernetesLeaseLock,
  type LeaderElectionRecord,
  LeaderElector,
  type LeaseLock,
} from "../../operator/runtime/leaderelection.ts";
import { testNamespace, uniqueName, useTestbed } from "../testbed/harness.ts";

const timing = { leaseDurationMs: 3_000, renewDeadlineMs: 2_000, retryPeriodMs: 500 };

/** A lock whose calls can be made to fail, as if the process had died or lost the network. */
function killable(lock: LeaseLock): { lock: LeaseLock; kill: () => void } {
  let dead = false;
  const guard = async <T>(fn: () => Promise<T>) => {
    if (dead) throw new Error("process is gone");
    return fn();
  };
  return {
    kill: () => {
      dead = true;
    },
    lock: {
      description: lock.description,
      get: () => guard(() => lock.get()),
      create: (r: LeaderElectionRecord) => guard(() => lock.create(r)),
      update: (r: LeaderElectionRecord, v: string) => guard(() => lock.update(r, v)),
    },
  };
}

async function waitFor(cond: () => boolean, timeoutMs: number): Promise<number> {
  const start = performance.now();
  while (!cond()) {
    if (performance.now() - start > timeoutMs) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
  return performance.now() - start;
}

test("two replicas on a real Lease: one leads; a crashed leader is replaced within the lease duration", async (t) => {
  const tb = await useTestbed();
  const ns = await testNamespace(t, tb, "hub", "lease");
  const kc = tb.kubeConfig("hub");
  const name = uniqueName("sovereign-hub");
  const replicas = ["replica-a", "replica-b"].map((id) => {
    const k = killable(new KubernetesLeaseLock(kc, ns, name));
    const abort = new AbortController();
    const elector = new LeaderElector({ ...timing, lock: k.lock, identity: id, onStartedLeading: () => {} });
    return { id, elector, abort, kill: k.kill, done: elector.run(abort.signal) };
  });
  t.teardown(async () => {
    for (const r of replicas) r.abort.abort();
    await Promise.all(replicas.map((r) => r.done));
  });

  await waitFor(() => replicas.some((r) => r.elector.isLeader()), 10_000);
  await new Promise((r) => setTimeout(r, 1_500));
  t.is(replicas.filter((r) => r.elector.isLeader()).length, 1, "exactly one leader");
  const leader = replicas.find((r) => r.elector.isLeader()) as (typeof replicas)[number];
  const follower = replicas.find((r) => r !== leader) as (typeof replicas)[number];

  const lease = await kc.makeApiClient(CoordinationV1Api).readNamespacedLease({ name, namespace: ns });
  t.is(lease.spec?.holderIdentity, leader.id);
  t.is(lease.spec?.leaseDurationSeconds, 3);

  leader.kill(); // no release: the successor must wait the lease out
  const failoverMs = await waitFor(() => follower.elector.isLeader(), 10_000);
  t.log(`failover after a crash: ${(failoverMs / 1000).toFixed(2)} s (leaseDuration 3 s, retryPeriod 0.5 s)`);
  t.true(failoverMs >= 2_000, "not before the lease could have expired");
  t.true(failoverMs <= 3_000 + 2 * 600 + 1_000);
  await waitFor(() => !leader.elector.isLeader(), 3_000);
  const after = await kc.makeApiClient(CoordinationV1Api).readNamespacedLease({ name, namespace: ns });
  t.is(after.spec?.holderIdentity, follower.id);
  t.is(after.spec?.leaseTransitions, 1);
});

test("a replica that shuts down cleanly hands over within one retry period", async (t) => {
  const tb = await useTestbed();
  const ns = await testNamespace(t, tb, "hub", "lease");
  const kc = tb.kubeConfig("hub");
  const name = uniqueName("sovereign-hub");
  const replicas = ["replica-a", "replica-b"].map((id) => {
    const abort = new AbortController();
    const elector = new LeaderElector({
      ...timing,
      lock: new KubernetesLeaseLock(kc, ns, name),
      identity: id,
      onStartedLeading: () => {},
    });
    return { id, elector, abort, done: elector.run(abort.signal) };
  });
  t.teardown(async () => {
    for (const r of replicas) r.abort.abort();
    await Promise.all(replicas.map((r) => r.done));
  });
  await waitFor(() => replicas.some((r) => r.elector.isLeader()), 10_000);
  const leader = replicas.find((r) => r.elector.isLeader()) as (typeof replicas)[number];
  const follower = replicas.find((r) => r !== leader) as (typeof replicas)[number];
  leader.abort.abort();
  await leader.done;
  const handoverMs = await waitFor(() => follower.elector.isLeader(), 5_000);
  t.log(`hand-over after a clean shutdown: ${(handoverMs / 1000).toFixed(2)} s`);
  t.true(handoverMs <= 600 + 500);
});
