// `node bench/reconcile.ts [--quick] [--runs 1000] [--nodes 500] [--workers 2] [--apply-concurrency 16]
//   [--baseline-concurrency 2] [--attestation skip|gated] [--timeout-s 900] [--running-timeout-s 300]
//   [--heartbeat-ms 10000] [--out NAME]`
//
// Reconcile throughput and latency on the testbed: N FederatedRuns (placement.minRegions 3,
// learnersPerRegion 1) applied as fast as the hub API server takes them, against the hub
// operator and one member per region, each in its own process (bench/reconcile-operator.ts)
// with the region's scoped hub credential, and the regions' GPU nodes topped up with kwok
// Nodes to --nodes in all. Measured per run: apply (the create request sent) → its learner
// pod exists in every region (first seen by a watch on each region's `sovereign-learners`);
// also → every learner Running, once released (--attestation skip, the members'
// --insecure-skip-attestation: pods are released, scheduled by the region's kube-scheduler
// onto the kwok nodes, and taken to Running by kwok) — with --attestation gated they stay
// behind the attestation gate and only creation is measured.
//
// Baseline in the same run: the same learner pod bodies (3 × N) created directly with
// client-node's createNamespacedPod in each region, as many in flight per region as a member
// runs workers (--baseline-concurrency, default --workers). Reports throughput, p50/p99/max,
// ratios, API requests per run and per reconcile (counted in each operator process at the
// client, and the API servers' apiserver_request_total for comparison), operator RSS and CPU,
// the machine's load average. `--quick` is 100 runs / 60 nodes. Everything created is
// labelled or uniquely named and removed at the end, also on failure or Ctrl-C. If not every
// run has its learners within --timeout-s, the runs that did are reported (complete: false).
//
// The members are memberControllers as shipped, which act only on their own region's learner
// pods. Pods of ours deleted by someone else mid-run are counted under `interference`.
//
// Writes bench/results/reconcile.json (reconcile-quick.json with --quick; --out NAME → NAME.json).
import { type ChildProcess, fork } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { cpus, totalmem } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import {
  CoreV1Api,
  CustomObjectsApi,
  PatchStrategy,
  setHeaderOptions,
  type V1Pod,
  Watch,
} from "@kubernetes/client-node";
import { installCrds } from "../crds/install.ts";
import type { FederatedRun, SovereignNode } from "../crds/types.generated.ts";
import { issueRegionCredential, revokeRegionAccess } from "../operator/hub/credentials.ts";
import { desiredRegionWork } from "../operator/hub/federatedrun-controller.ts";
import { regionNamespace } from "../operator/hub/region-access.ts";
import { LEARNER_NAMESPACE, learnerPod, WORK_LABEL } from "../operator/member/work-controller.ts";
import { RunBuilder } from "../test/operator/builders.ts";
import { uniqueName, useTestbed } from "../test/testbed/harness.ts";
import {
  type CleanupStep,
  deleteLearnerPods,
  diff,
  finish,
  gitState,
  kwokGpuNode,
  pool as libPool,
  retrying as libRetrying,
  summary as libSummary,
  waitFor as libWaitFor,
  load,
  log,
  now,
  percentile,
  sleep,
  stripRunFinalizers,
  sum,
  top,
} from "./lib.ts";
import type { FromOperator, OperatorSpec, OperatorStats, ToOperator } from "./reconcile-operator.ts";

const { values: args } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    runs: { type: "string" },
    nodes: { type: "string" },
    workers: { type: "string", default: "2" },
    "apply-concurrency": { type: "string", default: "16" },
    "baseline-concurrency": { type: "string" },
    attestation: { type: "string", default: "skip" },
    "timeout-s": { type: "string" },
    "running-timeout-s": { type: "string", default: "300" },
    "heartbeat-ms": { type: "string", default: "10000" },
    out: { type: "string" },
  },
});
const quick = args.quick === true;
const N = Number(args.runs ?? (quick ? 100 : 1000));
const totalNodes = Number(args.nodes ?? (quick ? 60 : 500));
const workers = Number(args.workers);
const applyConcurrency = Number(args["apply-concurrency"]);
const baselineConcurrency = Number(args["baseline-concurrency"] ?? workers);
const skipAttestation = args.attestation === "skip";
if (!["skip", "gated"].includes(String(args.attestation))) throw new Error("--attestation is skip or gated");
const timeoutMs = Number(args["timeout-s"] ?? (quick ? 300 : 900)) * 1000;
const runningTimeoutMs = Number(args["running-timeout-s"]) * 1000;
const heartbeatMs = Number(args["heartbeat-ms"]);
for (const [k, v] of Object.entries({ N, totalNodes, workers, applyConcurrency, baselineConcurrency })) {
  if (!Number.isInteger(v) || v < 1) throw new Error(`${k} must be a positive whole number, not ${v}`);
}

const GROUP = { group: "sovereign.ai", version: "v1alpha1" };
const BENCH_LABEL = "sovereign.ai/bench";
const FLEET_LABEL = "sovereign.ai/bench-fleet";
const GPUS_PER_NODE = 8;
const MiB = 1024 * 1024;
const mergePatch = setHeaderOptions("Content-Type", PatchStrategy.MergePatch);
const resultsDir = resolve(import.meta.dirname, "results");
const logDir = join(resultsDir, "reconcile-logs");

