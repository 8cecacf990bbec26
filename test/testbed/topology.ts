// The shape of the testbed: which clusters, which nodes, which ports. Pure data, so the
// launcher, the tests and the docs agree on one layout.
import { createHash } from "node:crypto";
import { resolve } from "node:path";

export const repoRoot = resolve(import.meta.dirname, "..", "..");

export interface TestbedLayout {
  stateDir: string;
  portBase: number;
  regions: string[];
  clusters: ClusterLayout[];
  etcd: { clientPort: number; peerPort: number };
  natsHub: { clientPort: number; leafPort: number; monitorPort: number };
  natsRegions: Record<string, { clientPort: number; monitorPort: number }>;
}

export interface ClusterLayout {
  name: string;
  role: "hub" | "region";
  apiserverPort: number;
  schedulerPort: number;
  controllerManagerPort: number;
  kwokPort: number;
  /** The JetStream domain this cluster's NATS server serves. */
  jetstreamDomain: string;
  nodes: NodeLayout[];
}

export interface NodeLayout {
  name: string;
  gpus: number;
  labels: Record<string, string>;
}

export const PORTS_PER_TESTBED = 100;

export function defaultStateDir(env: NodeJS.ProcessEnv = process.env): string {
  return resolve(env.SOVEREIGN_TESTBED_DIR || resolve(repoRoot, ".testbed"));
}

/**
 * A port range derived from the state directory, so two clones (or a CI run beside a
 * developer's testbed) land on different ports without coordinating.
 */
export function portBaseFor(stateDir: string, env: NodeJS.ProcessEnv = process.env): number {
  if (env.SOVEREIGN_TESTBED_PORT_BASE) {
    const base = Number(env.SOVEREIGN_TESTBED_PORT_BASE);
    if (!Number.isInteger(base) || base < 1024 || base > 65535 - PORTS_PER_TESTBED) {
      throw new RangeError(
        `SOVEREIGN_TESTBED_PORT_BASE=${env.SOVEREIGN_TESTBED_PORT_BASE} is not a port between 1024 and ${65535 - PORTS_PER_TESTBED}`,
      );
    }
    return base;
  }
  const h = createHash("sha256").update(stateDir).digest().readUInt32BE(0);
  // 20000–31999: above most services' defaults, below Linux's ephemeral range (32768+).
  return 20000 + (h % 120) * PORTS_PER_TESTBED;
}

export function regionNames(env: NodeJS.ProcessEnv = process.env): string[] {
  const n = Number(env.SOVEREIGN_TESTBED_REGIONS || 3);
  if (!Number.isInteger(n) || n < 1 || n > 6) {
    throw new RangeError(
      `SOVEREIGN_TESTBED_REGIONS=${env.SOVEREIGN_TESTBED_REGIONS} must be a whole number from 1 to 6`,
    );
  }
  return Array.from({ length: n }, (_, i) => `region-${String.fromCharCode(97 + i)}`);
}

/**
 * Labels a confidential-computing H100 node carries once the NVIDIA GPU operator
 * (gpu-feature-discovery and the CC manager) has run on it.
 */
export function gpuNodeLabels(node: string, region: string, gpus: number): Record<string, string> {
  return {
    "kubernetes.io/hostname": node,
    "kubernetes.io/os": "linux",
    "kubernetes.io/arch": "amd64",
    "node.kubernetes.io/instance-type": "gpu-h100-cc",
    "topology.kubernetes.io/region": region,
    "topology.kubernetes.io/zone": `${region}-1`,
    type: "kwok",
    "nvidia.com/gpu.present": "true",
    "nvidia.com/gpu.count": String(gpus),
    "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
    "nvidia.com/gpu.family": "hopper",
    "nvidia.com/gpu.memory": "81559",
    "nvidia.com/gpu.machine": "sovereign-testbed",
    "nvidia.com/cuda.driver.major": "550",
    "nvidia.com/cuda.driver.minor": "144",
    "nvidia.com/cuda.driver.rev": "03",
    "nvidia.com/cc.capable": "true",
    "nvidia.com/cc.mode": "on",
    "nvidia.com/cc.mode.state": "on",
    "nvidia.com/gpu.workload.config": "container",
  };
}

export function layoutFor(stateDir: string, env: NodeJS.ProcessEnv = process.env): TestbedLayout {
  const portBase = portBaseFor(stateDir, env);
  const regions = regionNames(env);
  const clusterNames = ["hub", ...regions];
  const clusters: ClusterLayout[] = clusterNames.map((name, i) => {
    const p = portBase + 10 + i * 10;
    const nodes: NodeLayout[] =
      name === "hub"
        ? [
            {
              name: "hub-cpu-0",
              gpus: 0,
              labels: {
                "kubernetes.io/hostname": "hub-cpu-0",
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "topology.kubernetes.io/region": "hub",
                "topology.kubernetes.io/zone": "hub-1",
                type: "kwok",
              },
            },
          ]
        : [0, 1].map((n) => ({
            name: `${name}-gpu-${n}`,
            gpus: 8,
            labels: gpuNodeLabels(`${name}-gpu-${n}`, name, 8),
          }));
    return {
      name,
      role: name === "hub" ? "hub" : "region",
      apiserverPort: p,
      schedulerPort: p + 1,
      controllerManagerPort: p + 2,
      kwokPort: p + 3,
      jetstreamDomain: name,
      nodes,
    };
  });
  const natsRegions: TestbedLayout["natsRegions"] = {};
  regions.forEach((r, i) => {
    natsRegions[r] = { clientPort: portBase + 80 + i * 2, monitorPort: portBase + 81 + i * 2 };
  });
  return {
    stateDir,
    portBase,
    regions,
    clusters,
    etcd: { clientPort: portBase, peerPort: portBase + 1 },
    natsHub: { clientPort: portBase + 2, leafPort: portBase + 3, monitorPort: portBase + 4 },
    natsRegions,
  };
}

/** Every port the layout will listen on, with the process (as named in testbed.json) that owns it. */
export function portsOf(layout: TestbedLayout): { port: number; owner: string }[] {
  const out = [
    { port: layout.etcd.clientPort, owner: "etcd" },
    { port: layout.etcd.peerPort, owner: "etcd" },
    { port: layout.natsHub.clientPort, owner: "hub/nats-server" },
    { port: layout.natsHub.leafPort, owner: "hub/nats-server" },
    { port: layout.natsHub.monitorPort, owner: "hub/nats-server" },
  ];
  for (const c of layout.clusters) {
    out.push(
      { port: c.apiserverPort, owner: `${c.name}/kube-apiserver` },
      { port: c.schedulerPort, owner: `${c.name}/kube-scheduler` },
      { port: c.controllerManagerPort, owner: `${c.name}/kube-controller-manager` },
      { port: c.kwokPort, owner: `${c.name}/kwok` },
    );
  }
  for (const [r, p] of Object.entries(layout.natsRegions)) {
    out.push(
      { port: p.clientPort, owner: `${r}/nats-server` },
      { port: p.monitorPort, owner: `${r}/nats-server` },
    );
  }
  return out;
}
