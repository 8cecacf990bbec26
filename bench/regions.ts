// `node bench/regions.ts [--quick] [--regions 100] [--runs 300] [--workers 2] [--heartbeat-ms 10000]
//   [--start-concurrency 3] [--min-available-mib 3072] [--steady-s 60] [--timeout-s 900]
//   [--attestation gated|skip] [--apply-concurrency 16] [--delete-timeout-s 300] [--out NAME]`
//
// Many regions against one hub (issue 10, "Scale"): --regions member operators, each in its own
// process (bench/regions-operator.ts: memberControllers as shipped, with the region's scoped hub
// credential from issueRegionCredential), spread round-robin over the testbed's region clusters
// (several regions share a cluster: a member acts only on its own region's learner pods), all
// registering with one hub operator process and heartbeating every --heartbeat-ms.
//
// Measured:
// - registration: fork of each member → its SovereignNode Ready at the hub (the benchmark accepts
//   each region as it registers, as a hub admin would); time until every region is Ready;
// - steady state (--steady-s, no runs): heartbeat requests/s and etcd writes/s at the hub API
//   server, every other request/s, hub and member CPU and RSS;
// - --runs FederatedRuns, each placed on 3 regions (minRegions 3, maxRegions 3; a regionSelector
//   on this fleet's label and an `In` on a per-region slot label picks 3 regions on 3 different
//   clusters: see `placementOf` for why), applied --apply-concurrency at a time: apply → the run's
//   learner pod seen in each of its regions (p50/p99), the hub's reconcile durations and queue
//   waits (every one recorded in the hub process: exact p50/p99/max) and workqueue depth (every
//   change recorded: exact max), hub API requests/s split into heartbeats and the rest;
// - memory: hub RSS, each member's RSS (VmRSS, sampled every second) and their sum.
//
// Members are started --start-concurrency at a time, and no more are started once the machine's
// MemAvailable would drop under --min-available-mib: the output then says how many regions
// fitted and why it stopped (the rest of the benchmark runs with the regions that started).
// Baseline in the same run: the hub with 0 regions (idle, before any member starts), so the cost
// per region is the slope. `--quick` is 10 regions and 30 runs. Everything created is labelled
// or uniquely named and removed at the end, also on failure or Ctrl-C.
//
// Writes bench/results/regions.json (regions-quick.json with --quick; --out NAME → NAME.json).
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
import { REGION_NAMESPACE_PREFIX } from "../operator/hub/region-access.ts";
import { LEARNER_NAMESPACE, WORK_LABEL } from "../operator/member/work-controller.ts";
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
  waitFor as libWaitFor,
  load,
  log,
  now,
  percentile,
  sleep,
  stripRunFinalizers,
  sum,
  summary,
  top,
} from "./lib.ts";
import type {
  FromRegionsOperator,
  RegionsOperatorSpec,
  RegionsOperatorStats,
  ToRegionsOperator,
} from "./regions-operator.ts";

const { values: args } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    regions: { type: "string" },
    runs: { type: "string" },
    workers: { type: "string", default: "2" },
    "heartbeat-ms": { type: "string", default: "10000" },
    "start-concurrency": { type: "string", default: "3" },
    "min-available-mib": { type: "string", default: "3072" },
    "steady-s": { type: "string" },
    "timeout-s": { type: "string", default: "900" },
    attestation: { type: "string", default: "gated" },
    "apply-concurrency": { type: "string", default: "16" },
    "delete-timeout-s": { type: "string", default: "300" },
    out: { type: "string" },
  },
});
const quick = args.quick === true;
const R = Number(args.regions ?? (quick ? 10 : 100));
const N = Number(args.runs ?? (quick ? 30 : 300));
const workers = Number(args.workers);
const heartbeatMs = Number(args["heartbeat-ms"]);
const startConcurrency = Number(args["start-concurrency"]);
const minAvailableMiB = Number(args["min-available-mib"]);
const steadyMs = Number(args["steady-s"] ?? (quick ? 30 : 60)) * 1000;
const timeoutMs = Number(args["timeout-s"]) * 1000;
const deleteTimeoutMs = Number(args["delete-timeout-s"]) * 1000;
const applyConcurrency = Number(args["apply-concurrency"]);
if (!["skip", "gated"].includes(String(args.attestation))) throw new Error("--attestation is skip or gated");
const skipAttestation = args.attestation === "skip";
for (const [k, v] of Object.entries({ R, N, workers, heartbeatMs, startConcurrency, applyConcurrency })) {
  if (!Number.isInteger(v) || v < 1) throw new Error(`${k} must be a positive whole number, not ${v}`);
}
if (R < 3) throw new Error("--regions must be at least 3 (each run is placed on 3)");

const GROUP = { group: "sovereign.ai", version: "v1alpha1" };
const BENCH_LABEL = "sovereign.ai/bench";
const FLEET_LABEL = "sovereign.ai/bench-fleet";
const SLOT_LABEL = "sovereign.ai/bench-slot";
const REGIONS_PER_RUN = 3;
const GPU_NODES_PER_CLUSTER = 2;
const GPUS_PER_NODE = 8;
const MiB = 1024 * 1024;
const mergePatch = setHeaderOptions("Content-Type", PatchStrategy.MergePatch);
const resultsDir = resolve(import.meta.dirname, "results");
const logDir = join(resultsDir, "regions-logs");

const interrupt = new AbortController();
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.once(sig, () => interrupt.abort(new Error(`interrupted by ${sig}; cleaning up`)));
}
const r1 = (x: number) => Number(x.toFixed(1));
const r2 = (x: number) => Number(x.toFixed(2));
const mib = (b: number) => r1(b / MiB);

function memAvailableMiB(): number {
  const m = /MemAvailable:\s+(\d+) kB/.exec(readFileSync("/proc/meminfo", "utf8"));
  return m ? Number(m[1]) / 1024 : Number.NaN;
}

