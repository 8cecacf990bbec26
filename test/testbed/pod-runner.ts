// Testbed only: kwok nodes run no containers, so this runs the command of each learner pod
// bound to a kwok GPU node as a local process, with the pod's environment (literal values,
// Secret keys, the pod's own name), its Secret volumes written to a temporary directory, and
// a per-region data directory; when the process exits it reports the exit on the pod's status,
// as a kubelet would. Production runs the same learner code inside the real container; the
// operator never knows this runner exists.
import { type ChildProcess, spawn } from "node:child_process";
import { createWriteStream } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  CoreV1Api,
  type KubeConfig,
  PatchStrategy,
  setHeaderOptions,
  type V1Pod,
} from "@kubernetes/client-node";

export interface PodRunnerOptions {
  /** Region cluster name → its admin KubeConfig. */
  clusters: Record<string, KubeConfig>;
  namespace: string;
  /** Only pods with these labels (e.g. one run's learners). */
  labelSelector?: string;
  /** Per-region working data (the region's "local" data never leaves it). */
  dataDir: (cluster: string) => string;
  logDir: string;
  /** Where relative commands run from (the repository). */
  cwd: string;
  /** Environment every process starts from (PATH, the SDK's Python, ...). */
  baseEnv: NodeJS.ProcessEnv;
  pollMs?: number;
  onEvent?: (event: { cluster: string; pod: string; kind: "started" | "exited"; code?: number }) => void;
}

interface Running {
  child: ChildProcess;
  secretsDir: string;
}

export class PodRunner {
  readonly #opts: PodRunnerOptions;
  readonly #running = new Map<string, Running>();
  readonly #done = new Set<string>();
  #timer: NodeJS.Timeout | undefined;
  #stopped = false;

  constructor(opts: PodRunnerOptions) {
    this.#opts = opts;
  }

