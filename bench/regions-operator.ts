// One operator process for bench/regions.ts: the hub, or one region's member, as
// operator/main.ts would run it (hubControllers / memberControllers as shipped, the member
// with its region's scoped hub credential). Forked by the benchmark and driven over IPC.
//
// Unlike bench/reconcile-operator.ts it imports only its own role's code (a member does not
// load the hub's modules: with 100 member processes every MiB counts ×100), and the hub
// records every reconcile's duration, every queue wait and every workqueue depth change, so
// the benchmark gets exact percentiles and the peak queue depth of any time window.
//
// Not part of the operator: leader election, the probe/metrics server and NATS are left out.
import { createWriteStream } from "node:fs";
import type { KubeConfig } from "@kubernetes/client-node";
import type { Logger } from "../operator/runtime/log.ts";
import type { OperatorMetrics } from "../operator/runtime/metrics.ts";
import { counted, memberRegistration, type Parts, run, send as sendToParent } from "./lib-operator.ts";

export type RegionsOperatorSpec =
  | {
      role: "hub";
      kubeconfig: string;
      namespace: string;
      regionSelector: string;
      workers: number;
      logFile: string;
    }
  | {
      role: "member";
      region: string;
      cluster: string;
      regionKubeconfig: string;
      /** The region's scoped hub credential (issueRegionCredential's kubeconfig). */
      hubKubeconfigYaml: string;
      labels: Record<string, string>;
      policy: string;
      workers: number;
      insecureSkipAttestation: boolean;
      heartbeatIntervalMs: number;
      logFile: string;
    };

export interface RegionsOperatorStats {
  /** Date.now() when taken. */
  at: number;
  rssBytes: number;
  heapUsedBytes: number;
  cpuUs: number;
  /** `client VERB resource[/subresource]` → HTTP requests made. */
  requests: Record<string, number>;
  /** controller → reconciles so far. */
  reconciles: Record<string, number>;
  /** Hub only, with `detail`: [Date.now() at the end, seconds] of every reconcile, per controller. */
  reconcileTimes?: Record<string, [number, number][]>;
  /** Hub only, with `detail`: [Date.now(), seconds waited in the queue], per controller. */
  queueWaits?: Record<string, [number, number][]>;
  /** Hub only, with `detail`: [Date.now(), depth] at every depth change, per controller. */
  queueDepths?: Record<string, [number, number][]>;
}

export type ToRegionsOperator =
  | { type: "start"; spec: RegionsOperatorSpec }
  | { type: "stats"; id: number; detail?: boolean }
  | { type: "stop"; id: number };
export type FromRegionsOperator =
  | { type: "ready"; stats: RegionsOperatorStats }
  | { type: "stats" | "stopped"; id: number; stats: RegionsOperatorStats }
  | { type: "failed"; message: string };

const requests = new Map<string, number>();

const count = (kc: KubeConfig, client: string) => counted(kc, client, requests, { apply: true });

let metrics: OperatorMetrics | undefined;
const reconcileTimes: Record<string, [number, number][]> = {};
const queueWaits: Record<string, [number, number][]> = {};
const queueDepths: Record<string, [number, number][]> = {};

/** Records every observation the hub's controllers make, besides the metric itself. */
function recordHub(m: OperatorMetrics): void {
  const tap = (into: Record<string, [number, number][]>) => (labels: unknown, v: unknown) => {
    const c = String((labels as { controller?: string }).controller);
    into[c] ??= [];
    into[c].push([Date.now(), Number(v)]);
  };
  const wrap = (obj: object, method: string, record: (labels: unknown, v: unknown) => void) => {
    const o = obj as Record<string, (labels: unknown, v: unknown) => void>;
    const orig = (o[method] as (labels: unknown, v: unknown) => void).bind(obj);
    o[method] = (labels, v) => {
      if (typeof labels === "object" && labels !== null) record(labels, v);
      orig(labels, v);
    };
  };
  wrap(m.reconcileTime, "observe", tap(reconcileTimes));
  wrap(m.workqueueQueueDuration, "observe", tap(queueWaits));
  wrap(m.workqueueDepth, "set", tap(queueDepths));
}

