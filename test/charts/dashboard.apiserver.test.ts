// The Grafana dashboard against a real Prometheus (Debian's package) scraping a real hub and a
// real member, each under its Manager with its /metrics endpoint, on the testbed: a short run
// of three rounds (a tampered delta refused, a region quarantined, a run naming a missing
// policy), a member whose attestation gate admits a learner on one GPU node and quarantines the
// other, and at the end the member's hub credential revoked so its controllers fail. Then every
// query of every panel, as Grafana would send it, must return data, and every metric it names
// must be one the operator exports. SOVEREIGN_RENDER_DASHBOARD=1 also writes the PNG of the
// main panels, drawn from the same query results, to docs/images/dashboard.png.
import { readFileSync } from "node:fs";
import { copyFile, mkdtemp, readFile, rm } from "node:fs/promises";
import { connect, createServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  CoreV1Api,
  KubeConfig,
  PatchStrategy,
  setHeaderOptions,
  type V1Node,
  type V1Pod,
} from "@kubernetes/client-node";
import test from "ava";
import { parse } from "yaml";
import { ed25519CheckpointSigner, MemoryAuditStore } from "../../attestation/audit/mod.ts";
import { TESTBED_POLICY_SPEC, testbedTrustAnchors } from "../../attestation/testbed/mod.ts";
import type { FederatedRun, RegionWork } from "../../crds/types.generated.ts";
import { collectBytes } from "../../deltas/mod.ts";
import { parseConfig } from "../../operator/config.ts";
import { issueRegionCredential, revokeRegionAccess } from "../../operator/hub/credentials.ts";
import { regionNamespace } from "../../operator/hub/region-access.ts";
import { hubControllers } from "../../operator/hub/setup.ts";
import { Manager } from "../../operator/manager.ts";
import { NODE_ANNOTATIONS } from "../../operator/member/attestation-rules.ts";
import { TestbedEvidenceSource } from "../../operator/member/attestation-testbed-source.ts";
import { ATTESTED_LABEL } from "../../operator/member/registration.ts";
import { memberControllers } from "../../operator/member/setup.ts";
import {
  ATTESTATION_GATE,
  LEARNER_NAMESPACE,
  WORK_LABEL,
  workId,
} from "../../operator/member/work-controller.ts";
import { silentLogger } from "../../operator/runtime/log.ts";
import { OperatorMetrics } from "../../operator/runtime/metrics.ts";
import { fetchGlobalModel } from "../../transport/mod.ts";
import { RunBuilder } from "../operator/builders.ts";
import { federation, GROUP } from "../operator/federation.ts";
import { eventually, holdGpuNodeLabels, uniqueName } from "../testbed/harness.ts";
import { repoRoot } from "../testbed/topology.ts";
import { renderDashboard } from "./dashboard-render.ts";
import { CHART } from "./helm.ts";
import {
  checkDashboard,
  freePort,
  metricName,
  PROMETHEUS,
  PROMETHEUS_INSTALL,
  problem,
  prometheusInstalled,
  type QueryCheck,
  startPrometheus,
} from "./prometheus.ts";

const DASHBOARD = join(CHART, "dashboards", "sovereign-operator.json");
const merge = setHeaderOptions("Content-Type", PatchStrategy.MergePatch);
const SCRAPE_SECONDS = 1;
/**
 * Grafana's $__rate_interval is max(4 × scrape interval, $__interval + scrape interval); 10 s
 * is what it would pick for a 1 s scrape on a panel showing a few minutes at 200 points.
 */
const VARS = { job: ".+", __rate_interval: "10s", __interval: "2s", __range: "5m", datasource: "prometheus" };
/** Attesting a node verifies 8 GPUs (seconds of CPU); the machine is shared. */
const SLOW = 90_000;

/**
 * Metrics the operator exports (for dashboards built for controller-runtime) that no code path
 * raises yet, so no run can give them samples. Only their being declared is checked.
 */
const NEVER_RAISED = new Map([
  [
    "controller_runtime_terminal_reconcile_errors_total",
    "no controller throws a TerminalError yet (operator/runtime/controller.ts only defines it)",
  ],
]);