  start(): void {
    const tick = async () => {
      for (const cluster of Object.keys(this.#opts.clusters)) {
        await this.#scan(cluster).catch(() => undefined); // an apiserver restart: try next tick
      }
      if (!this.#stopped) this.#timer = setTimeout(tick, this.#opts.pollMs ?? 1000);
    };
    void tick();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    for (const [key, r] of this.#running) {
      r.child.kill("SIGTERM");
      await rm(r.secretsDir, { recursive: true, force: true });
      this.#running.delete(key);
    }
  }

  /**
   * Chaos: SIGKILLs the learner processes of one cluster, as a region outage kills its
   * containers. Each exit is reported on its pod (Failed, exit 137) as any other exit is.
   * Returns how many were killed.
   */
  kill(cluster: string): number {
    let n = 0;
    for (const [key, r] of this.#running) {
      if (!key.startsWith(`${cluster}/`)) continue;
      r.child.kill("SIGKILL");
      n++;
    }
    return n;
  }

  async #scan(cluster: string): Promise<void> {
    const kc = this.#opts.clusters[cluster] as KubeConfig;
    const core = kc.makeApiClient(CoreV1Api);
    const pods = await core.listNamespacedPod({
      namespace: this.#opts.namespace,
      labelSelector: this.#opts.labelSelector,
    });
    const present = new Set<string>();
    for (const pod of pods.items) {
      const key = `${cluster}/${pod.metadata?.uid}`;
      present.add(key);
      if (this.#running.has(key) || this.#done.has(key)) continue;
      // Bound to a node (the gate released and the scheduler placed it) and not finished.
      if (!pod.spec?.nodeName || pod.metadata?.deletionTimestamp) continue;
      if (pod.status?.phase === "Succeeded" || pod.status?.phase === "Failed") continue;
      await this.#launch(cluster, core, pod, key);
    }
    // Deleted pods: stop their processes, as a kubelet kills a deleted pod's containers.
    for (const [key, r] of this.#running) {
      if (key.startsWith(`${cluster}/`) && !present.has(key)) {
        r.child.kill("SIGTERM");
        this.#running.delete(key);
        await rm(r.secretsDir, { recursive: true, force: true });
      }
    }
  }

  async #launch(cluster: string, core: CoreV1Api, pod: V1Pod, key: string): Promise<void> {
    const name = pod.metadata?.name ?? "";
    const container = pod.spec?.containers[0];
    const argv = [...(container?.command ?? []), ...(container?.args ?? [])];
    if (!container || argv.length === 0) return;
    const secretsDir = await mkdtemp(join(tmpdir(), "sovereign-pod-"));
    const mounts = new Map<string, string>();
    for (const m of container.volumeMounts ?? []) {
      const volume = pod.spec?.volumes?.find((v) => v.name === m.name);
      if (!volume?.secret?.secretName) continue;
      const secret = await core.readNamespacedSecret({
        name: volume.secret.secretName,
        namespace: this.#opts.namespace,
      });
      const dir = join(secretsDir, m.name);
      await mkdir(dir, { recursive: true });
      for (const [k, v] of Object.entries(secret.data ?? {})) {
        await writeFile(join(dir, k), Buffer.from(v, "base64"), { mode: 0o600 });
      }
      mounts.set(m.mountPath, dir);
    }
    const remap = (value: string) => {
      for (const [mountPath, dir] of mounts)
        if (value.startsWith(mountPath)) return dir + value.slice(mountPath.length);
      return value;
    };
    const env: NodeJS.ProcessEnv = { ...this.#opts.baseEnv, SOVEREIGN_DATA_DIR: this.#opts.dataDir(cluster) };
    for (const e of container.env ?? []) {
      if (e.value !== undefined) env[e.name] = remap(e.value);
      else if (e.valueFrom?.secretKeyRef) {
        const ref = e.valueFrom.secretKeyRef;
        const secret = await core.readNamespacedSecret({
          name: ref.name ?? "",
          namespace: this.#opts.namespace,
        });
        const data = secret.data?.[ref.key];
        if (data !== undefined) env[e.name] = Buffer.from(data, "base64").toString("utf8");
      } else if (e.valueFrom?.fieldRef?.fieldPath === "metadata.name") env[e.name] = name;
      else if (e.valueFrom?.fieldRef?.fieldPath === "metadata.namespace") env[e.name] = this.#opts.namespace;
      else if (e.valueFrom?.fieldRef?.fieldPath === "spec.nodeName") env[e.name] = pod.spec?.nodeName ?? "";
    }
    await mkdir(this.#opts.dataDir(cluster), { recursive: true });
    await mkdir(join(this.#opts.logDir, cluster), { recursive: true });
    // stop() may have run while this launch awaited the API: start nothing it cannot stop.
    if (this.#stopped) {
      await rm(secretsDir, { recursive: true, force: true });
      return;
    }
    const log = createWriteStream(join(this.#opts.logDir, cluster, `${name}.log`), { flags: "a" });
    const child = spawn(argv[0] as string, argv.slice(1).map(remap), {
      cwd: this.#opts.cwd,
      env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    child.stdout?.pipe(log);
    child.stderr?.pipe(log);
    this.#running.set(key, { child, secretsDir });
    this.#opts.onEvent?.({ cluster, pod: name, kind: "started" });
    child.on("exit", (code, signal) => {
      const exitCode = code ?? (signal ? 137 : 1);
      this.#running.delete(key);
      this.#done.add(key);
      void rm(secretsDir, { recursive: true, force: true });
      this.#opts.onEvent?.({ cluster, pod: name, kind: "exited", code: exitCode });
      if (this.#stopped) return;
      const now = new Date().toISOString().replace(/\.\d+Z$/, "Z");
      void core
        .patchNamespacedPodStatus(
          {
            name,
            namespace: this.#opts.namespace,
            body: {
              status: {
                phase: exitCode === 0 ? "Succeeded" : "Failed",
                containerStatuses: [
                  {
                    name: container.name,
                    image: container.image ?? "",
                    imageID: "",
                    ready: false,
                    restartCount: 0,
                    started: false,
                    state: {
                      terminated: {
                        exitCode,
                        reason: exitCode === 0 ? "Completed" : "Error",
                        startedAt: now as unknown as Date,
                        finishedAt: now as unknown as Date,
                      },
                    },
                  },
                ],
              },
            },
          },
          setHeaderOptions("Content-Type", PatchStrategy.StrategicMergePatch),
        )
        .catch(() => undefined);
    });
  }
}