async function stats(detail = false): Promise<RegionsOperatorStats> {
  const mem = process.memoryUsage();
  const usage = process.resourceUsage();
  const reconciles: Record<string, number> = {};
  if (metrics) {
    for (const v of (await metrics.reconcileTotal.get()).values) {
      const c = String(v.labels.controller);
      reconciles[c] = (reconciles[c] ?? 0) + v.value;
    }
  }
  return {
    at: Date.now(),
    rssBytes: mem.rss,
    heapUsedBytes: mem.heapUsed,
    cpuUs: usage.userCPUTime + usage.systemCPUTime,
    requests: Object.fromEntries(requests),
    reconciles,
    ...(detail ? { reconcileTimes, queueWaits, queueDepths } : {}),
  };
}

const send = (msg: FromRegionsOperator) => sendToParent(msg);

async function start(spec: RegionsOperatorSpec): Promise<() => Promise<void>> {
  const [{ KubeConfig }, { reuseConnections }, { jsonLogger }, { OperatorMetrics }] = await Promise.all([
    import("@kubernetes/client-node"),
    import("../operator/runtime/kubeconfig.ts"),
    import("../operator/runtime/log.ts"),
    import("../operator/runtime/metrics.ts"),
  ]);
  const file = createWriteStream(spec.logFile, { flags: "a" });
  const log: Logger = jsonLogger({
    level: "warn",
    name: spec.role === "hub" ? "sovereign-hub" : `sovereign-member.${spec.region}`,
    write: (line) => file.write(`${line}\n`),
  });
  metrics = new OperatorMetrics();
  let parts: Parts;
  if (spec.role === "hub") {
    recordHub(metrics);
    const { hubControllers } = await import("../operator/hub/setup.ts");
    const kc = new KubeConfig();
    kc.loadFromFile(spec.kubeconfig);
    parts = hubControllers({
      kc: count(reuseConnections(kc), "hub"),
      metrics,
      log,
      workers: spec.workers,
      watchNamespace: spec.namespace,
      nodeLabelSelector: spec.regionSelector,
    });
  } else {
    const { memberControllers } = await import("../operator/member/setup.ts");
    const regionKc = new KubeConfig();
    regionKc.loadFromFile(spec.regionKubeconfig);
    const hubKc = new KubeConfig();
    hubKc.loadFromString(spec.hubKubeconfigYaml);
    parts = memberControllers({
      region: spec.region,
      regionKc: count(reuseConnections(regionKc), "member→region"),
      hubKc: count(reuseConnections(hubKc), "member→hub"),
      metrics,
      log,
      workers: spec.workers,
      heartbeatIntervalMs: spec.heartbeatIntervalMs,
      insecureSkipAttestation: spec.insecureSkipAttestation,
      labels: spec.labels,
      registration: memberRegistration(spec),
    });
  }
  return run(parts, file);
}

let stop: (() => Promise<void>) | undefined;
process.on("message", (msg: ToRegionsOperator) => {
  void (async () => {
    try {
      if (msg.type === "start") {
        stop = await start(msg.spec);
        await send({ type: "ready", stats: await stats() });
      } else if (msg.type === "stats") {
        await send({ type: "stats", id: msg.id, stats: await stats(msg.detail) });
      } else if (msg.type === "stop") {
        await stop?.();
        await send({ type: "stopped", id: msg.id, stats: await stats() });
        process.disconnect();
      }
    } catch (err) {
      await send({
        type: "failed",
        message: err instanceof Error ? (err.stack ?? err.message) : String(err),
      });
    }
  })();
});
// The benchmark went away: stop at once (it cleans up what it created).
process.on("disconnect", () => process.exit(0));
