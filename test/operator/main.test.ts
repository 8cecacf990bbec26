// The operator binary as users run it: flags validated at start, probes and metrics
// served, the Lease taken, and a SIGTERM that ends it cleanly and hands the Lease back.
import { join } from "node:path";
import { CoordinationV1Api } from "@kubernetes/client-node";
import test from "ava";
import { installCrds } from "../../crds/install.ts";
import { testNamespace, uniqueName, useTestbed } from "../testbed/harness.ts";
import { startOperator, waitForLine } from "./operator-process.ts";

/** A hub kept to its own (empty) corner of the shared test hub, with short Lease timings. */
function hubArgs(kubeconfig: string, ns: string, lease: string): string[] {
  return [
    "--mode=hub",
    `--kubeconfig=${kubeconfig}`,
    `--namespace=${ns}`,
    `--watch-namespace=${ns}`,
    `--region-selector=sovereign.ai/test-fleet=${lease}`,
    `--leader-election-id=${lease}`,
    "--metrics-bind-address=127.0.0.1:0",
    "--health-probe-bind-address=127.0.0.1:0",
    "--lease-duration=4s",
    "--renew-deadline=3s",
    "--retry-period=1s",
  ];
}

test("a member registration that tries to accept itself is refused at start", async (t) => {
  const { writeFile, mkdtemp } = await import("node:fs/promises");
  const { tmpdir } = await import("node:os");
  const dir = await mkdtemp(join(tmpdir(), "sovereign-reg-"));
  const file = join(dir, "region.yaml");
  await writeFile(
    file,
    "jurisdiction: DE\naccepted: true\nattestationPolicyRef: {name: strict}\njetStreamDomain: region-a\n",
  );
  const { lines, exited } = startOperator([
    "--mode=member",
    "--region=region-a",
    "--hub-kubeconfig=/nonexistent",
    `--registration=${file}`,
    "--kubeconfig=/nonexistent",
  ]);
  t.is(await exited, 2);
  t.regex(
    lines.join("\n"),
    /--registration: must not set accepted: only a hub administrator accepts a region/,
  );
  await writeFile(file, "jurisdiction: 42\n");
  const second = startOperator([
    "--mode=member",
    "--region=region-a",
    "--hub-kubeconfig=/x",
    `--registration=${file}`,
    "--kubeconfig=/x",
  ]);
  t.is(await second.exited, 2);
  t.regex(second.lines.join("\n"), /--registration: .* is not a valid SovereignNode spec/);
});

test("a bad flag stops the operator at once with the flag and what to do", async (t) => {
  const { lines, exited } = startOperator(["--mode=hub", "--lease-duration=soon"]);
  t.is(await exited, 2);
  t.regex(
    lines.join("\n"),
    /InvalidConfiguration: --lease-duration: "soon" is not a positive duration; write it like 15s/,
  );
});

test("hub mode serves probes and metrics, takes the Lease, and on SIGTERM exits 0 and releases it", async (t) => {
  const tb = await useTestbed();
  const ns = await testNamespace(t, tb, "hub", "op");
  const lease = uniqueName("sovereign-hub");
  await installCrds(tb.kubeConfig("hub"));
  const { child, lines, exited } = startOperator(hubArgs(tb.cluster("hub").kubeconfig, ns, lease));
  t.teardown(() => child.kill("SIGKILL"));
  const serving = JSON.parse(await waitForLine(lines, /serving probes and metrics/)) as {
    metrics: number;
    probes: number;
  };
  await waitForLine(lines, /became leader/);
  t.is((await fetch(`http://127.0.0.1:${serving.probes}/healthz`)).status, 200);
  // Ready once the leader's informer caches have synced.
  const readyDeadline = Date.now() + 15_000;
  let ready = 0;
  while (ready !== 200 && Date.now() < readyDeadline) {
    ready = (await fetch(`http://127.0.0.1:${serving.probes}/readyz`)).status;
    if (ready !== 200) await new Promise((r) => setTimeout(r, 100));
  }
  t.is(ready, 200);
  const metrics = await (await fetch(`http://127.0.0.1:${serving.metrics}/metrics`)).text();
  t.regex(metrics, new RegExp(`leader_election_master_status\\{name="${lease}"\\} 1`));
  t.regex(metrics, /process_resident_memory_bytes/);
  const api = tb.kubeConfig("hub").makeApiClient(CoordinationV1Api);
  const held = await api.readNamespacedLease({ name: lease, namespace: ns });
  t.regex(held.spec?.holderIdentity ?? "", /_\d+$/);
  for (const line of lines) t.notThrows(() => JSON.parse(line), "every log line is JSON");

  const stoppedAt = Date.now();
  child.kill("SIGTERM");
  t.is(await exited, 0);
  t.log(`shutdown took ${Date.now() - stoppedAt} ms`);
  t.true(Date.now() - stoppedAt < 10_000);
  const released = await api.readNamespacedLease({ name: lease, namespace: ns });
  t.is(released.spec?.holderIdentity, "", "the Lease was handed back");
});

test("two hub replicas: one leads; when it is killed the other takes over", async (t) => {
  const tb = await useTestbed();
  const ns = await testNamespace(t, tb, "hub", "ha");
  const lease = uniqueName("sovereign-hub");
  await installCrds(tb.kubeConfig("hub"));
  const args = hubArgs(tb.cluster("hub").kubeconfig, ns, lease);
  const replicas = [startOperator(args), startOperator(args)];
  t.teardown(() => {
    for (const r of replicas) r.child.kill("SIGKILL");
  });
  const leaderIndex = await new Promise<number>((resolve, reject) => {
    const deadline = Date.now() + 20_000;
    const poll = () => {
      const i = replicas.findIndex((r) => r.lines.some((l) => /became leader/.test(l)));
      if (i >= 0) resolve(i);
      else if (Date.now() > deadline) reject(new Error("no replica became leader"));
      else setTimeout(poll, 50);
    };
    poll();
  });
  const leader = replicas[leaderIndex] as ReturnType<typeof startOperator>;
  const standby = replicas[1 - leaderIndex] as ReturnType<typeof startOperator>;
  await new Promise((r) => setTimeout(r, 2_000));
  t.false(
    standby.lines.some((l) => /became leader/.test(l)),
    "only one leads",
  );

  const killedAt = Date.now();
  leader.child.kill("SIGKILL"); // no clean release: the standby must wait the lease out
  await waitForLine(standby.lines, /became leader/, 20_000);
  const failoverMs = Date.now() - killedAt;
  t.log(
    `hub failover after SIGKILL of the leader: ${(failoverMs / 1000).toFixed(1)} s (lease 4 s, retry 1 s)`,
  );
  t.true(failoverMs <= 4_000 + 2 * 1_200 + 2_000);
});
