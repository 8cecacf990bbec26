// Helpers shared by bench/reconcile.ts and bench/regions.ts. regions.ts began as a copy of
// reconcile.ts, and the copies had started to drift (only one retried a dropped connection);
// one module keeps the measuring, retrying and cleanup rules the same for both benchmarks.
// Everything a benchmark owns (its Ctrl-C signal, its operator processes, its retry count)
// is passed in, so this module holds no state of its own.
import { execFileSync } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { loadavg } from "node:os";
import { resolve } from "node:path";
import {
  type CoreV1Api,
  type CustomObjectsApi,
  PatchStrategy,
  setHeaderOptions,
  type V1Node,
} from "@kubernetes/client-node";
import type { FederatedRun } from "../crds/types.generated.ts";
import { ATTESTED_LABEL } from "../operator/member/registration.ts";
import { LEARNER_NAMESPACE, WORK_LABEL } from "../operator/member/work-controller.ts";
import { gpuNodeLabels } from "../test/testbed/topology.ts";

const GROUP = { group: "sovereign.ai", version: "v1alpha1" };
const mergePatch = setHeaderOptions("Content-Type", PatchStrategy.MergePatch);

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
export const now = () => performance.now();
export const load = () => loadavg().map((x) => Number(x.toFixed(2)));
export const log = (msg: string) => console.error(`[${new Date().toISOString().slice(11, 19)}] ${msg}`);

const r1 = (x: number) => Number(x.toFixed(1));

export function percentile(values: readonly number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.max(0, Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1))] as number;
}

/** `mean` adds meanMs: reconcile.json has it, regions.json never did. */
export function summary(ms: readonly number[]): {
  count: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
};
export function summary(
  ms: readonly number[],
  opts: { mean: true },
): { count: number; p50Ms: number; p99Ms: number; maxMs: number; meanMs: number };
export function summary(ms: readonly number[], opts: { mean?: boolean } = {}) {
  return {
    count: ms.length,
    p50Ms: r1(percentile(ms, 50)),
    p99Ms: r1(percentile(ms, 99)),
    maxMs: r1(ms.length ? Math.max(...ms) : Number.NaN),
    ...(opts.mean ? { meanMs: r1(ms.reduce((a, b) => a + b, 0) / ms.length) } : {}),
  };
}

export const sum = (o: Record<string, number>) => Object.values(o).reduce((a, b) => a + b, 0);

/** The counters that grew from `a` to `b`, by how much. */
export function diff(a: Record<string, number>, b: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(b)) {
    const d = v - (a[k] ?? 0);
    if (d > 0) out[k] = d;
  }
  return out;
}

export const top = (o: Record<string, number>, n = 12) =>
  Object.fromEntries(
    Object.entries(o)
      .sort((a, b) => b[1] - a[1])
      .slice(0, n),
  );

/** Runs `fn` over `count` items with at most `concurrency` in flight; only `signal` stops it early. */
export async function pool(
  count: number,
  concurrency: number,
  fn: (i: number) => Promise<void>,
  signal?: AbortSignal,
): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, count) }, async () => {
      while (next < count) {
        signal?.throwIfAborted();
        await fn(next++);
      }
    }),
  );
}

/**
 * A request the API server may refuse for a moment (429, 5xx) is tried again; `onRetry` lets
 * the benchmark count the retries it reports.
 */
export async function retrying<T>(fn: () => Promise<T>, onRetry: () => void): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      const code = (err as { code?: number }).code ?? 0;
      // A dropped connection (undici's "fetch failed", e.g. an HTTP/2 stream reset by an
      // overloaded API server) is as retryable as a 429 or a 5xx.
      const dropped = err instanceof TypeError && err.message === "fetch failed";
      if (attempt >= 5 || !(code === 429 || code >= 500 || dropped)) throw err;
      onRetry();
      await sleep(100 * 2 ** attempt);
    }
  }
}

/**
 * Polls until `probe` is truthy; fails on timeout, on `signal` (Ctrl-C), or when `check`
 * throws (each benchmark decides which dead operator process is fatal).
 */