/** Runs `fn` over `count` items with at most `concurrency` in flight. */
const pool = (count: number, concurrency: number, fn: (i: number) => Promise<void>) =>
  libPool(count, concurrency, fn, interrupt.signal);
/** As pool, but cleanup runs after Ctrl-C too. */
const poolAlways = (count: number, concurrency: number, fn: (i: number) => Promise<void>) =>
  libPool(count, concurrency, fn);

let retries = 0;
const retrying = <T>(fn: () => Promise<T>) =>
  libRetrying(fn, () => {
    retries++;
  });
const ignore404 = (e: { code?: number }) => {
  if (e.code !== 404) throw e;
};

/** One operator process (hub or member), driven over IPC. */
class OperatorProcess {
  readonly name: string;
  readonly child: ChildProcess;
  readonly forkedAt = now();
  readyAt = Number.NaN;
  exitedWith?: string;
  ready?: RegionsOperatorStats;
  peakRssBytes = 0;
  private nextId = 0;
  private readonly pending = new Map<number, (s: RegionsOperatorStats) => void>();
  private readonly started: Promise<void>;

  constructor(name: string, spec: RegionsOperatorSpec) {
    this.name = name;
    this.child = fork(join(import.meta.dirname, "regions-operator.ts"), [], {
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    });
    this.started = new Promise((resolveStart, rejectStart) => {
      this.child.on("message", (msg: FromRegionsOperator) => {
        if (msg.type === "ready") {
          this.ready = msg.stats;
          this.readyAt = now();
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
    this.started.catch(() => undefined);
    this.child.send({ type: "start", spec } satisfies ToRegionsOperator);
  }

  whenReady(): Promise<void> {
    return this.started;
  }

  stats(detail = false, timeoutMs = 60_000): Promise<RegionsOperatorStats> {
    const id = this.nextId++;
    return new Promise((res, rej) => {
      const timer = setTimeout(() => rej(new Error(`${this.name} did not answer stats`)), timeoutMs);
      this.pending.set(id, (s) => {
        clearTimeout(timer);
        res(s);
      });
      this.child.send({ type: "stats", id, detail } satisfies ToRegionsOperator);
    });
  }

  rss(): number {
    try {
      const s = readFileSync(`/proc/${this.child.pid}/status`, "utf8");
      return Number(/VmRSS:\s+(\d+) kB/.exec(s)?.[1] ?? Number.NaN) * 1024;
    } catch {
      return Number.NaN;
    }
  }

  /** Proportional set size (shared pages split between the processes that map them), bytes. */
  pss(): number {
    try {
      const s = readFileSync(`/proc/${this.child.pid}/smaps_rollup`, "utf8");
      return Number(/^Pss:\s+(\d+) kB/m.exec(s)?.[1] ?? Number.NaN) * 1024;
    } catch {
      return Number.NaN;
    }
  }

  sample(): number {
    const rss = this.rss();
    if (rss > this.peakRssBytes) this.peakRssBytes = rss;
    return rss;
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const id = this.nextId++;
    const stopped = new Promise<void>((res) => {
      this.pending.set(id, () => res());
      this.child.once("exit", () => res());
    });
    this.child.send({ type: "stop", id } satisfies ToRegionsOperator);
    const timer = setTimeout(() => this.child.kill("SIGKILL"), 20_000);
    await stopped;
    clearTimeout(timer);
  }
}

let hub: OperatorProcess | undefined;
const members: OperatorProcess[] = [];
const alive = () => [...(hub ? [hub] : []), ...members];

const waitFor = <T>(probe: () => Promise<T | undefined> | T | undefined, what: string, ms: number) =>
  libWaitFor(probe, what, ms, {
    signal: interrupt.signal,
    intervalMs: 500,
    // A member that never came up was reported when it failed; one that dies later is fatal.
    check: () => {
      for (const o of alive())
        if (o.ready && o.exitedWith) throw new Error(`operator ${o.name} exited: ${o.exitedWith}`);
    },
  });

// ---------------------------------------------------------------------------------------
const tb = await useTestbed();
const admin = tb.kubeConfig("hub");
const custom = admin.makeApiClient(CustomObjectsApi);
const hubCore = admin.makeApiClient(CoreV1Api);
await installCrds(admin);
const tag = uniqueName("regions");
const ns = tag;
const policy = tag;
const clusters = tb.regions.map((cluster) => {
  const kc = tb.kubeConfig(cluster);
  return { cluster, kc, core: kc.makeApiClient(CoreV1Api) };
});
/** Region k lives on cluster k mod 3. */
const regions = Array.from({ length: R }, (_, k) => {
  const c = clusters[k % clusters.length] as (typeof clusters)[number];
  return { index: k, name: `${tag}-r${String(k).padStart(3, "0")}`, cluster: c.cluster };
});
const regionIndex = new Map(regions.map((r) => [r.name, r.index]));
const loadAt: Record<string, number[]> = { start: load() };
const memAt: Record<string, number> = { startAvailableMiB: r1(memAvailableMiB()) };
await mkdir(logDir, { recursive: true });
log(
  `${tag}: ${R} regions (one member process each) on ${clusters.length} clusters, ${N} runs × ${REGIONS_PER_RUN} regions, ` +
    `heartbeat ${heartbeatMs} ms, workers ${workers}; load ${loadAt.start}; MemAvailable ${memAt.startAvailableMiB} MiB`,
);

/** Cleanup steps; lib.ts finish runs them newest first, also after a failure. */
const cleanup: CleanupStep[] = [];
const leftovers: string[] = [];

// ---------------------------------------------------------------------------------------
interface HubSnapshot {
  at: number;
  /** `VERB resource[/sub]` → apiserver_request_total (all codes, all clients). */
  requests: Record<string, number>;
  /** `operation resource` → etcd_requests_total, sovereign.ai only. */
  etcd: Record<string, number>;
  cpuSeconds: number;
  rssBytes: number;
  startTime: number;
}

/** The hub API server's own counters (every client, including other work on the testbed). */
async function hubApiserver(): Promise<HubSnapshot> {
  let res: Awaited<ReturnType<typeof tb.kubectl>> | undefined;
  for (let attempt = 0; !res; attempt++) {
    try {
      res = await tb.kubectl("hub", ["get", "--raw", "/metrics"]);
    } catch (err) {
      if (attempt >= 4) throw err;
      await sleep(2_000);
    }
  }
  const snap: HubSnapshot = { at: now(), requests: {}, etcd: {}, cpuSeconds: 0, rssBytes: 0, startTime: 0 };
  for (const line of res.stdout.split("\n")) {
    const value = Number(line.slice(line.lastIndexOf(" ") + 1));
    if (line.startsWith("apiserver_request_total{")) {
      const l = Object.fromEntries([...line.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
      const key = `${l.verb} ${l.resource}${l.subresource ? `/${l.subresource}` : ""}`;
      snap.requests[key] = (snap.requests[key] ?? 0) + value;
    } else if (line.startsWith("etcd_requests_total{") && line.includes('group="sovereign.ai"')) {
      const l = Object.fromEntries([...line.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
      snap.etcd[`${l.operation} ${l.resource}`] = value;
    } else if (line.startsWith("process_cpu_seconds_total ")) snap.cpuSeconds = value;
    else if (line.startsWith("process_resident_memory_bytes ")) snap.rssBytes = value;
    else if (line.startsWith("process_start_time_seconds ")) snap.startTime = value;
  }
  return snap;
}

/** A heartbeat is the member's two server-side applies to its SovereignNode (spec, status). */
const isHeartbeat = (key: string) => /^(APPLY|PATCH) sovereignnodes(\/status)?$/.test(key);

interface Snap {
  hub: HubSnapshot;
  hubOp: RegionsOperatorStats;
  members: (RegionsOperatorStats | undefined)[];
}
async function snapshot(): Promise<Snap> {
  const [hubApi, hubOp, ms] = await Promise.all([
    hubApiserver(),
    (hub as OperatorProcess).stats(),
    Promise.all(members.map((m) => m.stats().catch(() => undefined))),
  ]);
  return { hub: hubApi, hubOp, members: ms };
}

/** Request rates and CPU between two snapshots. */
function window(a: Snap, b: Snap) {
  const seconds = (b.hub.at - a.hub.at) / 1000;
  const restarted = a.hub.startTime !== b.hub.startTime;
  const d = diff(a.hub.requests, b.hub.requests);
  const heartbeat = Object.fromEntries(Object.entries(d).filter(([k]) => isHeartbeat(k)));
  const other = Object.fromEntries(Object.entries(d).filter(([k]) => !isHeartbeat(k)));
  const etcd = diff(a.hub.etcd, b.hub.etcd);
  const hubOpRequests = diff(a.hubOp.requests, b.hubOp.requests);
  const memberRequests: Record<string, number> = {};
  let memberCpuUs = 0;
  b.members.forEach((s, i) => {
    const p = a.members[i];
    if (!s || !p) return;
    memberCpuUs += s.cpuUs - p.cpuUs;
    for (const [k, v] of Object.entries(diff(p.requests, s.requests)))
      memberRequests[k] = (memberRequests[k] ?? 0) + v;
  });
  const perS = (o: Record<string, number>) => r2(sum(o) / seconds);
  const byKeyPerS = (o: Record<string, number>, n = 10) =>
    Object.fromEntries(Object.entries(top(o, n)).map(([k, v]) => [k, r2(v / seconds)]));
  const memberHubHeartbeats = Object.entries(memberRequests)
    .filter(([k]) => k.startsWith("member→hub ") && isHeartbeat(k.slice("member→hub ".length)))
    .reduce((n, [, v]) => n + v, 0);
  const hubOwnNodeWrites = Object.entries(hubOpRequests)
    .filter(([k]) => isHeartbeat(k.slice("hub ".length)))
    .reduce((n, [, v]) => n + v, 0);
  return {
    seconds: r1(seconds),
    ...(restarted
      ? { warning: "the hub API server restarted in this window: its counters are not comparable" }
      : {}),
    hubApiserver: {
      note: "apiserver_request_total deltas at the hub API server: every client, including any other work on the shared testbed; heartbeats = APPLY/PATCH sovereignnodes and sovereignnodes/status (the members' two applies per beat, plus the hub's own condition writes, counted apart below)",
      requestsPerSecond: perS(d),
      heartbeatRequestsPerSecond: perS(heartbeat),
      otherRequestsPerSecond: perS(other),
      heartbeatByKeyPerSecond: byKeyPerS(heartbeat),
      otherByKeyPerSecond: byKeyPerS(other),
      etcdWritesPerSecond: {
        sovereignnodes: r2(
          ((etcd["update sovereignnodes"] ?? 0) + (etcd["create sovereignnodes"] ?? 0)) / seconds,
        ),
        regionworks: r2(
          ((etcd["update regionworks"] ?? 0) +
            (etcd["create regionworks"] ?? 0) +
            (etcd["delete regionworks"] ?? 0)) /
            seconds,
        ),
        federatedruns: r2(
          ((etcd["update federatedruns"] ?? 0) + (etcd["create federatedruns"] ?? 0)) / seconds,
        ),
      },
      apiserverCpuCores: r2((b.hub.cpuSeconds - a.hub.cpuSeconds) / seconds),
      apiserverRssMiB: mib(b.hub.rssBytes),
    },
    operators: {
      note: "requests counted at the client, in each operator process",
      membersToHubHeartbeatPerSecond: r2(memberHubHeartbeats / seconds),
      hubOwnSovereignNodeWritesPerSecond: r2(hubOwnNodeWrites / seconds),
      hubRequestsPerSecond: byKeyPerS(hubOpRequests),
      memberRequestsPerSecond: byKeyPerS(memberRequests, 14),
      hubCpuCores: r2((b.hubOp.cpuUs - a.hubOp.cpuUs) / 1e6 / seconds),
      membersCpuCores: r2(memberCpuUs / 1e6 / seconds),
      hubReconciles: diff(a.hubOp.reconciles, b.hubOp.reconciles),
    },
  };
}

/** Exact percentiles and the peak queue depth of the hub's controllers within [from, to] (Date.now()). */
function hubWindow(s: RegionsOperatorStats, from: number, to: number) {
  const out: Record<string, unknown> = {};
  const controllers = new Set([...Object.keys(s.reconcileTimes ?? {}), ...Object.keys(s.queueDepths ?? {})]);
  for (const c of controllers) {
    const inWin = (xs: [number, number][] | undefined) => (xs ?? []).filter(([t]) => t >= from && t <= to);
    const rec = inWin(s.reconcileTimes?.[c]).map(([, v]) => v * 1000);
    const wait = inWin(s.queueWaits?.[c]).map(([, v]) => v * 1000);
    const depthsAll = s.queueDepths?.[c] ?? [];
    // The depth when the window opened counts too.
    const before = depthsAll.filter(([t]) => t < from).at(-1)?.[1] ?? 0;
    const depths = [before, ...inWin(depthsAll).map(([, v]) => v)];
    out[c] = {
      reconciles: rec.length,
      reconcile: summary(rec),
      queueWait: summary(wait),
      maxQueueDepth: Math.max(...depths),
    };
  }
  return out;
}

// ---------------------------------------------------------------------------------------
async function main(): Promise<Record<string, unknown>> {
  cleanup.push({
    what: "the GPU nodes",
    fn: () =>
      Promise.all(
        clusters.map((c) => c.core.deleteCollectionNode({ labelSelector: `${BENCH_LABEL}=${tag}` })),
      ),
  });
  cleanup.push({
    what: "the AttestationPolicy",
    fn: () =>
      custom
        .deleteClusterCustomObject({ ...GROUP, plural: "attestationpolicies", name: policy })
        .catch(ignore404),
  });
  cleanup.push({
    what: "the regions (SovereignNodes, access, RegionWorks)",
    fn: () =>
      poolAlways(regions.length, 4, async (i) => {
        const r = regions[i] as (typeof regions)[number];
        await custom
          .deleteClusterCustomObject({ ...GROUP, plural: "sovereignnodes", name: r.name })
          .catch(ignore404);
        await revokeRegionAccess(admin, r.name);
      }),
  });
  cleanup.push({
    what: "the hub namespace",
    fn: () => hubCore.deleteNamespace({ name: ns }).catch(ignore404),
  });
  cleanup.push({ what: "leftover learner pods and key secrets", fn: deleteOurLearnerPods });
  cleanup.push({ what: "leftover run finalizers", fn: () => stripRunFinalizers(custom, ns) });
  cleanup.push({ what: "the operator processes", fn: () => Promise.all(alive().map((o) => o.stop())) });

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
  // A few attested kwok GPU nodes per cluster: every region on a cluster reports them (its
  // inventory is the cluster's), so each offers the attested GPUs a run needs.
  for (const c of clusters) {
    for (let i = 0; i < GPU_NODES_PER_CLUSTER; i++) {
      const name = `${tag}-gpu-${i}`;
      const node = kwokGpuNode(name, c.cluster, GPUS_PER_NODE, { [BENCH_LABEL]: tag });
      await retrying(() => c.core.createNode({ body: node }));
    }
  }

  // Region access and scoped credentials, as a hub admin hands them out.
  const t = now();
  const creds = new Array<string>(R);
  await pool(R, 4, async (i) => {
    const r = regions[i] as (typeof regions)[number];
    creds[i] = (await issueRegionCredential(admin, r.name, { ttlSeconds: 3 * 3600 })).kubeconfig;
  });
  const credentialsSeconds = (now() - t) / 1000;
  log(`${R} region credentials issued in ${credentialsSeconds.toFixed(1)} s`);

  // The hub, alone: the baseline with 0 regions.
  hub = new OperatorProcess("hub", {
    role: "hub",
    kubeconfig: tb.cluster("hub").kubeconfig,
    namespace: ns,
    regionSelector: `${FLEET_LABEL}=${tag}`,
    workers,
    logFile: join(logDir, `${tag}-hub.log`),
  });
  await hub.whenReady();
  await sleep(3_000);
  loadAt.hubOnly = load();
  const s0 = await snapshot();
  await sleep(Math.min(steadyMs, 30_000));
  const s0b = await snapshot();
  const baselineWindow = window(s0, s0b);
  const hubIdleRss = hub.rss();
  log(
    `baseline (hub, 0 regions): hub API ${baselineWindow.hubApiserver.requestsPerSecond} req/s, ` +
      `hub RSS ${mib(hubIdleRss)} MiB, CPU ${baselineWindow.operators.hubCpuCores} cores`,
  );

  // The members, a few at a time, while memory lasts; each region accepted once it registers.
  loadAt.beforeMembers = load();
  memAt.beforeMembersAvailableMiB = r1(memAvailableMiB());
  const registeredAt = new Array<number>(R).fill(Number.NaN);
  const readyAt = new Array<number>(R).fill(Number.NaN);
  const startedIdx: number[] = [];
  let stoppedBecause: string | undefined;
  let accepting = true;
  let acceptorPasses = 0;
  let membersReady = 0;
  const acceptor = (async () => {
    while (accepting) {
      const list = (await Promise.race([
        custom.listClusterCustomObject({
          ...GROUP,
          plural: "sovereignnodes",
          labelSelector: `${FLEET_LABEL}=${tag}`,
        }),
        sleep(15_000).then(() => Promise.reject(new Error("no answer within 15 s"))),
      ]).catch((e: unknown) => {
        log(`listing the SovereignNodes: ${(e as Error).message}`);
        return { items: [] };
      })) as { items: SovereignNode[] };
      acceptorPasses++;
      const toAccept: string[] = [];
      for (const n of list.items) {
        const i = regionIndex.get(n.metadata.name ?? "");
        if (i === undefined) continue;
        if (Number.isNaN(registeredAt[i] as number)) registeredAt[i] = now();
        if (!n.spec.accepted) toAccept.push(n.metadata.name ?? "");
        const ready = n.status?.conditions?.find((c) => c.type === "Ready");
        if (ready?.status === "True" && Number.isNaN(readyAt[i] as number)) readyAt[i] = now();
      }
      await pool(toAccept.length, 4, async (j) => {
        await custom
          .patchClusterCustomObject(
            {
              ...GROUP,
              plural: "sovereignnodes",
              name: toAccept[j] as string,
              body: { spec: { accepted: true } },
            },
            mergePatch,
          )
          .catch((e: unknown) => log(`accepting ${toAccept[j]}: ${(e as Error).message}`));
      });
      await sleep(500);
    }
  })();
  cleanup.push({
    what: "the acceptor",
    fn: async () => {
      accepting = false;
      await acceptor;
    },
  });
  const rssSeries: number[][] = [];
  const tMembers = now();
  const sampler = setInterval(() => {
    const memberRss = members.map((m) => m.sample());
    hub?.sample();
    rssSeries.push([
      r1((now() - tMembers) / 1000),
      members.length,
      mib(memberRss.filter((x) => !Number.isNaN(x)).reduce((a, b) => a + b, 0)),
      mib(hub?.rss() ?? Number.NaN),
      r1(memAvailableMiB()),
    ]);
  }, 1_000);
  cleanup.push({ what: "the RSS sampler", fn: async () => clearInterval(sampler) });
  const memberRssEstimate = { bytes: 200 * MiB };
  await pool(R, startConcurrency, async (i) => {
    if (stoppedBecause) return;
    const r = regions[i] as (typeof regions)[number];
    // A member settles at about memberRssEstimate; keep the floor free for the rest of the machine.
    const avail = memAvailableMiB();
    if (avail - memberRssEstimate.bytes / MiB < minAvailableMiB) {
      stoppedBecause = `MemAvailable ${avail.toFixed(0)} MiB: one more member (about ${mib(memberRssEstimate.bytes)} MiB) would leave less than --min-available-mib ${minAvailableMiB}`;
      log(`stopping at ${members.length} members: ${stoppedBecause}`);
      return;
    }
    const m = new OperatorProcess(`member ${r.name}`, {
      role: "member",
      region: r.name,
      cluster: r.cluster,
      regionKubeconfig: tb.cluster(r.cluster).kubeconfig,
      hubKubeconfigYaml: creds[i] as string,
      labels: { [FLEET_LABEL]: tag, [SLOT_LABEL]: String(i) },
      policy,
      workers,
      insecureSkipAttestation: skipAttestation,
      heartbeatIntervalMs: heartbeatMs,
      logFile: join(logDir, `${tag}-member-r${String(i).padStart(3, "0")}.log`),
    });
    members.push(m);
    startedIdx.push(i);
    try {
      await m.whenReady();
    } catch (err) {
      stoppedBecause ??= `member ${r.name} failed to start: ${(err as Error).message.split("\n")[0]}`;
      log(stoppedBecause);
      return;
    }
    const settled = m.rss();
    if (settled > memberRssEstimate.bytes) memberRssEstimate.bytes = settled;
    if (++membersReady % 10 === 0)
      log(
        `  ${membersReady} members started; MemAvailable ${memAvailableMiB().toFixed(0)} MiB; load ${load()}`,
      );
  });
  const started = members.filter((m) => !m.exitedWith && m.ready);
  const S = startedIdx.filter((_, j) => members[j]?.ready && !members[j]?.exitedWith);
  if (S.length < REGIONS_PER_RUN) throw new Error(`only ${S.length} members started: ${stoppedBecause}`);
  const allForked = (now() - tMembers) / 1000;
  log(
    `${started.length} members started in ${allForked.toFixed(1)} s; waiting for every region Ready at the hub`,
  );
  let lastProgress = now();
  await waitFor(
    () => {
      if (now() - lastProgress > 15_000) {
        lastProgress = now();
        const reg = S.filter((i) => !Number.isNaN(registeredAt[i] as number)).length;
        const rdy = S.filter((i) => !Number.isNaN(readyAt[i] as number)).length;
        log(`  ${reg}/${S.length} registered, ${rdy} Ready at the hub (acceptor pass ${acceptorPasses})`);
      }
      return S.every((i) => !Number.isNaN(readyAt[i] as number));
    },
    `${S.length} regions Ready at the hub`,
    timeoutMs,
  );
  const regionsReadySeconds = (Math.max(...S.map((i) => readyAt[i] as number)) - tMembers) / 1000;
  const forkToReady = S.map(
    (i) => (readyAt[i] as number) - (members[startedIdx.indexOf(i)] as OperatorProcess).forkedAt,
  );
  const forkToProcessReady = started.map((m) => m.readyAt - m.forkedAt);
  log(
    `all ${S.length} regions Ready at the hub ${regionsReadySeconds.toFixed(1)} s after the first member started`,
  );

  // Every region is in: the acceptor's polling stops, so it is not counted below.
  accepting = false;
  await acceptor;
  // Steady state: heartbeats only.
  await sleep(Math.min(heartbeatMs, 10_000));
  loadAt.steady = load();
  memAt.steadyAvailableMiB = r1(memAvailableMiB());
  const s1 = await snapshot();
  await sleep(steadyMs);
  const s2 = await snapshot();
  const steady = window(s1, s2);
  const steadyMemberRss = members.map((m) => m.rss());
  const steadyMemberPss = members.map((m) => m.pss());
  const steadyHubRss = hub.rss();
  log(
    `steady state (${S.length} regions, no runs): hub API ${steady.hubApiserver.requestsPerSecond} req/s ` +
      `(heartbeats ${steady.hubApiserver.heartbeatRequestsPerSecond}/s, other ${steady.hubApiserver.otherRequestsPerSecond}/s), ` +
      `SovereignNode etcd writes ${steady.hubApiserver.etcdWritesPerSecond.sovereignnodes}/s; hub CPU ${steady.operators.hubCpuCores}, ` +
      `members CPU ${steady.operators.membersCpuCores} cores`,
  );

  // Watch each cluster's learner pods: a region's are known by the work annotation.
  const runNames = Array.from({ length: N }, (_, i) => `run-${String(i).padStart(5, "0")}`);
  const runIndex = new Map(runNames.map((n, i) => [n, i]));
  const placement = runNames.map((_, i) => placementOf(i, S));
  const seenAt = placement.map((p) => p.map(() => Number.NaN));
  const allAt = new Array<number>(N).fill(Number.NaN);
  let runsDone = 0;
  const livePods = new Set<string>();
  let foreign = 0;
  const watches: AbortController[] = [];
  let watching = true;
  const onPod = (cluster: string) => (phase: string, pod: V1Pod) => {
    const owner = pod.metadata?.annotations?.["sovereign.ai/region-work"] ?? "";
    const [hubNs = "", work = ""] = owner.split("/");
    const ri = regionIndex.get(hubNs.slice(REGION_NAMESPACE_PREFIX.length));
    const key = `${cluster}/${pod.metadata?.name}`;
    if (ri === undefined || !work.startsWith(`${ns}.`)) {
      foreign++;
      return;
    }
    if (phase === "DELETED") {
      livePods.delete(key);
      return;
    }
    livePods.add(key);
    const i = runIndex.get(work.slice(ns.length + 1));
    if (i === undefined) return;
    const slot = (placement[i] as number[]).indexOf(ri);
    const seen = seenAt[i] as number[];
    if (slot < 0 || !Number.isNaN(seen[slot] as number)) return;
    seen[slot] = now();
    if (seen.every((x) => !Number.isNaN(x))) {
      allAt[i] = now();
      runsDone++;
    }
  };
  const watchCluster = async (c: (typeof clusters)[number]) => {
    const w = await new Watch(c.kc).watch(
      `/api/v1/namespaces/${LEARNER_NAMESPACE}/pods`,
      { labelSelector: WORK_LABEL },
      onPod(c.cluster),
      () => {
        if (watching) setTimeout(() => void watchCluster(c), 500);
      },
    );
    watches.push(w);
  };
  await Promise.all(clusters.map(watchCluster));
  cleanup.push({
    what: "the pod watches",
    fn: async () => {
      watching = false;
      for (const w of watches) w.abort();
    },
  });

  // Apply the runs.
  loadAt.beforeApply = load();
  const s3 = await snapshot();
  const wall3 = Date.now();
  const applyStart = new Array<number>(N).fill(Number.NaN);
  const t0 = now();
  await pool(N, applyConcurrency, async (i) => {
    const slots = (placement[i] as number[]).map(String);
    const run = new RunBuilder(runNames[i] as string, ns)
      .placement({
        minRegions: REGIONS_PER_RUN,
        maxRegions: REGIONS_PER_RUN,
        regionSelector: {
          matchLabels: { [FLEET_LABEL]: tag },
          matchExpressions: [{ key: SLOT_LABEL, operator: "In", values: slots }],
        },
      })
      .learners(1, 1)
      .obj();
    run.spec.attestation.policyRef.name = policy;
    delete run.metadata.generation;
    applyStart[i] = now();
    await retrying(() =>
      custom.createNamespacedCustomObject({ ...GROUP, plural: "federatedruns", namespace: ns, body: run }),
    );
  });
  const applySeconds = (now() - t0) / 1000;
  log(`${N} FederatedRuns created in ${applySeconds.toFixed(1)} s`);
  let complete = true;
  let lastLog = now();
  try {
    await waitFor(
      () => {
        if (now() - lastLog > 15_000) {
          lastLog = now();
          log(`  ${runsDone}/${N} runs have their learner in each of their regions; load ${load()}`);
        }
        return runsDone === N;
      },
      `learner pods of all ${N} runs`,
      timeoutMs,
    );
  } catch (err) {
    if (interrupt.signal.aborted || alive().some((o) => o.ready && o.exitedWith)) throw err;
    complete = false;
    log(`${(err as Error).message}: reporting the ${runsDone} runs that completed`);
  }
  const tDone = complete ? Math.max(...allAt) : now();
  const doneCount = runsDone;
  loadAt.allCreated = load();
  const s4 = await snapshot();
  const wall4 = Date.now();
  const runsWindow = window(s3, s4);
  const latency = allAt.map((t, i) => t - (applyStart[i] as number)).filter((x) => !Number.isNaN(x));
  const perRegionPod = seenAt
    .flatMap((p, i) => p.map((t) => t - (applyStart[i] as number)))
    .filter((x) => !Number.isNaN(x));
  const createdSeconds = (tDone - t0) / 1000;
  const hubDetail = await hub.stats(true);
  const hubDuringRuns = hubWindow(hubDetail, wall3, wall4);
  const hubDuringSteady = hubWindow(hubDetail, s1.hubOp.at, s2.hubOp.at);
  const peakMemberRss = members.map((m) => m.peakRssBytes);
  const peakHubRss = hub.peakRssBytes;
  const runsMemberRss = members.map((m) => m.rss());
  const runsMemberPss = members.map((m) => m.pss());
  // What a run's status costs with this many regions: placement lists every region not chosen.
  const sample = (await custom.getNamespacedCustomObject({
    ...GROUP,
    plural: "federatedruns",
    namespace: ns,
    name: runNames[0] as string,
  })) as FederatedRun;
  const runObject = {
    bytes: JSON.stringify(sample).length,
    statusRegionsEntries: (sample.status as { regions?: unknown[] } | undefined)?.regions?.length ?? 0,
  };
  log(
    `${complete ? "all" : `${doneCount}/${N}`} runs have their learners ${createdSeconds.toFixed(1)} s after the first apply: ` +
      `p50 ${percentile(latency, 50).toFixed(0)} ms p99 ${percentile(latency, 99).toFixed(0)} ms`,
  );

  // Delete the runs while the operators run; time until every learner pod is gone.
  // One delete per run (a deleteCollection of hundreds of runs can outlast the API server's
  // 60 s request timeout on a loaded machine); a failure here is reported, not fatal.
  const tDelete = now();
  let deletion: Record<string, unknown>;
  try {
    await pool(N, 8, async (i) => {
      await retrying(() =>
        custom.deleteNamespacedCustomObject({
          ...GROUP,
          plural: "federatedruns",
          namespace: ns,
          name: runNames[i] as string,
        }),
      ).catch(ignore404);
    });
    await waitFor(
      async () => {
        const left = (await custom.listNamespacedCustomObject({
          ...GROUP,
          plural: "federatedruns",
          namespace: ns,
        })) as {
          items: unknown[];
        };
        return left.items.length === 0 && livePods.size === 0;
      },
      "every run deleted and its learner pods gone",
      deleteTimeoutMs,
    );
    deletion = { seconds: r1((now() - tDelete) / 1000) };
  } catch (err) {
    if (interrupt.signal.aborted) throw err;
    deletion = { error: (err as Error).message, podsLeft: livePods.size };
  }
  loadAt.end = load();
  clearInterval(sampler);

  const sumBytes = (xs: number[]) => xs.filter((x) => !Number.isNaN(x)).reduce((a, b) => a + b, 0);
  const memberReadyRss = started.map((m) => m.ready?.rssBytes ?? Number.NaN);
  const dist = (xs: number[]) => ({
    min: mib(Math.min(...xs)),
    p50: mib(percentile(xs, 50)),
    max: mib(Math.max(...xs)),
    total: mib(sumBytes(xs)),
  });
  return {
    bench: "regions",
    measuredAt: new Date().toISOString(),
    command: `node bench/regions.ts ${process.argv.slice(2).join(" ")}`.trim(),
    git: gitState(),
    machine: {
      cpus: cpus().length,
      totalMemMiB: mib(totalmem()),
      node: process.version,
      loadavg: loadAt,
      memAvailable: memAt,
    },
    sizes: {
      regionsAsked: R,
      regionsStarted: S.length,
      stoppedBecause: stoppedBecause ?? null,
      clusters: clusters.map((c) => c.cluster),
      regionsPerCluster: clusters.map((c) => S.filter((i) => regions[i]?.cluster === c.cluster).length),
      runs: N,
      regionsPerRun: REGIONS_PER_RUN,
      learnersPerRegion: 1,
      attestation: skipAttestation
        ? "skipped: members release pods"
        : "gated: learner pods stay behind the gate (creation only)",
      heartbeatIntervalMs: heartbeatMs,
      workers,
      startConcurrency,
    },
    registration: {
      credentialsSeconds: r1(credentialsSeconds),
      allMembersStartedSeconds: r1(allForked),
      allRegionsReadySeconds: r1(regionsReadySeconds),
      forkToProcessReady: summary(forkToProcessReady),
      forkToRegionReadyAtHub: summary(forkToReady),
    },
    baselineHubAlone: baselineWindow,
    steadyState: { regions: S.length, ...steady, hubControllers: hubDuringSteady },
    runs: {
      what: "create request sent → the run's learner pod seen (watch) in each of its 3 regions",
      complete,
      runsWithAllLearners: doneCount,
      applySeconds: r2(applySeconds),
      applyToAllLearners: summary(latency),
      applyToEachRegionsLearner: summary(perRegionPod),
      seconds: r1(createdSeconds),
      runsPerSecond: r2(doneCount / createdSeconds),
      window: runsWindow,
      hubControllers: hubDuringRuns,
      foreignLearnerPodsSeen: foreign,
      runObject,
      deletion,
    },
    memory: {
      note: "VmRSS from /proc, sampled every second; ready = caches synced (just after start). RSS counts the pages the processes share (the node binary, about 60 MiB) in each of them; Pss splits them, so the Pss total is what the members cost the machine",
      hub: {
        idleNoRegionsMiB: mib(hubIdleRss),
        steadyMiB: mib(steadyHubRss),
        peakMiB: mib(peakHubRss),
      },
      membersAtReady: dist(memberReadyRss),
      membersSteady: dist(steadyMemberRss),
      membersAfterRuns: dist(runsMemberRss),
      membersPssSteady: dist(steadyMemberPss),
      membersPssAfterRuns: dist(runsMemberPss),
      membersPeak: dist(peakMemberRss),
      series: {
        columns: ["secondsSinceFirstMember", "members", "membersRssMiB", "hubRssMiB", "memAvailableMiB"],
        rows: rssSeries.filter((_, i) => i % 5 === 0),
      },
    },
    retries,
  };
}

/**
 * The 3 regions of run i: one on each cluster, spread evenly over the started regions.
 * Placement ranks eligible regions by attested GPUs, then by name; regions sharing a cluster
 * report the same inventory, so with only the fleet selector every run would land on the
 * same first 3 names. And learner pods are named after the run (learner-<workId>-<n>, workId
 * from `namespace.name`), not the region, so two regions of one run on one cluster would
 * both want the same pod name: one region per cluster per run.
 */
function placementOf(i: number, started: readonly number[]): number[] {
  const byCluster = clusters.map((c) => started.filter((k) => regions[k]?.cluster === c.cluster));
  return byCluster.slice(0, REGIONS_PER_RUN).map((ks) => ks[i % ks.length] as number);
}

/** Learner pods (and their key Secrets) of this benchmark's regions that their member did not remove. */
async function deleteOurLearnerPods(): Promise<void> {
  const prefix = `${REGION_NAMESPACE_PREFIX}${tag}-`;
  for (const c of clusters) {
    await deleteLearnerPods(c.core, (p) =>
      (p.metadata?.annotations?.["sovereign.ai/region-work"] ?? "").startsWith(prefix),
    );
  }
}

// ---------------------------------------------------------------------------------------
function print(r: Record<string, unknown>): void {
  const x = r as {
    sizes: {
      regionsStarted: number;
      regionsAsked: number;
      stoppedBecause: string | null;
      regionsPerCluster: number[];
    };
    registration: {
      allRegionsReadySeconds: number;
      forkToRegionReadyAtHub: ReturnType<typeof summary>;
      forkToProcessReady: ReturnType<typeof summary>;
    };
    baselineHubAlone: ReturnType<typeof window>;
    steadyState: ReturnType<typeof window> & { hubControllers: Record<string, unknown> };
    runs: {
      complete: boolean;
      runsWithAllLearners: number;
      applyToAllLearners: ReturnType<typeof summary>;
      applyToEachRegionsLearner: ReturnType<typeof summary>;
      seconds: number;
      runsPerSecond: number;
      window: ReturnType<typeof window>;
      hubControllers: Record<
        string,
        {
          reconcile: ReturnType<typeof summary>;
          queueWait: ReturnType<typeof summary>;
          maxQueueDepth: number;
          reconciles: number;
        }
      >;
      deletion: Record<string, unknown>;
    };
    memory: Record<string, Record<string, number>>;
    machine: { loadavg: unknown };
  };
  console.log(
    `\nregions: ${x.sizes.regionsStarted}/${x.sizes.regionsAsked} member processes (${x.sizes.regionsPerCluster.join("/")} per cluster), ` +
      `${N} runs × ${REGIONS_PER_RUN} regions; ${cpus().length} CPUs, load ${JSON.stringify(x.machine.loadavg)}`,
  );
  if (x.sizes.stoppedBecause) console.log(`  stopped starting members: ${x.sizes.stoppedBecause}`);
  console.log(
    `  registration: all regions Ready at the hub ${x.registration.allRegionsReadySeconds} s after the first fork; ` +
      `fork → process ready p50 ${x.registration.forkToProcessReady.p50Ms} ms p99 ${x.registration.forkToProcessReady.p99Ms} ms; ` +
      `fork → Ready at hub p50 ${x.registration.forkToRegionReadyAtHub.p50Ms} ms p99 ${x.registration.forkToRegionReadyAtHub.p99Ms} ms`,
  );
  for (const [label, w] of [
    ["hub alone (baseline)", x.baselineHubAlone],
    ["steady, no runs", x.steadyState],
    ["runs applied → done", x.runs.window],
  ] as const) {
    console.log(
      `  ${label.padEnd(22)} hub API ${w.hubApiserver.requestsPerSecond} req/s: heartbeats ${w.hubApiserver.heartbeatRequestsPerSecond}/s, ` +
        `other ${w.hubApiserver.otherRequestsPerSecond}/s; SovereignNode etcd writes ${w.hubApiserver.etcdWritesPerSecond.sovereignnodes}/s; ` +
        `members' heartbeat requests ${w.operators.membersToHubHeartbeatPerSecond}/s; CPU hub ${w.operators.hubCpuCores}, ` +
        `members ${w.operators.membersCpuCores}, hub API server ${w.hubApiserver.apiserverCpuCores} cores (${w.seconds} s)`,
    );
  }
  const rr = x.runs;
  console.log(
    `  runs: ${rr.complete ? "all" : `${rr.runsWithAllLearners}/${N} (timed out)`} in ${rr.seconds} s = ${rr.runsPerSecond} runs/s; ` +
      `apply → learner in all 3 regions p50 ${rr.applyToAllLearners.p50Ms} ms p99 ${rr.applyToAllLearners.p99Ms} ms max ${rr.applyToAllLearners.maxMs} ms; ` +
      `→ each region's learner p50 ${rr.applyToEachRegionsLearner.p50Ms} ms p99 ${rr.applyToEachRegionsLearner.p99Ms} ms`,
  );
  for (const [c, v] of Object.entries(rr.hubControllers)) {
    console.log(
      `    hub ${c.padEnd(14)} ${v.reconciles} reconciles: p50 ${v.reconcile.p50Ms} ms p99 ${v.reconcile.p99Ms} ms max ${v.reconcile.maxMs} ms; ` +
        `queue wait p99 ${v.queueWait.p99Ms} ms; max queue depth ${v.maxQueueDepth}`,
    );
  }
  const m = x.memory;
  console.log(
    `  RSS hub: ${m.hub?.idleNoRegionsMiB} MiB alone, ${m.hub?.steadyMiB} steady, peak ${m.hub?.peakMiB}; members steady ` +
      `p50 ${m.membersSteady?.p50} (${m.membersSteady?.min}–${m.membersSteady?.max}) MiB, total ${m.membersSteady?.total} MiB; ` +
      `peak total ${m.membersPeak?.total} MiB; members' Pss steady p50 ${m.membersPssSteady?.p50} MiB, total ${m.membersPssSteady?.total} MiB`,
  );
  if (rr.deletion.seconds !== undefined)
    console.log(`  delete all runs → learners gone: ${rr.deletion.seconds} s`);
}

await finish(
  main,
  cleanup,
  leftovers,
  join(resultsDir, `${args.out ?? (quick ? "regions-quick" : "regions")}.json`),
  print,
);
