// The testbed: an etcd, a kube-apiserver + kube-scheduler + kube-controller-manager +
// kwok per cluster (hub and N regions), a hub nats-server and a leaf nats-server per
// region, all on 127.0.0.1. `up` is idempotent: it starts what is missing and keeps
// what runs; the data survives `up` after a crash or a reboot until `down`.
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { ensureBinaries, kwokStagePaths } from "./build.ts";
import { TestbedError } from "./errors.ts";
import { withLock } from "./lock.ts";
import { hubConfig, type NatsUser, regionConfig } from "./nats.ts";
import { ensureClusterPki, pkiPaths } from "./pki.ts";
import {
  assertPortsFree,
  isAlive,
  type ProcessSpec,
  portIsFree,
  probeOnce,
  startProcess,
  stopProcess,
  waitReady,
} from "./processes.ts";
import { type ClusterLayout, defaultStateDir, layoutFor, portsOf, type TestbedLayout } from "./topology.ts";

/** What tests, the demo and the operator read: `<stateDir>/testbed.json`. */
export interface TestbedDescription {
  version: 1;
  stateDir: string;
  binDir: string;
  portBase: number;
  logsDir: string;
  clusters: ClusterDescription[];
  nats: {
    hub: { url: string; leafUrl: string; monitorUrl: string; domain: string; admin: NatsUser };
    regions: Record<string, RegionNatsDescription>;
  };
  processes: ProcessSpec[];
  /** Set once every step of `up` finished (nodes Ready, leaf links connected). */
  complete: boolean;
}

export interface ClusterDescription {
  name: string;
  role: "hub" | "region";
  server: string;
  kubeconfig: string;
  caFile: string;
  jetstreamDomain: string;
  nodes: { name: string; gpus: number; labels: Record<string, string> }[];
}

export interface RegionNatsDescription {
  url: string;
  monitorUrl: string;
  domain: string;
  /** The region operator's user on its own leaf server (unrestricted within the region). */
  member: NatsUser;
  /** What learner pods use: only this region's subjects and domain. */
  learner: NatsUser;
  /** The credential the leaf link logs into the hub with. */
  leaf: NatsUser;
}

type Log = (line: string) => void;
const defaultLog: Log = (l) => console.error(`[testbed] ${l}`);

export function descriptionPath(stateDir: string): string {
  return join(stateDir, "testbed.json");
}

export async function readDescription(stateDir = defaultStateDir()): Promise<TestbedDescription | undefined> {
  const path = descriptionPath(stateDir);
  if (!existsSync(path)) return undefined;
  return JSON.parse(await readFile(path, "utf8")) as TestbedDescription;
}

async function writeDescription(d: TestbedDescription): Promise<void> {
  const path = descriptionPath(d.stateDir);
  await writeFile(`${path}.tmp`, `${JSON.stringify(d, null, 2)}\n`, { mode: 0o600 });
  await rename(`${path}.tmp`, path);
}

const secret = () => randomBytes(18).toString("base64url");

/** NATS credentials are made once per testbed and kept across restarts. */
function credentials(layout: TestbedLayout, previous?: TestbedDescription): TestbedDescription["nats"] {
  const hubAdmin = previous?.nats.hub.admin ?? { user: "hub-admin", password: secret() };
  const regions: Record<string, RegionNatsDescription> = {};
  for (const r of layout.regions) {
    const prev = previous?.nats.regions[r];
    const p = layout.natsRegions[r] as { clientPort: number; monitorPort: number };
    regions[r] = {
      url: `nats://127.0.0.1:${p.clientPort}`,
      monitorUrl: `http://127.0.0.1:${p.monitorPort}`,
      domain: r,
      member: prev?.member ?? { user: `${r}-member`, password: secret() },
      learner: prev?.learner ?? { user: `${r}-learner`, password: secret() },
      leaf: prev?.leaf ?? { user: `leaf-${r}`, password: secret() },
    };
  }
  return {
    hub: {
      url: `nats://127.0.0.1:${layout.natsHub.clientPort}`,
      leafUrl: `nats-leaf://127.0.0.1:${layout.natsHub.leafPort}`,
      monitorUrl: `http://127.0.0.1:${layout.natsHub.monitorPort}`,
      domain: "hub",
      admin: hubAdmin,
    },
    regions,
  };
}