export async function waitFor<T>(
  probe: () => Promise<T | undefined> | T | undefined,
  what: string,
  ms: number,
  opts: { signal: AbortSignal; intervalMs: number; check: () => void },
): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    opts.signal.throwIfAborted();
    opts.check();
    const v = await probe();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms / 1000}s waiting for ${what}`);
    await sleep(opts.intervalMs);
  }
}

/** The commit measured, and any uncommitted operator changes that were measured with it. */
export function gitState() {
  const git = (...a: string[]) =>
    execFileSync("git", a, { cwd: resolve(import.meta.dirname, ".."), encoding: "utf8" });
  try {
    return {
      head: git("rev-parse", "HEAD").trim(),
      uncommittedOperatorFiles: git("status", "--porcelain", "operator", "crds").split("\n").filter(Boolean),
    };
  } catch {
    return undefined;
  }
}

/**
 * Runs the hub can no longer finalize (its process gone) must not keep the namespace.
 * `signal` stops the sweep early; without one it runs after Ctrl-C too.
 */
export async function stripRunFinalizers(
  custom: CustomObjectsApi,
  namespace: string,
  signal?: AbortSignal,
): Promise<void> {
  const list = (await custom.listNamespacedCustomObject({
    ...GROUP,
    plural: "federatedruns",
    namespace,
  })) as {
    items: FederatedRun[];
  };
  await pool(
    list.items.length,
    8,
    async (i) => {
      const name = list.items[i]?.metadata.name ?? "";
      await custom
        .patchNamespacedCustomObject(
          { ...GROUP, plural: "federatedruns", namespace, name, body: { metadata: { finalizers: null } } },
          mergePatch,
        )
        .catch(() => undefined);
      await custom
        .deleteNamespacedCustomObject({ ...GROUP, plural: "federatedruns", namespace, name })
        .catch(() => undefined);
    },
    signal,
  );
}

type Meta = { metadata?: { annotations?: Record<string, string>; labels?: Record<string, string> } };

/** Deletes, at once, the learner pods in one cluster that `ours` picks (their member did not). */
export async function deleteLearnerPods(
  core: CoreV1Api,
  ours: (pod: Meta) => boolean,
  signal?: AbortSignal,
): Promise<void> {
  const pods = (
    await core.listNamespacedPod({ namespace: LEARNER_NAMESPACE, labelSelector: WORK_LABEL })
  ).items.filter(ours);
  await pool(
    pods.length,
    8,
    async (i) => {
      await core
        .deleteNamespacedPod({
          namespace: LEARNER_NAMESPACE,
          name: pods[i]?.metadata?.name ?? "",
          gracePeriodSeconds: 0,
        })
        .catch(() => undefined);
    },
    signal,
  );
}

export type CleanupStep = { what: string; fn: () => Promise<unknown> };

/** Runs `steps` newest first; every step is tried even when an earlier one fails. */
async function runCleanup(steps: CleanupStep[], leftovers: string[]): Promise<void> {
  for (const c of steps.reverse()) {
    try {
      await c.fn();
    } catch (err) {
      leftovers.push(`${c.what}: ${(err as Error).message ?? err}`);
    }
  }
  steps.length = 0;
}

/**
 * Runs the benchmark's `main`, then its cleanup whether `main` succeeded or not, writes the
 * result (with how the cleanup went) to `file`, and exits: 1 on a failure or anything left over.
 * A `print` that throws still leaves the result written.
 */
export async function finish(
  main: () => Promise<Record<string, unknown>>,
  cleanup: CleanupStep[],
  leftovers: string[],
  file: string,
  print?: (result: Record<string, unknown>) => void,
): Promise<never> {
  let result: Record<string, unknown> | undefined;
  let failure: unknown;
  try {
    result = await main();
    print?.(result);
  } catch (err) {
    failure = err;
  }
  const sweepStart = now();
  log("cleaning up");
  await runCleanup(cleanup, leftovers);
  log(
    `cleaned up in ${((now() - sweepStart) / 1000).toFixed(1)} s${leftovers.length ? `; LEFT: ${leftovers}` : ""}`,
  );
  if (result) {
    result.cleanup = { sweepSeconds: r1((now() - sweepStart) / 1000), leftovers };
    await writeFile(file, `${JSON.stringify(result, null, 2)}\n`);
    log(`wrote ${file}`);
  }
  if (failure) {
    console.error(failure);
    process.exit(1);
  }
  process.exit(leftovers.length ? 1 : 0);
}

/**
 * An attested GPU Node for kwok to run, as test/testbed/testbed.ts nodeManifests makes them:
 * kwok manages nodes with its annotation. `labels` mark it as the benchmark's, for cleanup.
 */
export function kwokGpuNode(
  name: string,
  cluster: string,
  gpus: number,
  labels: Record<string, string>,
): V1Node {
  const capacity = {
    cpu: "96",
    memory: "1536Gi",
    pods: "110",
    "ephemeral-storage": "8Ti",
    "nvidia.com/gpu": String(gpus),
  };
  return {
    apiVersion: "v1",
    kind: "Node",
    metadata: {
      name,
      labels: { ...gpuNodeLabels(name, cluster, gpus), ...labels, [ATTESTED_LABEL]: "true" },
      annotations: { "kwok.x-k8s.io/node": "fake" },
    },
    spec: {},
    status: { capacity, allocatable: capacity },
  };
}
