// One operator for bench/reconcile.ts, in its own process as operator/main.ts would run it:
// the hub, or one region's member. Forked by the benchmark, driven over the IPC channel;
// it counts every HTTP request its KubeConfigs make (by client, verb and resource) and
// reports those counts, its reconcile metrics, CPU time and memory when asked.
//
// Not part of the operator: leader election, the probe/metrics server and NATS are left
// out (the hub places runs and the members create learner pods without them).
//
// The member is memberControllers (operator/member/setup.ts) as shipped: it acts only on
// learner pods of its own region's work, so members sharing a cluster leave each other alone.
import { createWriteStream } from "node:fs";
import { KubeConfig } from "@kubernetes/client-node";
import { hubControllers } from "../operator/hub/setup.ts";
import { memberControllers } from "../operator/member/setup.ts";
import { reuseConnections } from "../operator/runtime/kubeconfig.ts";
import { jsonLogger, type Logger } from "../operator/runtime/log.ts";
import { OperatorMetrics } from "../operator/runtime/metrics.ts";
import { counted, memberRegistration, type Parts, run, send as sendToParent } from "./lib-operator.ts";

export type OperatorSpec =
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

export interface OperatorStats {
  rssBytes: number;
  heapUsedBytes: number;
  externalBytes: number;
  /** getrusage peak resident set, KiB. */
  maxRssKiB: number;
  cpuUserUs: number;
  cpuSystemUs: number;
  /** `client VERB resource[/subresource]` → HTTP requests made. */
  requests: Record<string, number>;
  /** controller → result → reconciles (controller_runtime_reconcile_total). */
  reconciles: Record<string, Record<string, number>>;
  /** controller → controller_runtime_reconcile_time_seconds sum and count. */
  reconcileSeconds: Record<string, { sum: number; count: number }>;
  informerRestarts: number;
  logLines: number;
}

export type ToOperator = { type: "start"; spec: OperatorSpec } | { type: "stats" | "stop"; id: number };
export type FromOperator =
  | { type: "booted"; stats: OperatorStats }
  | { type: "ready"; stats: OperatorStats }
  | { type: "stats" | "stopped"; id: number; stats: OperatorStats }
  | { type: "failed"; message: string };

const requests = new Map<string, number>();

const count = (kc: KubeConfig, client: string) => counted(kc, client, requests, { apply: false });

let metrics: OperatorMetrics | undefined;
let logLines = 0;

async function stats(): Promise<OperatorStats> {
  const mem = process.memoryUsage();
  const usage = process.resourceUsage();
  const reconciles: OperatorStats["reconciles"] = {};
  const reconcileSeconds: OperatorStats["reconcileSeconds"] = {};
  let informerRestarts = 0;
  if (metrics) {
    for (const v of (await metrics.reconcileTotal.get()).values) {
      const c = String(v.labels.controller);
      reconciles[c] = { ...reconciles[c], [String(v.labels.result)]: v.value };
    }
    for (const v of (await metrics.reconcileTime.get()).values) {
      const c = String(v.labels.controller);
      reconcileSeconds[c] ??= { sum: 0, count: 0 };
      const entry = reconcileSeconds[c];
      if (v.metricName?.endsWith("_sum")) entry.sum = v.value;
      if (v.metricName?.endsWith("_count")) entry.count = v.value;
    }
    for (const v of (await metrics.informerRestarts.get()).values) informerRestarts += v.value;
  }
  return {
    rssBytes: mem.rss,
    heapUsedBytes: mem.heapUsed,
    externalBytes: mem.external,
    maxRssKiB: usage.maxRSS,
    cpuUserUs: usage.userCPUTime,
    cpuSystemUs: usage.systemCPUTime,
    requests: Object.fromEntries(requests),
    reconciles,
    reconcileSeconds,
    informerRestarts,
    logLines,
  };
}

const send = (msg: FromOperator) => sendToParent(msg);

async function start(spec: OperatorSpec): Promise<() => Promise<void>> {
  const file = createWriteStream(spec.logFile, { flags: "a" });
  const log: Logger = jsonLogger({
    level: "warn",
    name: spec.role === "hub" ? "sovereign-hub" : `sovereign-member.${spec.region}`,
    write: (line) => {
      logLines++;
      file.write(`${line}\n`);
    },
  });
  metrics = new OperatorMetrics();
  let parts: Parts;
  if (spec.role === "hub") {
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
process.on("message", (msg: ToOperator) => {
  void (async () => {
    try {
      if (msg.type === "start") {
        await send({ type: "booted", stats: await stats() });
        stop = await start(msg.spec);
        await send({ type: "ready", stats: await stats() });
      } else if (msg.type === "stats") {
        await send({ type: "stats", id: msg.id, stats: await stats() });
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