const interrupt = new AbortController();
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.once(sig, () => interrupt.abort(new Error(`interrupted by ${sig}; cleaning up`)));
}
const summary = (ms: readonly number[]) => libSummary(ms, { mean: true });
const pool = (count: number, concurrency: number, fn: (i: number) => Promise<void>) =>
  libPool(count, concurrency, fn, interrupt.signal);
let retries = 0;
const retrying = <T>(fn: () => Promise<T>) =>
  libRetrying(fn, () => {
    retries++;
  });
const waitFor = <T>(probe: () => Promise<T | undefined> | T | undefined, what: string, ms: number) =>
  libWaitFor(probe, what, ms, {
    signal: interrupt.signal,
    intervalMs: 250,
    // Any operator gone, ready or not, ends the wait.
    check: () => {
      for (const o of operators)
        if (o.exitedWith) throw new Error(`operator ${o.name} exited: ${o.exitedWith}`);
    },
  });

/** One operator process (hub or member), driven over IPC. */
class OperatorProcess {
  readonly name: string;
  readonly child: ChildProcess;
  exitedWith?: string;
  booted?: OperatorStats;
  ready?: OperatorStats;
  peakRssBytes = 0;
  private nextId = 0;
  private readonly pending = new Map<number, (s: OperatorStats) => void>();
  private readonly started: Promise<void>;

  constructor(name: string, spec: OperatorSpec) {
    this.name = name;
    this.child = fork(join(import.meta.dirname, "reconcile-operator.ts"), [], {
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    });
    this.started = new Promise((resolveStart, rejectStart) => {
      this.child.on("message", (msg: FromOperator) => {
        if (msg.type === "booted") this.booted = msg.stats;
        else if (msg.type === "ready") {
          this.ready = msg.stats;
          resolveStart();
        } else if (msg.type === "failed") {
          this.exitedWith = msg.message;
          rejectStart(new Error(`${name}: ${msg.message}`));
        } else {
          this.pending.get(msg.id)?.(msg.stats);
          this.pending.delete(msg.id);
        }
      });
      this.child.on("exit", (code, signal) => {
        this.exitedWith ??= `exit ${code ?? signal}`;
        rejectStart(new Error(`${name} exited before it was ready (${this.exitedWith})`));
      });
    });
    this.started.catch(() => undefined); // reported by whenReady or waitFor
    this.child.send({ type: "start", spec } satisfies ToOperator);
  }

  whenReady(): Promise<void> {
    return this.started;
  }

  private ask(type: "stats" | "stop", timeoutMs = 60_000): Promise<OperatorStats> {
    const id = this.nextId++;
    return new Promise((res, rej) => {
      const timer = setTimeout(() => rej(new Error(`${this.name} did not answer ${type}`)), timeoutMs);
      this.pending.set(id, (s) => {
        clearTimeout(timer);
        res(s);
      });
      this.child.send({ type, id } satisfies ToOperator);
    });
  }

  stats(): Promise<OperatorStats> {
    return this.ask("stats");
  }

  /** VmRSS now and VmHWM (peak since start), bytes, from /proc. */
  proc(): { rss: number; hwm: number } {
    try {
      const s = readFileSync(`/proc/${this.child.pid}/status`, "utf8");
      const kb = (k: string) => Number(new RegExp(`${k}:\\s+(\\d+) kB`).exec(s)?.[1] ?? Number.NaN) * 1024;
      return { rss: kb("VmRSS"), hwm: kb("VmHWM") };
    } catch {
      return { rss: Number.NaN, hwm: Number.NaN };
    }
  }

  sample(): void {
    const { rss } = this.proc();
    if (rss > this.peakRssBytes) this.peakRssBytes = rss;
  }

  async stop(): Promise<OperatorStats | undefined> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return undefined;
    try {
      return await this.ask("stop", 30_000);
    } catch {
      this.child.kill("SIGKILL");
      return undefined;
    }
  }
}

const operators: OperatorProcess[] = [];

// ---------------------------------------------------------------------------------------
const tb = await useTestbed();
const admin = tb.kubeConfig("hub");
const custom = admin.makeApiClient(CustomObjectsApi);
const hubCore = admin.makeApiClient(CoreV1Api);
await installCrds(admin);
const tag = uniqueName("reconcile");
const ns = tag;
const policy = tag;
const regions = tb.regions.map((cluster) => {
  const kc = tb.kubeConfig(cluster);
  return {
    cluster,
    name: uniqueName(cluster),
    kc,
    core: kc.makeApiClient(CoreV1Api),
    rawNamespace: `${tag}-raw`,
    existingGpuNodes: tb.cluster(cluster).nodes.filter((n) => n.gpus > 0).length,
  };
});
const R = regions.length;
const extraNodes = Math.max(0, totalNodes - regions.reduce((n, r) => n + r.existingGpuNodes, 0));
const loadAt: Record<string, number[]> = { start: load() };
const phases: Record<string, number> = {};
await mkdir(logDir, { recursive: true });
log(
  `${tag}: ${N} runs × ${R} regions, ${totalNodes} GPU nodes (${extraNodes} added), workers ${workers}, ` +
    `attestation ${skipAttestation ? "skipped (pods released)" : "gated (pods stay gated)"}; load ${loadAt.start}`,
);

/** Cleanup steps; lib.ts finish runs them newest first, also after a failure. */
const cleanup: CleanupStep[] = [];
const leftovers: string[] = [];