/** Why a query that shows nothing is expected to, or undefined. */
function excuse(c: QueryCheck): string | undefined {
  if (c.error || c.unknownMetrics.length || c.emptySelectors.length === 0) return undefined;
  const names = c.emptySelectors.map(metricName);
  return names.every((n) => NEVER_RAISED.has(n)) ? NEVER_RAISED.get(names[0] ?? "") : undefined;
}

/** What is wrong with a query's result that no excuse covers. */
function unexplained(c: QueryCheck): string | undefined {
  return excuse(c) ? undefined : problem(c);
}

const available = prometheusInstalled();
if (!available) {
  console.warn(`dashboard test skipped: ${PROMETHEUS} is absent; install it with \`${PROMETHEUS_INSTALL}\``);
}
const serial = available ? test.serial : test.serial.skip;

serial(
  "every panel of the dashboard shows data from a real Prometheus scraping a hub and a member during a short run",
  async (t) => {
    t.timeout(8 * 60_000);
    const started = Date.now();
    const debug = (what: string) => {
      if (process.env.DEBUG_DASHBOARD)
        console.error(`${((Date.now() - started) / 1000).toFixed(1)} s: ${what}`);
    };
    const fx = await federation(t);
    const { custom, ns, regions, hubNc, admin, tb } = fx;
    await holdGpuNodeLabels(t);
    const hubPort = await freePort();
    const memberPort = await freePort();
    const base = parseConfig(["--mode=hub"], {});
    const stops: (() => Promise<void>)[] = [];
    t.teardown(async () => {
      for (const stop of stops.reverse()) await stop().catch(() => undefined);
    });

    // The hub under its Manager: leader election on a Lease of its own, /metrics on hubPort.
    const hubParts = hubControllers(fx.hubOptions());
    const hubAbort = new AbortController();
    const hubRunning = new Manager({
      config: {
        ...base,
        namespace: ns,
        leaderElect: true,
        leaderElectionId: uniqueName("hub-lease"),
        metricsBindAddress: { host: "127.0.0.1", port: hubPort },
        healthProbeBindAddress: { host: "127.0.0.1", port: hubPort },
      },
      kc: admin,
      metrics: fx.metrics,
      log: silentLogger,
      identity: "hub-0",
      informers: hubParts.informers,
      controllers: hubParts.controllers,
    }).run(hubAbort.signal);
    stops.push(async () => {
      hubAbort.abort();
      await hubRunning;
    });

    // A member of a region of its own (not one of the fixture's), with the attestation gate on
    // the last region cluster's two GPU nodes: A answers, B's evidence has a bad measurement.
    const cluster = tb.regions.at(-1) as string;
    const regionKc = tb.kubeConfig(cluster);
    const core = regionKc.makeApiClient(CoreV1Api);
    const [nodeA, nodeB] = tb
      .cluster(cluster)
      .nodes.filter((n) => n.gpus > 0)
      .map((n) => n.name) as [string, string];
    const region = uniqueName("dash");
    const fleetLabel = "sovereign.ai/test-dashboard";
    const original = new Map<string, V1Node>();
    for (const n of [nodeA, nodeB]) original.set(n, await core.readNode({ name: n }));
    const restoreNodes = async () => {
      for (const [name, node] of original) {
        const labels = {
          [ATTESTED_LABEL]: node.metadata?.labels?.[ATTESTED_LABEL] ?? null,
          [fleetLabel]: null,
        };
        const annotations = Object.fromEntries(
          Object.values(NODE_ANNOTATIONS).map((k) => [k, node.metadata?.annotations?.[k] ?? null]),
        );
        await core
          .patchNode({ name, body: { metadata: { labels, annotations } } }, merge)
          .catch(() => undefined);
      }
    };
    stops.unshift(restoreNodes); // after the member has stopped
    for (const n of [nodeA, nodeB])
      await core.patchNode({ name: n, body: { metadata: { labels: { [fleetLabel]: region } } } }, merge);
    // The member reaches the hub's API server through a proxy the test can cut, as a network
    // failure would: its watch of the hub then fails and its informer restarts.
    const hubServer = new URL(admin.getCurrentCluster()?.server ?? "");
    const link = await cuttableLink({ host: hubServer.hostname, port: Number(hubServer.port) });
    stops.push(() => link.close());
    const cred = await issueRegionCredential(admin, region, {
      ttlSeconds: 3600,
      hubServer: `https://${hubServer.hostname}:${link.port}`,
    });
    const hubKc = new KubeConfig();
    hubKc.loadFromString(cred.kubeconfig);
    const source = new TestbedEvidenceSource();
    source.setFault(nodeB, "measurement-mismatch");
    const memberMetrics = new OperatorMetrics({ defaultMetrics: false });
    const memberPolicy = uniqueName("policy");
    const memberParts = memberControllers({
      region,
      regionKc,
      hubKc,
      metrics: memberMetrics,
      log: silentLogger,
      heartbeatIntervalMs: 1_000,
      registration: {
        jurisdiction: "DE",
        attestationPolicyRef: { name: memberPolicy },
        dataResidency: {
          allowedEgress: ["ModelDeltas"],
          acceptAggregates: true,
          checkpointLocation: "InRegion",
        },
        jetStreamDomain: cluster,
      },
      attestation: {
        policy: { name: memberPolicy, generation: 1, spec: TESTBED_POLICY_SPEC },
        anchors: testbedTrustAnchors(),
        source,
        nodeSelector: `nvidia.com/gpu.present=true,${fleetLabel}=${region}`,
      },
      audit: { store: new MemoryAuditStore(), signer: ed25519CheckpointSigner(fx.auditKey) },
    });
    const workName = "train";
    const id = workId(workName);
    const memberAbort = new AbortController();
    const memberRunning = new Manager({
      config: {
        ...base,
        mode: "member",
        region,
        leaderElect: false,
        metricsBindAddress: { host: "127.0.0.1", port: memberPort },
        healthProbeBindAddress: { host: "127.0.0.1", port: memberPort },
      },
      kc: regionKc,
      metrics: memberMetrics,
      log: silentLogger,
      identity: "member-0",
      informers: memberParts.informers,
      controllers: memberParts.controllers,
    }).run(memberAbort.signal);
    stops.push(async () => {
      memberAbort.abort();
      await memberRunning;
      await core
        .deleteCollectionNamespacedPod({ namespace: LEARNER_NAMESPACE, labelSelector: `${WORK_LABEL}=${id}` })
        .catch(() => undefined);
      await core
        .deleteCollectionNamespacedSecret({
          namespace: LEARNER_NAMESPACE,
          labelSelector: `${WORK_LABEL}=${id}`,
        })
        .catch(() => undefined);
      await custom
        .deleteClusterCustomObject({ ...GROUP, plural: "sovereignnodes", name: region })
        .catch(() => undefined);
      await revokeRegionAccess(admin, region).catch(() => undefined);
    });

    // Prometheus scrapes both, as the chart's ServiceMonitor would: one job per operator.
    const prom = await startPrometheus({
      scrapeIntervalSeconds: SCRAPE_SECONDS,
      targets: [
        { job: "sovereign-hub", address: `127.0.0.1:${hubPort}` },
        { job: "sovereign-member", address: `127.0.0.1:${memberPort}` },
      ],
    });
    stops.push(() => prom.stop());
    await eventually(async () => {
      const targets = await prom.targets();
      return targets.length === 2 && targets.every((x) => x.health === "up") ? targets : undefined;
    }, "Prometheus scraping the hub and the member");
    const start = Math.floor(Date.now() / 1000) - 2;
    debug("prometheus scraping");

    // The member's work: one learner of 5 GPUs, admitted once node A attests.
    const work = parse(readFileSync(join(repoRoot, "examples", "regionwork.yaml"), "utf8")) as RegionWork;
    work.metadata = { name: workName, namespace: regionNamespace(region) };
    work.spec.region = region;
    work.spec.nats = { subjectPrefix: `sovereign.${region}.t.train`, jetStreamDomain: cluster };
    work.spec.attestation = { policyRef: { name: memberPolicy } };
    work.spec.workload.learnersPerRegion = 1;
    work.spec.workload.resources = { limits: { "nvidia.com/gpu": 5 } };
    await custom.createNamespacedCustomObject({
      ...GROUP,
      plural: "regionworks",
      namespace: regionNamespace(region),
      body: work,
    });

    // Both nodes challenged now rather than at the member's next periodic pass.
    for (const n of [nodeA, nodeB])
      await core.patchNode(
        { name: n, body: { metadata: { annotations: { [NODE_ANNOTATIONS.reattest]: uniqueName("now") } } } },
        merge,
      );

    // A run that names a policy nobody created: an invalid object the hub counts.
    const orphan = new RunBuilder(uniqueName("nopolicy"), ns).obj() as FederatedRun;
    orphan.spec.attestation = { policyRef: { name: uniqueName("missing") } };
    await custom.createNamespacedCustomObject({
      ...GROUP,
      plural: "federatedruns",
      namespace: ns,
      body: orphan,
    });

    // The run: three regions, three rounds.
    const { runName } = await fx.startRun(t, "dash", {
      minRegions: 3,
      rounds: 3,
      seed: 7,
      quorum: { minRegions: 2, graceWindowSeconds: 2, maxRoundSeconds: 120, lateDeltas: "Discard" },
    });
    const publish = fx.publisher(runName);
    const [a, b, c] = regions as [(typeof regions)[0], (typeof regions)[0], (typeof regions)[0]];
    const roundOpen = (round: number) =>
      eventually(
        async () => ((await fx.getRun(runName)).status?.roundProgress?.round === round ? true : undefined),
        `round ${round} open`,
        SLOW,
      );
    const digestOf = async (round: number) => {
      const m = await fetchGlobalModel(hubNc, { namespace: ns, run: runName, round });
      await collectBytes(m.data); // drained: only the digest is needed
      return m.digest;
    };

    // Round 1: every region delivers; c first sends a tampered delta, which is refused.
    await roundOpen(1);
    debug("round 1");
    let model = await digestOf(0);
    // Sent twice, seconds apart, hoping for a second increment that increase() would show (the
    // first one is invisible to it); the hub counts the identical resend only once.
    await publish(c, 2, 1, 800, model, true);
    await new Promise((r) => setTimeout(r, 2_500));
    await publish(c, 2, 1, 800, model, true);
    await new Promise((r) => setTimeout(r, 1_500));
    await publish(a, 0, 1, 1000, model);
    await publish(b, 1, 1, 2000, model);
    await publish(c, 2, 1, 800, model);

    // Round 2: c's GPUs all fail attestation; it is quarantined and a and b close the round.
    await roundOpen(2);
    debug("round 2");
    await fx.failRegionGpus(c.name);
    await eventually(async () => {
      const s = (await fx.getRun(runName)).status;
      return s?.regions?.find((r) => r.name === c.name)?.quarantined ? s : undefined;
    }, "region c quarantined");
    model = await digestOf(1);
    await new Promise((r) => setTimeout(r, 2_000));
    await publish(a, 0, 2, 1000, model);
    await publish(b, 1, 2, 1000, model);

    // Round 3: a and b again; the run succeeds.
    await roundOpen(3);
    debug("round 3");
    model = await digestOf(2);
    await new Promise((r) => setTimeout(r, 2_000));
    await publish(a, 0, 3, 1000, model);
    await publish(b, 1, 3, 1500, model);
    await eventually(
      async () => ((await fx.getRun(runName)).status?.phase === "Succeeded" ? true : undefined),
      "the run succeeded",
      SLOW,
    );
    debug("run succeeded");

    // The member: a learner admitted on A, B quarantined for its measurement.
    const learners = async (): Promise<V1Pod[]> =>
      (await core.listNamespacedPod({ namespace: LEARNER_NAMESPACE, labelSelector: `${WORK_LABEL}=${id}` }))
        .items;
    await eventually(
      async () => {
        const pods = await learners();
        return pods.length === 1 &&
          pods.every((p) => !p.spec?.schedulingGates?.some((g) => g.name === ATTESTATION_GATE))
          ? pods
          : undefined;
      },
      "the learner admitted",
      SLOW,
    );
    await eventually(
      async () =>
        (await core.readNode({ name: nodeB })).metadata?.labels?.[ATTESTED_LABEL] === "false"
          ? true
          : undefined,
      `${nodeB} quarantined`,
      SLOW,
    );
    // B challenged again and failing again, for the same reason as the refusal above: the
    // failure panels show the second failure, not the first.
    await core.patchNode(
      {
        name: nodeB,
        body: { metadata: { annotations: { [NODE_ANNOTATIONS.reattest]: uniqueName("again") } } },
      },
      merge,
    );
    await eventually(
      async () =>
        /sovereign_attestation_verifications_total\{result="failed",[^}]*\} [2-9]/.test(
          await memberMetrics.registry.metrics(),
        )
          ? true
          : undefined,
      `${nodeB} failing a second time`,
      SLOW,
    );
    debug("member admitted and quarantined");

    // The link to the hub drops for a few seconds: the member's watch of its work fails.
    link.cut(4_000);
    await eventually(
      async () =>
        /sovereign_informer_restarts_total\{[^}]*\} [1-9]/.test(await memberMetrics.registry.metrics())
          ? true
          : undefined,
      "the member's informer restarting",
      60_000,
    );
    debug("member informer restarted");
    // Then the member's hub credential is revoked: its heartbeats fail.
    await revokeRegionAccess(admin, region);
    await eventually(
      async () =>
        /controller_runtime_reconcile_errors_total\{[^}]*\} [1-9]/.test(
          await memberMetrics.registry.metrics(),
        )
          ? true
          : undefined,
      "the member's reconciles failing",
      60_000,
    );
    debug("member failing");
    // A few scrapes more, so the last changes are in Prometheus and every rate has two samples.
    await new Promise((r) => setTimeout(r, 12_000));
    const end = Math.ceil(Date.now() / 1000);
    const dashboard = JSON.parse(await readFile(DASHBOARD, "utf8"));
    const checks = await checkDashboard(prom, dashboard, { start, end, step: SCRAPE_SECONDS, vars: VARS });
    debug("queries checked");
    for (const c of checks) {
      const why = unexplained(c);
      t.is(why, undefined, `panel ${c.query.panelId} "${c.query.title}" ${c.query.refId}: ${c.expr}: ${why}`);
    }
    const shown = checks.filter((c) => problem(c) === undefined);
    t.log(
      `${shown.length} of ${checks.length} queries (${new Set(shown.map((c) => c.query.panelId)).size} panels) returned data over ${end - start} s`,
    );
    for (const c of checks)
      t.log(
        `  ${c.query.title} [${c.query.refId}]: ${c.withData} series${problem(c) ? ` — ${problem(c)}: ${excuse(c)}` : ""}`,
      );

    // The same check on a copy naming a metric the operator does not export fails.
    const bogus = structuredClone(dashboard);
    const panel = bogus.panels.find((p: { title: string }) => p.title === "Delta bytes received by region");
    panel.targets[0].expr = panel.targets[0].expr.replace(
      "sovereign_delta_bytes_total",
      "sovereign_delta_octets_total",
    );
    const bogusChecks = await checkDashboard(prom, bogus, { start, end, step: SCRAPE_SECONDS, vars: VARS });
    const failed = bogusChecks.filter((c) => unexplained(c) !== undefined);
    t.deepEqual(
      failed.map((c) => [c.query.title, unexplained(c)]),
      [["Delta bytes received by region", "the operator exports no sovereign_delta_octets_total"]],
    );

    // The picture of the main panels, from these results.
    const dir = await mkdtemp(join(tmpdir(), "sovereign-dashboard-"));
    t.teardown(() => rm(dir, { recursive: true, force: true }));
    const png = join(dir, "dashboard.png");
    await renderDashboard(checks, { start, end, out: png });
    t.true((await readFile(png)).subarray(1, 4).toString() === "PNG", "rsvg-convert wrote a PNG");
    if (process.env.SOVEREIGN_RENDER_DASHBOARD === "1") {
      const target = join(repoRoot, "docs", "images", "dashboard.png");
      await copyFile(png, target);
      t.log(`wrote ${target}`);
    }
    t.log(`test took ${((Date.now() - started) / 1000).toFixed(0)} s`);
  },
);

/** A TCP relay to `target` that `cut` breaks: open connections reset, new ones refused for a while. */
async function cuttableLink(target: { host: string; port: number }) {
  const open = new Set<Socket>();
  let down = false;
  const server = createServer((client) => {
    if (down) {
      client.destroy();
      return;
    }
    const upstream = connect(target.port, target.host);
    const close = () => {
      for (const s of [client, upstream]) {
        s.destroy();
        open.delete(s);
      }
    };
    for (const s of [client, upstream]) {
      open.add(s);
      s.on("error", close).on("close", close);
    }
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  return {
    port: typeof address === "object" && address ? address.port : 0,
    cut(ms: number) {
      down = true;
      for (const s of open) s.destroy();
      setTimeout(() => {
        down = false;
      }, ms).unref();
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of open) s.destroy();
        server.close(() => resolve());
      }),
  };
}