function clusterSpecs(bin: string, layout: TestbedLayout, c: ClusterLayout, logs: string): ProcessSpec[] {
  const dir = join(layout.stateDir, "clusters", c.name);
  const pki = pkiPaths(join(dir, "pki"));
  const kc = pki.kubeconfig;
  const delegated = [
    `--kubeconfig=${kc}`,
    `--authentication-kubeconfig=${kc}`,
    `--authorization-kubeconfig=${kc}`,
    "--leader-elect=false",
    "--bind-address=127.0.0.1",
    "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics",
  ];
  // Scheduler and controller-manager serve self-signed certificates from their own cert
  // dirs; their probe only asks "is it up", so it does not verify them.
  const selfSignedProbe = (port: number) =>
    ({ kind: "https", url: `https://127.0.0.1:${port}/healthz`, insecure: true }) as const;
  return [
    {
      name: `${c.name}/kube-apiserver`,
      command: join(bin, "kube-apiserver"),
      args: [
        `--etcd-servers=http://127.0.0.1:${layout.etcd.clientPort}`,
        `--etcd-prefix=/sovereign-testbed/${c.name}`,
        // etcd compaction is keyspace-wide: let one apiserver do it for all.
        `--etcd-compaction-interval=${c.role === "hub" ? "5m" : "0"}`,
        "--bind-address=127.0.0.1",
        // Otherwise it advertises the machine's first interface address.
        "--advertise-address=127.0.0.1",
        `--secure-port=${c.apiserverPort}`,
        `--tls-cert-file=${pki.serverCert}`,
        `--tls-private-key-file=${pki.serverKey}`,
        `--cert-dir=${join(dir, "apiserver-certs")}`,
        `--client-ca-file=${pki.caCert}`,
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        `--service-account-key-file=${pki.serviceAccountPublicKey}`,
        `--service-account-signing-key-file=${pki.serviceAccountKey}`,
        "--service-cluster-ip-range=10.0.0.0/24",
        "--authorization-mode=Node,RBAC",
        "--allow-privileged=true",
        // No kubelet mounts tokens on kwok nodes, and tests create pods in namespaces
        // the instant they exist: do not make pods wait for the default ServiceAccount.
        "--disable-admission-plugins=ServiceAccount",
        "--endpoint-reconciler-type=none",
        "--enable-priority-and-fairness=false",
        "--profiling=false",
        "--v=1",
      ],
      log: join(logs, `${c.name}-kube-apiserver.log`),
      port: c.apiserverPort,
      probe: {
        kind: "https",
        url: `https://127.0.0.1:${c.apiserverPort}/readyz`,
        ca: pki.caCert,
        cert: pki.adminCert,
        key: pki.adminKey,
      },
    },
    {
      name: `${c.name}/kube-scheduler`,
      command: join(bin, "kube-scheduler"),
      args: [
        ...delegated,
        `--secure-port=${c.schedulerPort}`,
        `--cert-dir=${join(dir, "scheduler-certs")}`,
        "--v=1",
      ],
      log: join(logs, `${c.name}-kube-scheduler.log`),
      port: c.schedulerPort,
      probe: selfSignedProbe(c.schedulerPort),
    },
    {
      name: `${c.name}/kube-controller-manager`,
      command: join(bin, "kube-controller-manager"),
      args: [
        ...delegated,
        `--secure-port=${c.controllerManagerPort}`,
        `--cert-dir=${join(dir, "controller-manager-certs")}`,
        `--root-ca-file=${pki.caCert}`,
        `--service-account-private-key-file=${pki.serviceAccountKey}`,
        "--use-service-account-credentials=false",
        // Nothing here allocates pod CIDRs or talks to a cloud; the rest (namespace
        // deletion, garbage collection, Jobs, ServiceAccounts, tokens) is what tests need.
        "--controllers=*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-node-route-controller",
        "--v=1",
      ],
      log: join(logs, `${c.name}-kube-controller-manager.log`),
      port: c.controllerManagerPort,
      probe: selfSignedProbe(c.controllerManagerPort),
    },
    {
      name: `${c.name}/kwok`,
      command: join(bin, "kwok"),
      args: [
        `--kubeconfig=${kc}`,
        `--config=${join(dir, "kwok-stages.yaml")}`,
        "--manage-all-nodes=false",
        "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
        "--cidr=10.0.0.0/24",
        "--node-ip=127.0.0.1",
        "--node-lease-duration-seconds=40",
        `--server-address=127.0.0.1:${c.kwokPort}`,
      ],
      log: join(logs, `${c.name}-kwok.log`),
      port: c.kwokPort,
      probe: { kind: "http", url: `http://127.0.0.1:${c.kwokPort}/healthz` },
    },
  ];
}