// ---------------------------------------------------------------------------------------
async function main(): Promise<Record<string, unknown>> {
  // Sweeps that hold even if the operators die midway: no finalizer keeps a run, no pod stays.
  cleanup.push({
    what: "the benchmark's nodes",
    fn: () =>
      Promise.all(
        regions.map(async (r) => {
          // Thousands of nodes at high load: the API server may drop the connection; try again.
          for (let attempt = 0; ; attempt++) {
            try {
              return await r.core.deleteCollectionNode({ labelSelector: `${BENCH_LABEL}=${tag}` });
            } catch (err) {
              if (attempt >= 5) throw err;
              await sleep(2_000 * (attempt + 1));
            }
          }
        }),
      ),
  });
  cleanup.push({
    what: "the baseline namespaces",
    fn: () =>
      Promise.all(
        regions.map((r) =>
          r.core.deleteNamespace({ name: r.rawNamespace }).catch((e: { code?: number }) => {
            if (e.code !== 404) throw e;
          }),
        ),
      ),
  });
  cleanup.push({
    what: "the AttestationPolicy",
    fn: () =>
      custom
        .deleteClusterCustomObject({ ...GROUP, plural: "attestationpolicies", name: policy })
        .catch((e: { code?: number }) => {
          if (e.code !== 404) throw e;
        }),
  });
  cleanup.push({
    what: "the regions (SovereignNodes, access, RegionWorks)",
    fn: async () => {
      for (const r of regions) {
        await custom
          .deleteClusterCustomObject({ ...GROUP, plural: "sovereignnodes", name: r.name })
          .catch((e: { code?: number }) => {
            if (e.code !== 404) throw e;
          });
        await revokeRegionAccess(admin, r.name);
      }
    },
  });
  cleanup.push({
    what: "the hub namespace",
    fn: () =>
      hubCore.deleteNamespace({ name: ns }).catch((e: { code?: number }) => {
        if (e.code !== 404) throw e;
      }),
  });
  cleanup.push({ what: "leftover learner pods", fn: deleteOurLearnerPods });
  cleanup.push({
    what: "leftover run finalizers",
    fn: () => stripRunFinalizers(custom, ns, interrupt.signal),
  });
  cleanup.push({
    what: "the operator processes",
    fn: () => Promise.all(operators.map((o) => o.stop())),
  });

  // The hub namespace, the policy the regions name, the GPU nodes.
  await hubCore.createNamespace({ body: { metadata: { name: ns, labels: { [BENCH_LABEL]: tag } } } });
  await custom.createClusterCustomObject({
    ...GROUP,
    plural: "attestationpolicies",
    body: {
      apiVersion: "sovereign.ai/v1alpha1",
      kind: "AttestationPolicy",
      metadata: { name: policy, labels: { [BENCH_LABEL]: tag } },
      spec: { verification: { mode: "Local" } },
    },
  });
  let t = now();
  await Promise.all(
    regions.map(async (r, ri) => {
      const count = Math.floor(extraNodes / R) + (ri < extraNodes % R ? 1 : 0);
      await pool(count, 8, async (i) => {
        const name = `${tag}-gpu-${i}`;
        const node = kwokGpuNode(name, r.cluster, GPUS_PER_NODE, { [BENCH_LABEL]: tag });
        await retrying(() => r.core.createNode({ body: node }));
      });
    }),
  );
  await waitFor(
    async () => {
      let ready = 0;
      for (const r of regions) {
        const list = await r.core.listNode({ labelSelector: `${BENCH_LABEL}=${tag}` });
        ready += list.items.filter((n) =>
          n.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True"),
        ).length;
      }
      return ready === extraNodes;
    },
    `${extraNodes} kwok nodes Ready`,
    // kwok readies a few hundred nodes a minute on a loaded machine: 2,000 need more than 5 min.
    Math.max(300_000, timeoutMs),
  );
  phases.nodesSeconds = (now() - t) / 1000;
  log(`${extraNodes} kwok GPU nodes Ready in ${phases.nodesSeconds.toFixed(1)} s`);

  // The baseline: the same pod bodies, created directly.
  loadAt.beforeBaseline = load();
  const baseline = await rawCreates();
  log(
    `baseline: ${R * N} createNamespacedPod in ${baseline.seconds.toFixed(1)} s = ${baseline.podsPerSecond.toFixed(1)} pods/s, ` +
      `p50 ${baseline.perCreate.p50Ms} ms p99 ${baseline.perCreate.p99Ms} ms`,
  );

  // The operators: the hub, and one member per region with its scoped credential.
  t = now();
  const hubKubeconfig = tb.cluster("hub").kubeconfig;
  operators.push(
    new OperatorProcess("hub", {
      role: "hub",
      kubeconfig: hubKubeconfig,
      namespace: ns,
      regionSelector: `${FLEET_LABEL}=${tag}`,
      workers,
      logFile: join(logDir, `${tag}-hub.log`),
    }),
  );
  for (const r of regions) {
    const cred = await issueRegionCredential(admin, r.name, { ttlSeconds: 3600 });
    operators.push(
      new OperatorProcess(`member ${r.cluster}`, {
        role: "member",
        region: r.name,
        cluster: r.cluster,
        regionKubeconfig: tb.cluster(r.cluster).kubeconfig,
        hubKubeconfigYaml: cred.kubeconfig,
        labels: { [FLEET_LABEL]: tag },
        policy,
        workers,
        insecureSkipAttestation: skipAttestation,
        heartbeatIntervalMs: heartbeatMs,
        logFile: join(logDir, `${tag}-member-${r.cluster}.log`),
      }),
    );
  }
  await Promise.all(operators.map((o) => o.whenReady()));
  // The regions registered themselves; the hub admin accepts them; the hub judges them Ready.
  for (const r of regions) {
    await waitFor(
      () =>
        custom
          .getClusterCustomObject({ ...GROUP, plural: "sovereignnodes", name: r.name })
          .then(() => true)
          .catch(() => undefined),
      `${r.name} registered`,
      60_000,
    );
    await custom.patchClusterCustomObject(
      { ...GROUP, plural: "sovereignnodes", name: r.name, body: { spec: { accepted: true } } },
      mergePatch,
    );
  }
  await waitFor(
    async () => {
      for (const r of regions) {
        const n = (await custom.getClusterCustomObject({
          ...GROUP,
          plural: "sovereignnodes",
          name: r.name,
        })) as SovereignNode;
        const ready = n.status?.conditions?.find((c) => c.type === "Ready");
        if (ready?.status !== "True") return undefined;
      }
      return true;
    },
    "every region Ready at the hub",
    60_000,
  );
  phases.operatorsSeconds = (now() - t) / 1000;
  const attested = await Promise.all(
    regions.map(async (r) => {
      const n = (await custom.getClusterCustomObject({
        ...GROUP,
        plural: "sovereignnodes",
        name: r.name,
      })) as SovereignNode;
      return n.status?.gpuNodes;
    }),
  );
  log(`operators up and regions Ready in ${phases.operatorsSeconds.toFixed(1)} s`);
  await sleep(2_000); // let the idle operators settle before the idle sample
  const idle = await Promise.all(operators.map((o) => o.stats()));
  const idleRss = operators.map((o) => o.proc().rss);

  // Watch each region's learner pods: a run's learners are known by the work annotation.
  const runNames = Array.from({ length: N }, (_, i) => `run-${String(i).padStart(5, "0")}`);
  const runIndex = new Map(runNames.map((n, i) => [n, i]));
  const createdAt = runNames.map(() => new Array<number>(R).fill(Number.NaN));
  const runningAt = runNames.map(() => new Array<number>(R).fill(Number.NaN));
  const allCreatedAt = new Array<number>(N).fill(Number.NaN);
  const allRunningAt = new Array<number>(N).fill(Number.NaN);
  let runsCreated = 0;
  let runsRunning = 0;
  const livePods = new Set<string>();
  const foreignPods = new Set<string>();
  let deletedMidRun = 0;
  let deleting = false;
  const watches: AbortController[] = [];
  let watching = true;
  const watchRegion = (ri: number) => {
    const r = regions[ri] as (typeof regions)[number];
    const prefix = `${regionNamespace(r.name)}/${ns}.`;
    const onEvent = (phase: string, pod: V1Pod) => {
      const owner = pod.metadata?.annotations?.["sovereign.ai/region-work"];
      const key = `${r.cluster}/${pod.metadata?.name}`;
      if (!owner?.startsWith(prefix)) {
        foreignPods.add(key); // another member's learners share this cluster's namespace
        return;
      }
      if (phase === "DELETED") {
        livePods.delete(key);
        if (!deleting) deletedMidRun++;
        return;
      }
      livePods.add(key);
      const i = runIndex.get(owner.slice(prefix.length));
      if (i === undefined) return;
      const t = now();
      const created = createdAt[i] as number[];
      if (Number.isNaN(created[ri])) {
        created[ri] = t;
        if (created.every((x) => !Number.isNaN(x))) {
          allCreatedAt[i] = t;
          runsCreated++;
        }
      }
      const running = runningAt[i] as number[];
      if (pod.status?.phase === "Running" && Number.isNaN(running[ri])) {
        running[ri] = t;
        if (running.every((x) => !Number.isNaN(x))) {
          allRunningAt[i] = t;
          runsRunning++;
        }
      }
    };
    const start = async () => {
      const w = await new Watch(r.kc).watch(
        `/api/v1/namespaces/${LEARNER_NAMESPACE}/pods`,
        { labelSelector: WORK_LABEL },
        onEvent,
        () => {
          // The server ended the watch: watch again (a re-list only repeats first sightings).
          if (watching) setTimeout(() => void start(), 500);
        },
      );
      watches.push(w);
    };
    return start();
  };
  await Promise.all(regions.map((_, ri) => watchRegion(ri)));
  cleanup.push({
    what: "the pod watches",
    fn: async () => {
      watching = false;
      for (const w of watches) w.abort();
    },
  });
  const sampler = setInterval(() => {
    for (const o of operators) o.sample();
  }, 250);
  cleanup.push({ what: "the RSS sampler", fn: async () => clearInterval(sampler) });

  // Apply the runs.
  loadAt.beforeApply = load();
  const before = await snapshot();
  const applyStart = new Array<number>(N).fill(Number.NaN);
  const applyEnd = new Array<number>(N).fill(Number.NaN);
  const t0 = now();
  await pool(N, applyConcurrency, async (i) => {
    const run = new RunBuilder(runNames[i] as string, ns)
      .placement({ minRegions: R, regionSelector: { matchLabels: { [FLEET_LABEL]: tag } } })
      .learners(1, 1)
      .obj();
    run.spec.attestation.policyRef.name = policy;
    delete run.metadata.generation;
    applyStart[i] = now();
    await retrying(() =>
      custom.createNamespacedCustomObject({ ...GROUP, plural: "federatedruns", namespace: ns, body: run }),
    );
    applyEnd[i] = now();
  });
  const applySeconds = (now() - t0) / 1000;
  log(`${N} FederatedRuns created in ${applySeconds.toFixed(1)} s (${(N / applySeconds).toFixed(1)}/s)`);
  let lastLog = now();
  const progress: number[][] = [];
  const progressTimer = setInterval(
    () => progress.push([Number(((now() - t0) / 1000).toFixed(1)), runsCreated, runsRunning]),
    5_000,
  );
  cleanup.push({ what: "the progress timer", fn: async () => clearInterval(progressTimer) });
  let complete = true;
  try {
    await waitFor(
      () => {
        if (now() - lastLog > 15_000) {
          lastLog = now();
          log(`  ${runsCreated}/${N} runs have their learner in every region; load ${load()}`);
        }
        return runsCreated === N;
      },
      `learner pods of all ${N} runs in every region`,
      timeoutMs,
    );
  } catch (err) {
    if (interrupt.signal.aborted || operators.some((o) => o.exitedWith)) throw err;
    complete = false;
    log(`${(err as Error).message}: reporting the ${runsCreated} runs that completed`);
  }
  const tCreated = complete ? Math.max(...allCreatedAt) : now();
  const runsDone = runsCreated; // runs keep completing after a timeout; report what was done by now
  loadAt.allCreated = load();
  const atCreated = await snapshot();
  const createdLatency = allCreatedAt
    .map((t, i) => t - (applyStart[i] as number))
    .filter((x) => !Number.isNaN(x));
  const podsCreated = createdAt.flat().filter((x) => !Number.isNaN(x)).length;
  const createdSeconds = (tCreated - t0) / 1000;
  log(
    `${complete ? "all" : `${runsDone} of ${N} runs'`} learners created ${createdSeconds.toFixed(1)} s after the first apply: ` +
      `${(runsDone / createdSeconds).toFixed(1)} runs/s, ` +
      `p50 ${percentile(createdLatency, 50).toFixed(0)} ms p99 ${percentile(createdLatency, 99).toFixed(0)} ms`,
  );

  // Released learners: scheduled onto the kwok GPU nodes and Running.
  let running: Record<string, unknown> | undefined;
  let atRunning: Snapshot | undefined;
  if (skipAttestation && complete) {
    try {
      await waitFor(
        () => {
          if (now() - lastLog > 15_000) {
            lastLog = now();
            log(`  ${runsRunning}/${N} runs have their learner Running in every region; load ${load()}`);
          }
          return runsRunning === N;
        },
        `learners of all ${N} runs Running`,
        runningTimeoutMs,
      );
    } catch (err) {
      if (interrupt.signal.aborted) throw err;
      log(`${(err as Error).message}; reporting the ${runsRunning} that were`);
    }
    loadAt.running = load();
    atRunning = await snapshot();
    const done = allRunningAt.map((t, i) => t - (applyStart[i] as number)).filter((x) => !Number.isNaN(x));
    const last = Math.max(...allRunningAt.filter((x) => !Number.isNaN(x)));
    running = {
      runs: runsRunning,
      applyToAllLearnersRunning: summary(done),
      seconds: Number(((last - t0) / 1000).toFixed(2)),
      runsPerSecond: Number((runsRunning / ((last - t0) / 1000)).toFixed(2)),
    };
  }
  const peakRss = operators.map((o) => o.peakRssBytes);

  // Counted by listing, not from the watches: a watch restarted after the server ended it
  // never hears of the pods deleted in between.
  const ourPodsLeft = async () => {
    let n = 0;
    for (const r of regions) {
      const prefix = `${regionNamespace(r.name)}/${ns}.`;
      const pods = await r.core.listNamespacedPod({
        namespace: LEARNER_NAMESPACE,
        labelSelector: WORK_LABEL,
      });
      n += pods.items.filter((p) =>
        p.metadata?.annotations?.["sovereign.ai/region-work"]?.startsWith(prefix),
      ).length;
    }
    return n;
  };
  // Delete every run while the operators run: finalizers released, work and pods removed.
  deleting = true;
  const tDelete = now();
  await custom.deleteCollectionNamespacedCustomObject({ ...GROUP, plural: "federatedruns", namespace: ns });
  let deletion: Record<string, unknown> = {};
  try {
    await waitFor(
      async () => {
        const left = await custom.listNamespacedCustomObject({
          ...GROUP,
          plural: "federatedruns",
          namespace: ns,
        });
        return (left as { items: unknown[] }).items.length === 0 && (await ourPodsLeft()) === 0;
      },
      "every run deleted and its learner pods gone",
      timeoutMs,
    );
    deletion = { seconds: Number(((now() - tDelete) / 1000).toFixed(1)) };
    log(`all runs deleted and learners gone in ${deletion.seconds} s`);
  } catch (err) {
    if (interrupt.signal.aborted) throw err;
    const podsLeft = await ourPodsLeft().catch(() => livePods.size);
    deletion = { error: (err as Error).message, podsLeft };
    log(`${(err as Error).message}; ${podsLeft} pods left for the sweep`);
  }
  const hwm = operators.map((o) => o.proc().hwm);
  const afterDelete = await Promise.all(operators.map((o) => o.stats())).catch(() => undefined);
  clearInterval(sampler);

  return report({
    baseline,
    attested,
    idle,
    idleRss,
    afterDelete,
    peakRss,
    hwm,
    before,
    atCreated,
    atRunning,
    running,
    applyStart,
    applyEnd,
    applySeconds,
    createdLatency,
    createdSeconds,
    runsCreated: runsDone,
    podsCreated,
    complete,
    progress,
    deletion,
    interference: {
      note: "learner pods of other members seen in the regions' sovereign-learners during the run, and our learner pods deleted before we deleted the runs (members before 7a3ffcb deleted the learner pods of work they did not have)",
      foreignLearnerPodsSeen: foreignPods.size,
      ourPodsDeletedMidRun: deletedMidRun,
    },
  });
}

