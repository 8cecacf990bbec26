// What the testbed builds, from which pinned Go modules, and where the result is cached.
//
// The cache key hashes everything that changes a binary: the pins below, the wrapper
// modules' go.mod/go.sum and the build flags (the Go patch release is recorded in the
// manifest but not keyed: any 1.26.x builds the same servers). Bumping a pin
// therefore lands in a fresh directory and an old one is never half-reused.
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";

export const testbedDir = import.meta.dirname;
export const wrapperModulesDir = join(testbedDir, "gomod");

/** The minimum Go toolchain: every pinned module declares `go 1.26.0`. */
export const requiredGo = { major: 1, minor: 26 } as const;

export const pins = {
  kubernetes: "v1.36.3",
  etcd: "v3.6.16",
  kwok: "v0.8.0",
  helm: "v3.21.4",
  natsServer: "v2.14.9",
  natsCli: "v0.4.0",
} as const;

export interface BinaryBuild {
  /** Wrapper module (directory under gomod/) the packages are built in. */
  module: string;
  /** Output file name → upstream main package. */
  binaries: Record<string, string>;
  ldflags: string;
  tags?: string;
}

function kubernetesVersionFlags(): string {
  const [major, minor] = pins.kubernetes.slice(1).split(".");
  // Unstamped binaries report v0.0.0-master, which breaks helm's kubeVersion checks and
  // kubectl's skew warnings; stamp both version packages the way upstream releases do.
  const flags: string[] = [];
  for (const pkg of ["k8s.io/component-base/version", "k8s.io/client-go/pkg/version"]) {
    flags.push(
      `-X ${pkg}.gitVersion=${pins.kubernetes}`,
      `-X ${pkg}.gitMajor=${major}`,
      `-X ${pkg}.gitMinor=${minor}`,
      `-X ${pkg}.gitTreeState=clean`,
      `-X ${pkg}.buildDate=1970-01-01T00:00:00Z`,
    );
  }
  return flags.join(" ");
}

function helmVersionFlags(): string {
  const [major, minor] = pins.kubernetes.slice(1).split(".");
  return [
    `-X helm.sh/helm/v3/internal/version.version=${pins.helm}`,
    "-X helm.sh/helm/v3/internal/version.gitTreeState=clean",
    // Offline `helm template` otherwise assumes Kubernetes 1.20.
    `-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=${major}`,
    `-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=${minor}`,
    `-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=${major}`,
    `-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=${minor}`,
  ].join(" ");
}

/** Build groups; each is one `go build` so shared dependencies compile once. */
export const builds: BinaryBuild[] = [
  {
    module: "nats",
    binaries: { "nats-server": "github.com/nats-io/nats-server/v2", nats: "github.com/nats-io/natscli/nats" },
    ldflags: "-s -w",
  },
  {
    module: "etcd",
    binaries: { etcd: "go.etcd.io/etcd/server/v3", etcdctl: "go.etcd.io/etcd/etcdctl/v3" },
    ldflags: "-s -w",
  },
  {
    module: "k8s",
    binaries: {
      "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
      "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
      "kube-scheduler": "k8s.io/kubernetes/cmd/kube-scheduler",
      kubectl: "k8s.io/kubernetes/cmd/kubectl",
      kwok: "sigs.k8s.io/kwok/cmd/kwok",
      helm: "helm.sh/helm/v3/cmd/helm",
    },
    ldflags: `-s -w ${kubernetesVersionFlags()} ${helmVersionFlags()}`,
  },
];

export const allBinaries: string[] = builds.flatMap((b) => Object.keys(b.binaries));

/** kwok's own stage definitions, copied from its module at build time (the kwok binary has no defaults). */
export const kwokStageFiles = [
  "node/fast/node-initialize.yaml",
  "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
  "pod/fast/pod-ready.yaml",
  "pod/fast/pod-complete.yaml",
  "pod/fast/pod-delete.yaml",
];

export const buildEnv = {
  GOTOOLCHAIN: "local", // never auto-download a toolchain: the registries are all we reach
  CGO_ENABLED: "0",
  GOFLAGS: "-trimpath -mod=readonly",
} as const;

export function cacheRoot(env: NodeJS.ProcessEnv = process.env): string {
  if (env.SOVEREIGN_CACHE_DIR) return env.SOVEREIGN_CACHE_DIR;
  const xdg = env.XDG_CACHE_HOME || join(homedir(), ".cache");
  return join(xdg, "sovereign");
}

/** Directory the binaries for the current pins live in: `<cache>/testbed/<key>/bin`. */
export function cacheKey(): string {
  const h = createHash("sha256");
  h.update(JSON.stringify({ pins, builds, kwokStageFiles, buildEnv, requiredGo }));
  for (const b of builds) {
    for (const f of ["go.mod", "go.sum"]) h.update(readFileSync(join(wrapperModulesDir, b.module, f)));
  }
  return h.digest("hex").slice(0, 16);
}

export function binDir(env: NodeJS.ProcessEnv = process.env): string {
  return join(cacheRoot(env), "testbed", cacheKey(), "bin");
}