function etcdSpec(bin: string, layout: TestbedLayout, logs: string): ProcessSpec {
  const { clientPort, peerPort } = layout.etcd;
  return {
    name: "etcd",
    command: join(bin, "etcd"),
    args: [
      "--name=testbed",
      `--data-dir=${join(layout.stateDir, "etcd")}`,
      `--listen-client-urls=http://127.0.0.1:${clientPort}`,
      `--advertise-client-urls=http://127.0.0.1:${clientPort}`,
      `--listen-peer-urls=http://127.0.0.1:${peerPort}`,
      `--initial-advertise-peer-urls=http://127.0.0.1:${peerPort}`,
      `--initial-cluster=testbed=http://127.0.0.1:${peerPort}`,
      // A test bed, not a database of record: skip fsync as envtest does.
      "--unsafe-no-fsync",
      "--auto-compaction-retention=1",
      "--quota-backend-bytes=4294967296",
      "--log-level=warn",
    ],
    log: join(logs, "etcd.log"),
    port: clientPort,
    probe: { kind: "http", url: `http://127.0.0.1:${clientPort}/readyz` },
  };
}

function natsSpecs(bin: string, layout: TestbedLayout, logs: string): ProcessSpec[] {
  const dir = join(layout.stateDir, "nats");
  const specs: ProcessSpec[] = [
    {
      name: "hub/nats-server",
      command: join(bin, "nats-server"),
      args: ["-c", join(dir, "hub.conf")],
      log: join(logs, "hub-nats-server.log"),
      port: layout.natsHub.clientPort,
      probe: {
        kind: "http",
        url: `http://127.0.0.1:${layout.natsHub.monitorPort}/healthz?js-enabled-only=true`,
      },
    },
  ];
  for (const r of layout.regions) {
    const p = layout.natsRegions[r] as { clientPort: number; monitorPort: number };
    specs.push({
      name: `${r}/nats-server`,
      command: join(bin, "nats-server"),
      args: ["-c", join(dir, `${r}.conf`)],
      log: join(logs, `${r}-nats-server.log`),
      port: p.clientPort,
      probe: { kind: "http", url: `http://127.0.0.1:${p.monitorPort}/healthz?js-enabled-only=true` },
    });
  }
  return specs;
}

async function writeNatsConfigs(layout: TestbedLayout, nats: TestbedDescription["nats"]): Promise<void> {
  const dir = join(layout.stateDir, "nats");
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const leafUsers = Object.fromEntries(Object.entries(nats.regions).map(([r, d]) => [r, d.leaf]));
  await writeFile(
    join(dir, "hub.conf"),
    hubConfig({
      clientPort: layout.natsHub.clientPort,
      leafPort: layout.natsHub.leafPort,
      monitorPort: layout.natsHub.monitorPort,
      storeDir: join(dir, "hub-js"),
      admin: nats.hub.admin,
      leafUsers,
    }),
    { mode: 0o600 },
  );
  for (const [r, d] of Object.entries(nats.regions)) {
    const p = layout.natsRegions[r] as { clientPort: number; monitorPort: number };
    await writeFile(
      join(dir, `${r}.conf`),
      regionConfig({
        region: r,
        clientPort: p.clientPort,
        monitorPort: p.monitorPort,
        storeDir: join(dir, `${r}-js`),
        hubLeafPort: layout.natsHub.leafPort,
        leafUser: d.leaf,
        member: d.member,
        learner: d.learner,
      }),
      { mode: 0o600 },
    );
  }
}