// ---------------------------------------------------------------------------------------
async function rawCreates() {
  const perCreate: number[] = [];
  const sinceStart: number[] = [];
  for (const r of regions) {
    await r.core.createNamespace({
      body: { metadata: { name: r.rawNamespace, labels: { [BENCH_LABEL]: tag } } },
    });
  }
  // The bodies the members will create: learnerPod of the RegionWork the hub would send.
  const bodies = regions.map((r) =>
    Array.from({ length: N }, (_, i) => {
      const run = new RunBuilder(`run-${String(i).padStart(5, "0")}`, ns).learners(1, 1).obj();
      run.metadata.uid = crypto.randomUUID();
      const pod = learnerPod(desiredRegionWork(run as FederatedRun, r.name, undefined), 0);
      pod.metadata = { ...pod.metadata, namespace: r.rawNamespace, name: `raw-${i}` };
      return pod;
    }),
  );
  const t0 = now();
  await Promise.all(
    regions.map((r, ri) =>
      pool(N, baselineConcurrency, async (i) => {
        const t = now();
        await retrying(() =>
          r.core.createNamespacedPod({ namespace: r.rawNamespace, body: bodies[ri]?.[i] as V1Pod }),
        );
        perCreate.push(now() - t);
        sinceStart.push(now() - t0);
      }),
    ),
  );
  const seconds = (now() - t0) / 1000;
  // Out of the way before the operators' turn (gated pods go at once: no node to stop them).
  await Promise.all(regions.map((r) => r.core.deleteCollectionNamespacedPod({ namespace: r.rawNamespace })));
  await waitFor(
    async () => {
      for (const r of regions) {
        if ((await r.core.listNamespacedPod({ namespace: r.rawNamespace, limit: 1 })).items.length) return;
      }
      return true;
    },
    "the baseline pods deleted",
    300_000,
  );
  return {
    pods: R * N,
    concurrencyPerRegion: baselineConcurrency,
    seconds,
    podsPerSecond: (R * N) / seconds,
    perCreate: summary(perCreate),
    burstStartToCreated: summary(sinceStart),
  };
}

