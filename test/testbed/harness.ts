// What tests use to reach the shared testbed. The first call in a process starts the
// testbed if it is not up (the start is locked, so parallel test workers wait for one
// start); tests isolate themselves with unique names and namespaces they delete.
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { KubeConfig } from "@kubernetes/client-node";
import { withLock } from "./lock.ts";
import {
  type ClusterDescription,
  healthy,
  kubectl,
  readDescription,
  type TestbedDescription,
  up,
} from "./testbed.ts";
import { defaultStateDir } from "./topology.ts";

export interface Testbed {
  description: TestbedDescription;
  clusterNames: string[];
  regions: string[];
  cluster(name: string): ClusterDescription;
  /** An admin KubeConfig for the named cluster. */
  kubeConfig(name: string): KubeConfig;
  /** Runs the pinned kubectl against the named cluster; never throws on a non-zero exit. */
  kubectl(
    name: string,
    args: string[],
    opts?: { input?: string },
  ): Promise<{ code: number; stdout: string; stderr: string }>;
}

let cached: Promise<Testbed> | undefined;

export function useTestbed(): Promise<Testbed> {
  cached ??= connect();
  return cached;
}

async function connect(): Promise<Testbed> {
  const stateDir = defaultStateDir();
  let d = await readDescription(stateDir);
  if (!d || !(await healthy(d))) d = await up({ stateDir });
  const description = d;
  const cluster = (name: string): ClusterDescription => {
    const c = description.clusters.find((x) => x.name === name);
    if (!c)
      throw new Error(
        `no cluster '${name}' in the testbed; it has ${description.clusters.map((x) => x.name).join(", ")}`,
      );
    return c;
  };
  return {
    description,
    clusterNames: description.clusters.map((c) => c.name),
    regions: description.clusters.filter((c) => c.role === "region").map((c) => c.name),
    cluster,
    kubeConfig(name) {
      const kc = new KubeConfig();
      kc.loadFromFile(cluster(name).kubeconfig);
      return kc;
    },
    kubectl(name, args, opts = {}) {
      return kubectl(description.binDir, cluster(name).kubeconfig, args, opts.input);
    },
  };
}

/** A DNS-1123 name no other test (or earlier run) uses. */
export function uniqueName(prefix: string): string {
  return `${prefix}-${randomBytes(4).toString("hex")}`;
}

/** Creates a namespace for one test and deletes it when the test ends, pass or fail. */
export async function testNamespace(
  t: { teardown(fn: () => Promise<void> | void): void },
  tb: Testbed,
  cluster: string,
  prefix = "t",
): Promise<string> {
  const ns = uniqueName(prefix);
  const res = await tb.kubectl(cluster, ["create", "namespace", ns]);
  if (res.code !== 0) throw new Error(`creating namespace ${ns} in ${cluster} failed: ${res.stderr}`);
  t.teardown(async () => {
    await tb.kubectl(cluster, ["delete", "namespace", ns, "--wait=false", "--ignore-not-found"]);
  });
  return ns;
}

/**
 * Polls until `probe` returns something other than `undefined` or `false`, and returns it.
 * A probe that throws (an object not created yet, a server restarting) is tried again;
 * on timeout the error names what was awaited and the last failure.
 */
export async function eventually<T>(
  probe: () => Promise<T | undefined | false> | T | undefined | false,
  what: string,
  timeoutMs = 30_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined && v !== false) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(
        `timed out after ${timeoutMs / 1000}s waiting for ${what}${last ? `: ${String(last)}` : ""}`,
      );
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * Held while a test writes `sovereign.ai/attested` on the shared GPU nodes of the region
 * clusters, across ava's worker processes: two such tests never overlap. Released when the
 * test's teardowns run.
 */
export async function holdGpuNodeLabels(t: { teardown(fn: () => void): void }): Promise<void> {
  let release = () => {};
  await new Promise<void>((held) => {
    void withLock(
      join(defaultStateDir(), "locks", "gpu-node-labels"),
      () =>
        new Promise<void>((done) => {
          release = done;
          held();
        }),
    );
  });
  t.teardown(() => release());
}