/**
 * The cluster's kwok nodes as a JSON List. JSON, not YAML: kubectl reads YAML 1.1, where
 * label values such as `on` would turn into booleans.
 */
function nodeManifests(c: ClusterLayout): string {
  const items = c.nodes.map((n) => {
    const capacity: Record<string, string> = n.gpus
      ? {
          cpu: "96",
          memory: "1536Gi",
          pods: "110",
          "ephemeral-storage": "8Ti",
          "nvidia.com/gpu": String(n.gpus),
        }
      : { cpu: "16", memory: "64Gi", pods: "110", "ephemeral-storage": "500Gi" };
    return {
      apiVersion: "v1",
      kind: "Node",
      metadata: { name: n.name, labels: n.labels, annotations: { "kwok.x-k8s.io/node": "fake" } },
      spec: {},
      status: { capacity, allocatable: capacity },
    };
  });
  return JSON.stringify({ apiVersion: "v1", kind: "List", items });
}

export async function kubectl(
  bin: string,
  kubeconfig: string,
  args: string[],
  input?: string,
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile(
      join(bin, "kubectl"),
      [`--kubeconfig=${kubeconfig}`, ...args],
      { maxBuffer: 64 * 1024 * 1024 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === "number" ? err.code : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
    if (input !== undefined) child.stdin?.end(input);
  });
}

/** Seconds from spawn to ready for each server this process started (for docs/testbed.md). */
export const startupSeconds = new Map<string, number>();

/**
 * Starts the servers that are not running and waits until all answer. `recordPids` runs
 * right after spawning, before any wait, so a failed start never leaves a server that
 * `down` does not know about.
 */
async function startAndWait(specs: ProcessSpec[], log: Log, recordPids: () => Promise<void>): Promise<void> {
  const spawnedAt = new Map<string, number>();
  for (const s of specs) {
    if (isAlive(s.pid) && (await probeOnce(s.probe))) continue;
    if (isAlive(s.pid)) {
      // Alive but not answering: give it its start-up window before replacing it.
      try {
        await waitReady(s, 30_000);
        continue;
      } catch {
        await stopProcess(s.pid);
      }
    }
    // A server just stopped (a restart) can hold its port a little longer than its pid lives
    // (CI saw a hub nats-server killed mid-JetStream-shutdown do so): give the port a moment.
    for (let waited = 0; waited < 30_000 && !(await portIsFree(s.port)); waited += 250)
      await new Promise((r) => setTimeout(r, 250));
    await assertPortsFree([{ port: s.port, owner: s.name }]);
    s.pid = startProcess(s);
    spawnedAt.set(s.name, performance.now());
    log(`started ${s.name} (pid ${s.pid}, log ${s.log})`);
  }
  await recordPids();
  await Promise.all(
    specs.map(async (s) => {
      await waitReady(s);
      const t0 = spawnedAt.get(s.name);
      if (t0 !== undefined) startupSeconds.set(s.name, (performance.now() - t0) / 1000);
    }),
  );
}