type Snapshot = Awaited<ReturnType<typeof snapshot>>;
async function snapshot() {
  const [stats, apiservers] = await Promise.all([
    Promise.all(operators.map((o) => o.stats())),
    apiserverRequests(),
  ]);
  return { stats, apiservers };
}

/** apiserver_request_total of every testbed API server: cluster → `VERB resource[/sub]` → n. */
async function apiserverRequests(): Promise<Record<string, Record<string, number>>> {
  const out: Record<string, Record<string, number>> = {};
  await Promise.all(
    ["hub", ...regions.map((r) => r.cluster)].map(async (cluster) => {
      const res = await tb.kubectl(cluster, ["get", "--raw", "/metrics"]);
      const counts: Record<string, number> = {};
      for (const line of res.stdout.split("\n")) {
        if (!line.startsWith("apiserver_request_total{")) continue;
        const labels = Object.fromEntries(
          [...line.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1] as string, m[2] as string]),
        );
        const key = `${labels.verb} ${labels.resource}${labels.subresource ? `/${labels.subresource}` : ""}`;
        counts[key] = (counts[key] ?? 0) + Number(line.slice(line.lastIndexOf(" ") + 1));
      }
      out[cluster] = counts;
    }),
  );
  return out;
}

/** Operator requests and reconciles between two snapshots. */
function window(a: Snapshot, b: Snapshot) {
  const perOperator = operators.map((o, i) => {
    const sa = a.stats[i] as OperatorStats;
    const sb = b.stats[i] as OperatorStats;
    const reconciles: Record<string, number> = {};
    for (const [c, results] of Object.entries(sb.reconciles)) {
      reconciles[c] = sum(diff(sa.reconciles[c] ?? {}, results));
    }
    const requests = diff(sa.requests, sb.requests);
    const sec: Record<string, number> = {};
    for (const [c, s] of Object.entries(sb.reconcileSeconds)) {
      const p = sa.reconcileSeconds[c] ?? { sum: 0, count: 0 };
      if (s.count > p.count) sec[c] = Number((((s.sum - p.sum) / (s.count - p.count)) * 1000).toFixed(2));
    }
    return {
      operator: o.name,
      requests: sum(requests),
      reconciles,
      requestsPerReconcile: Number((sum(requests) / Math.max(1, sum(reconciles))).toFixed(3)),
      meanReconcileMs: sec,
      cpuSeconds: Number(((sb.cpuUserUs + sb.cpuSystemUs - sa.cpuUserUs - sa.cpuSystemUs) / 1e6).toFixed(2)),
      byRequest: top(requests, 20),
    };
  });
  const requests = perOperator.reduce((n, o) => n + o.requests, 0);
  const reconciles = perOperator.reduce((n, o) => n + sum(o.reconciles), 0);
  const apiservers: Record<string, { total: number; top: Record<string, number> }> = {};
  for (const [cluster, counts] of Object.entries(b.apiservers)) {
    const d = diff(a.apiservers[cluster] ?? {}, counts);
    apiservers[cluster] = { total: sum(d), top: top(d, 8) };
  }
  return {
    operatorRequests: requests,
    reconciles,
    requestsPerRun: Number((requests / N).toFixed(2)),
    requestsPerReconcile: Number((requests / Math.max(1, reconciles)).toFixed(3)),
    operatorCpuSeconds: Number(perOperator.reduce((n, o) => n + o.cpuSeconds, 0).toFixed(2)),
    perOperator,
    apiserverRequestTotal: {
      note: "apiserver_request_total deltas over the same window: every client (kube-scheduler, kwok, controller-manager, this benchmark's creates and watches, any other work on the shared testbed); long-running WATCHes count when they end",
      total: Object.values(apiservers).reduce((n, x) => n + x.total, 0),
      perRun: Number((Object.values(apiservers).reduce((n, x) => n + x.total, 0) / N).toFixed(2)),
      byCluster: apiservers,
    },
  };
}