async function waitForLeafLinks(monitorUrl: string, regions: string[], timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let seen: string[] = [];
  while (Date.now() < deadline) {
    try {
      const res = await fetch(`${monitorUrl}/leafz`);
      const body = (await res.json()) as { leafs?: { name?: string }[] };
      seen = (body.leafs ?? []).map((l) => l.name ?? "");
      if (regions.every((r) => seen.includes(r))) return;
    } catch {
      // monitor not answering yet
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new TestbedError(
    "ServerNotReady",
    `leaf links missing at the hub after ${timeoutMs / 1000}s: connected [${seen.join(", ")}], expected [${regions.join(", ")}]. See the region nats-server logs.`,
  );
}

async function waitNodesReady(bin: string, c: ClusterDescription, timeoutMs = 60_000): Promise<void> {
  const names = c.nodes.map((n) => n.name);
  const res = await kubectl(bin, c.kubeconfig, [
    "wait",
    "--for=condition=Ready",
    `--timeout=${Math.round(timeoutMs / 1000)}s`,
    ...names.map((n) => `node/${n}`),
  ]);
  if (res.code !== 0) {
    throw new TestbedError("ServerNotReady", `nodes of ${c.name} did not become Ready: ${res.stderr.trim()}`);
  }
}

export interface UpOptions {
  stateDir?: string;
  env?: NodeJS.ProcessEnv;
  log?: Log;
}

/** Starts whatever part of the testbed is not running and returns its description. */
export async function up(opts: UpOptions = {}): Promise<TestbedDescription> {
  const env = opts.env ?? process.env;
  const stateDir = opts.stateDir ?? defaultStateDir(env);
  const log = opts.log ?? defaultLog;
  await mkdir(stateDir, { recursive: true });
  return withLock(join(stateDir, ".up.lock"), async () => {
    const previous = await readDescription(stateDir);
    if (previous && (await healthy(previous))) return previous;
    const layout = layoutFor(stateDir, env);
    const previousSpecs = new Map((previous?.processes ?? []).map((p) => [p.name, p]));
    // Refuse early, before building or starting anything, when a port we will need is
    // taken by something that is not ours.
    await assertPortsFree(portsOf(layout).filter(({ owner }) => !isAlive(previousSpecs.get(owner)?.pid)));
    const t0 = performance.now();
    const bin = await ensureBinaries({ env, log });
    const logs = join(stateDir, "logs");
    await mkdir(logs, { recursive: true });
    const nats = credentials(layout, previous);

    const clusters: ClusterDescription[] = [];
    for (const c of layout.clusters) {
      const dir = join(stateDir, "clusters", c.name);
      const pki = await ensureClusterPki(join(dir, "pki"), c.name, c.apiserverPort);
      const stages = await Promise.all(kwokStagePaths(bin).map((p) => readFile(p, "utf8")));
      await writeFile(join(dir, "kwok-stages.yaml"), stages.map((s) => s.trim()).join("\n---\n"));
      clusters.push({
        name: c.name,
        role: c.role,
        server: `https://127.0.0.1:${c.apiserverPort}`,
        kubeconfig: pki.kubeconfig,
        caFile: pki.caCert,
        jetstreamDomain: c.jetstreamDomain,
        nodes: c.nodes,
      });
    }
    await writeNatsConfigs(layout, nats);

    const carry = (s: ProcessSpec): ProcessSpec => ({ ...s, pid: previousSpecs.get(s.name)?.pid });
    const etcd = carry(etcdSpec(bin, layout, logs));
    const perCluster = layout.clusters.map((c) => clusterSpecs(bin, layout, c, logs).map(carry));
    const apiservers = perCluster.map((s) => s[0] as ProcessSpec);
    const controllers = perCluster.flatMap((s) => s.slice(1));
    const [natsHub, ...natsLeaves] = natsSpecs(bin, layout, logs).map(carry) as [
      ProcessSpec,
      ...ProcessSpec[],
    ];
    const description: TestbedDescription = {
      version: 1,
      stateDir,
      binDir: bin,
      portBase: layout.portBase,
      logsDir: logs,
      clusters,
      nats,
      processes: [etcd, ...apiservers, ...controllers, natsHub, ...natsLeaves],
      complete: false,
    };
    const save = () => writeDescription(description);

    // Order matters only where one server needs another: etcd before apiservers,
    // apiservers before their controllers, the hub's NATS before the leaves dial it.
    await startAndWait([etcd, natsHub], log, save);
    await startAndWait([...apiservers, ...natsLeaves], log, save);
    await startAndWait(controllers, log, save);
    for (const c of clusters) {
      const pki = pkiPaths(join(stateDir, "clusters", c.name, "pki"));
      const res = await kubectl(
        bin,
        pki.kubeconfig,
        ["apply", "--server-side", "-f", "-"],
        nodeManifests(layout.clusters.find((l) => l.name === c.name) as ClusterLayout),
      );
      if (res.code !== 0)
        throw new TestbedError("ServerNotReady", `creating the nodes of ${c.name} failed: ${res.stderr}`);
    }
    await Promise.all(clusters.map((c) => waitNodesReady(bin, c)));
    await waitForLeafLinks(nats.hub.monitorUrl, layout.regions);
    description.complete = true;
    await save();
    log(`testbed ready in ${((performance.now() - t0) / 1000).toFixed(1)}s (state ${stateDir})`);
    return description;
  });
}

/** True when a finished `up` left every process alive and answering its probe. */
export async function healthy(d: TestbedDescription): Promise<boolean> {
  if (!d.complete || d.processes.length === 0) return false;
  const results = await Promise.all(
    d.processes.map(async (p) => isAlive(p.pid) && (await probeOnce(p.probe))),
  );
  return results.every(Boolean);
}

export interface ComponentStatus {
  name: string;
  pid?: number;
  alive: boolean;
  ready: boolean;
  log: string;
}

export async function status(stateDir = defaultStateDir()): Promise<ComponentStatus[] | undefined> {
  const d = await readDescription(stateDir);
  if (!d) return undefined;
  return Promise.all(
    d.processes.map(async (p) => {
      const alive = isAlive(p.pid);
      return { name: p.name, pid: p.pid, alive, ready: alive && (await probeOnce(p.probe)), log: p.log };
    }),
  );
}

async function component(
  name: string,
  stateDir: string,
): Promise<{ d: TestbedDescription; spec: ProcessSpec }> {
  const d = await readDescription(stateDir);
  if (!d) throw new TestbedError("TestbedNotUp", `no testbed in ${stateDir}: run 'make testbed-up' first.`);
  const spec = d.processes.find((p) => p.name === name);
  if (!spec) {
    throw new TestbedError(
      "UnknownComponent",
      `no component '${name}'; choose one of: ${d.processes.map((p) => p.name).join(", ")}`,
    );
  }
  return { d, spec };
}

/** Stops one server and starts it again on the same port and data; used by recovery tests. */
export async function restart(component: string, opts: { stateDir?: string; log?: Log } = {}): Promise<void> {
  await stop(component, opts);
  await start(component, opts);
}

/**
 * Stops one server (an outage: chaos tests bring it back with `start`). Its data stays; the
 * testbed is not healthy until it is started again.
 */
export async function stop(
  name: string,
  opts: { stateDir?: string; log?: Log /** No grace: SIGKILL at once, as a crash. */; kill?: boolean } = {},
): Promise<void> {
  const stateDir = opts.stateDir ?? defaultStateDir();
  const { d, spec } = await component(name, stateDir);
  await withLock(join(stateDir, ".up.lock"), async () => {
    await stopProcess(spec.pid, opts.kill ? 0 : undefined);
    spec.pid = undefined;
    await writeDescription(d);
  });
  (opts.log ?? defaultLog)(`stopped ${name}`);
}

/** Starts one stopped server on its port and data and waits until it answers (idempotent). */
export async function start(name: string, opts: { stateDir?: string; log?: Log } = {}): Promise<void> {
  const stateDir = opts.stateDir ?? defaultStateDir();
  const log = opts.log ?? defaultLog;
  await withLock(join(stateDir, ".up.lock"), async () => {
    // Read under the lock: a `stop` of another server in between is kept.
    const { d, spec } = await component(name, stateDir);
    await startAndWait([spec], log, () => writeDescription(d));
  });
}

/** Stops every server and deletes the testbed's data; logs are kept for a post-mortem. */
export async function down(opts: { stateDir?: string; log?: Log } = {}): Promise<void> {
  const stateDir = opts.stateDir ?? defaultStateDir();
  const log = opts.log ?? defaultLog;
  const d = await readDescription(stateDir);
  if (d) {
    // Controllers first, then apiservers and NATS leaves, then etcd and the hub.
    const order = [...d.processes].reverse();
    await Promise.all(
      order.filter((p) => !/kube-apiserver|etcd|nats-server/.test(p.name)).map((p) => stopProcess(p.pid)),
    );
    await Promise.all(
      order.filter((p) => /kube-apiserver|region-.*nats-server/.test(p.name)).map((p) => stopProcess(p.pid)),
    );
    await Promise.all(order.map((p) => stopProcess(p.pid)));
    log(`stopped ${d.processes.length} servers`);
  }
  if (!existsSync(stateDir)) return;
  for (const entry of await readdir(stateDir)) {
    if (entry !== "logs") await rm(join(stateDir, entry), { recursive: true, force: true });
  }
}