function report(m: {
  baseline: Awaited<ReturnType<typeof rawCreates>>;
  attested: unknown[];
  idle: OperatorStats[];
  idleRss: number[];
  afterDelete?: OperatorStats[];
  peakRss: number[];
  hwm: number[];
  before: Snapshot;
  atCreated: Snapshot;
  atRunning?: Snapshot;
  running?: Record<string, unknown>;
  applyStart: number[];
  applyEnd: number[];
  applySeconds: number;
  createdLatency: number[];
  createdSeconds: number;
  runsCreated: number;
  podsCreated: number;
  complete: boolean;
  progress: number[][];
  deletion: Record<string, unknown>;
  interference: Record<string, unknown>;
}): Record<string, unknown> {
  const mib = (b: number) => Number((b / MiB).toFixed(1));
  const created = summary(m.createdLatency);
  const runsPerSecond = m.runsCreated / m.createdSeconds;
  const podsPerSecond = m.podsCreated / m.createdSeconds;
  const toCreated = window(m.before, m.atCreated);
  const toRunning = m.atRunning ? window(m.before, m.atRunning) : undefined;
  const memory = operators.map((o, i) => {
    const booted = o.booted?.rssBytes ?? Number.NaN;
    return {
      operator: o.name,
      bootedRssMiB: mib(booted),
      idleRssMiB: mib(m.idleRss[i] as number),
      peakRssMiB: mib(m.peakRss[i] as number),
      vmHwmMiB: mib(m.hwm[i] as number),
      peakAboveBootedMiB: mib((m.peakRss[i] as number) - booted),
      rssAtAllCreatedMiB: mib(m.atCreated.stats[i]?.rssBytes ?? Number.NaN),
      rssAfterDeleteMiB: mib(m.afterDelete?.[i]?.rssBytes ?? Number.NaN),
      heapUsedMiB: {
        idle: mib(m.idle[i]?.heapUsedBytes ?? Number.NaN),
        allCreated: mib(m.atCreated.stats[i]?.heapUsedBytes ?? Number.NaN),
        afterDelete: mib(m.afterDelete?.[i]?.heapUsedBytes ?? Number.NaN),
      },
    };
  });
  const result = {
    bench: "reconcile",
    measuredAt: new Date().toISOString(),
    command: `node bench/reconcile.ts ${process.argv.slice(2).join(" ")}`.trim(),
    git: gitState(),
    machine: { cpus: cpus().length, totalMemMiB: mib(totalmem()), node: process.version, loadavg: loadAt },
    sizes: {
      runs: N,
      regions: R,
      gpuNodes: totalNodes,
      kwokNodesAdded: extraNodes,
      learnersPerRegion: 1,
      minRegions: R,
      workers,
      applyConcurrency,
      attestation: skipAttestation ? "skipped: members release pods (--insecure-skip-attestation)" : "gated",
      heartbeatIntervalMs: heartbeatMs,
    },
    regionInventory: m.attested,
    setup: { nodesSeconds: phases.nodesSeconds, operatorsSeconds: phases.operatorsSeconds },
    baseline: {
      what: `client-node createNamespacedPod of the learner pod bodies, ${baselineConcurrency} in flight per region, ${R} regions in parallel`,
      ...m.baseline,
    },
    operator: {
      what: "create request sent → the run's learner pod seen (watch) in every region",
      apply: {
        seconds: Number(m.applySeconds.toFixed(2)),
        createsPerSecond: Number((N / m.applySeconds).toFixed(1)),
        perCreate: summary(m.applyEnd.map((e, i) => e - (m.applyStart[i] as number))),
      },
      complete: m.complete,
      runsWithAllLearners: m.runsCreated,
      podsCreated: m.podsCreated,
      applyToAllLearnersCreated: created,
      seconds: Number(m.createdSeconds.toFixed(2)),
      runsPerSecond: Number(runsPerSecond.toFixed(2)),
      podsPerSecond: Number(podsPerSecond.toFixed(1)),
      ...(m.running ? { released: m.running } : {}),
      progress: {
        columns: ["secondsSinceFirstApply", "runsWithAllLearners", "runsAllRunning"],
        rows: m.progress,
      },
    },
    ratios: {
      podsPerSecondOperatorOverRaw: Number((podsPerSecond / m.baseline.podsPerSecond).toFixed(3)),
      makespanOperatorOverRaw: Number((m.createdSeconds / m.baseline.seconds).toFixed(2)),
      p50OperatorRunOverRawCreate: Number((created.p50Ms / m.baseline.perCreate.p50Ms).toFixed(1)),
      p99OperatorRunOverRawCreate: Number((created.p99Ms / m.baseline.perCreate.p99Ms).toFixed(1)),
      p50OperatorRunOverRawBurst: Number((created.p50Ms / m.baseline.burstStartToCreated.p50Ms).toFixed(2)),
    },
    apiRequests: { untilAllCreated: toCreated, ...(toRunning ? { untilAllRunning: toRunning } : {}) },
    memory: {
      note: "each operator is its own Node process (as deployed); booted = after imports, before informers; idle = caches synced, regions Ready, no runs; peak = max VmRSS sampled every 250 ms from idle until every learner was created (and Running, when released); vmHwm = the kernel's high-water mark over the whole process life, deletion included; peakAboveBooted is what the runs cost on top of the process's own baseline",
      perOperator: memory,
    },
    deletion: m.deletion,
    interference: m.interference,
    member: "memberControllers as shipped",
    retries,
  };

  const f = (x: number, d = 0) => x.toFixed(d);
  console.log(
    `\nreconcile: ${N} FederatedRuns × ${R} regions (minRegions ${R}, 1 learner each), ${totalNodes} kwok GPU nodes, ` +
      `${workers} workers/controller, attestation ${skipAttestation ? "skipped" : "gated"}`,
  );
  console.log(`machine: ${cpus().length} CPUs, load avg ${JSON.stringify(loadAt)}`);
  console.log(
    `  baseline createNamespacedPod  ${R * N} pods in ${f(m.baseline.seconds, 1)} s = ${f(m.baseline.podsPerSecond, 1)} pods/s; ` +
      `per create p50 ${m.baseline.perCreate.p50Ms} ms  p99 ${m.baseline.perCreate.p99Ms} ms  max ${m.baseline.perCreate.maxMs} ms`,
  );
  console.log(
    `  FederatedRun creates          ${N} in ${f(m.applySeconds, 1)} s = ${f(N / m.applySeconds, 1)}/s (${applyConcurrency} in flight)`,
  );
  console.log(
    `  apply → pods created          p50 ${f(created.p50Ms)} ms  p99 ${f(created.p99Ms)} ms  max ${f(created.maxMs)} ms; ` +
      `${m.complete ? "all" : `${m.runsCreated}/${N} runs (timed out)`} in ${f(m.createdSeconds, 1)} s = ` +
      `${f(runsPerSecond, 2)} runs/s = ${f(podsPerSecond, 1)} pods/s`,
  );
  console.log(
    `    ×${result.ratios.podsPerSecondOperatorOverRaw} of raw pods/s; makespan ×${result.ratios.makespanOperatorOverRaw} of raw; ` +
      `p50 ×${result.ratios.p50OperatorRunOverRawCreate} / p99 ×${result.ratios.p99OperatorRunOverRawCreate} of a raw create`,
  );
  if (m.running) {
    const s = m.running.applyToAllLearnersRunning as ReturnType<typeof summary>;
    console.log(
      `  apply → learners Running      ${m.running.runs}/${N} runs; p50 ${f(s.p50Ms)} ms  p99 ${f(s.p99Ms)} ms  max ${f(s.maxMs)} ms`,
    );
  }
  for (const [label, w] of [
    ["until all created", toCreated],
    ["until all Running", toRunning],
  ] as const) {
    if (!w) continue;
    console.log(
      `  API requests ${label}: ${w.operatorRequests} by the operators = ${w.requestsPerRun}/run, ` +
        `${w.reconciles} reconciles = ${w.requestsPerReconcile}/reconcile; operator CPU ${w.operatorCpuSeconds} s; ` +
        `all clients at the API servers ${w.apiserverRequestTotal.total} (${w.apiserverRequestTotal.perRun}/run)`,
    );
    for (const o of w.perOperator) {
      console.log(
        `    ${o.operator.padEnd(16)} ${String(o.requests).padStart(6)} requests  ${JSON.stringify(o.reconciles)}  ` +
          `${o.requestsPerReconcile}/reconcile  mean reconcile ms ${JSON.stringify(o.meanReconcileMs)}  CPU ${o.cpuSeconds} s`,
      );
    }
  }
  for (const x of memory) {
    console.log(
      `  RSS ${x.operator.padEnd(16)} booted ${x.bootedRssMiB} MiB, idle ${x.idleRssMiB}, peak ${x.peakRssMiB} ` +
        `(+${x.peakAboveBootedMiB} over booted)`,
    );
  }
  if (m.deletion.seconds !== undefined)
    console.log(`  delete all runs → learners gone: ${m.deletion.seconds} s`);
  const { note: _note, ...interference } = m.interference;
  console.log(`  interference from other members: ${JSON.stringify(interference)}`);
  return result;
}

// ---------------------------------------------------------------------------------------
/** Learner pods of this benchmark's regions that their member did not remove. */
async function deleteOurLearnerPods(): Promise<void> {
  for (const r of regions) {
    const prefix = `${regionNamespace(r.name)}/`;
    await deleteLearnerPods(
      r.core,
      (p) => p.metadata?.annotations?.["sovereign.ai/region-work"]?.startsWith(prefix) === true,
      interrupt.signal,
    );
  }
}

// ---------------------------------------------------------------------------------------
await finish(
  main,
  cleanup,
  leftovers,
  join(resultsDir, `${args.out ?? (quick ? "reconcile-quick" : "reconcile")}.json`),
);
