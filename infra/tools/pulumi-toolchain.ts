// The Pulumi toolchain the real `pulumi up` test and the example need: the CLI, its
// Node.js language host and the Kubernetes provider plugin, built from pinned Go modules
// like the testbed's servers (test/testbed/build.ts) but on demand only — `testbed up`
// never builds them — and cached under their own key: `<cache>/pulumi/<key>/bin`.
//
// Which of the three can be built is decided by what the Go module proxy serves. A module
// it refuses is reported as ModuleNotServed with the exact module and version, instead of
// a half-working toolchain; a developer who has the binaries from elsewhere (built from
// the same pins) can point SOVEREIGN_PULUMI_BIN at a directory holding them.
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream, existsSync, readFileSync } from "node:fs";
import { mkdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { promisify } from "node:util";
import { findGo, goExecName } from "../../test/testbed/build.ts";
import { withLock } from "../../test/testbed/lock.ts";
import { buildEnv, cacheRoot, requiredGo, wrapperModulesDir } from "../../test/testbed/pins.ts";
import { InfraError } from "../manifests.ts";

const execFileAsync = promisify(execFile);
type Log = (line: string) => void;

/**
 * One Pulumi release for the CLI and the npm SDK (package.json pins @pulumi/pulumi to the
 * same version): the language host and the SDK speak the engine's protocol of that release.
 * 3.259.0 is the newest pkg/v3 the module proxy serves here.
 */
export const pulumiPins = {
  pulumi: "v3.259.0",
  /** The provider version @pulumi/kubernetes (package.json) asks the engine for. */
  kubernetesProvider: "4.34.2",
} as const;

export type PulumiBinary = "pulumi" | "pulumi-language-nodejs" | "pulumi-resource-kubernetes";

interface PulumiBuild {
  binary: PulumiBinary;
  /** Wrapper module under test/testbed/gomod/. */
  module: string;
  pkg: string;
  tags: string;
  ldflags: string;
}

/** What is built, from the committed wrapper modules. */
export const pulumiBuilds: PulumiBuild[] = [
  {
    binary: "pulumi",
    module: "pulumi",
    pkg: "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi",
    // Upstream's release flags: pure-Go user lookup, no gRPC tracing; and the version stamp,
    // without which `pulumi version` is empty and plugin version checks misfire.
    tags: "osusergo,grpcnotrace",
    ldflags: `-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=${pulumiPins.pulumi}`,
  },
];

/**
 * What cannot be built here yet: the module proxy answers 403 "not available" for these
 * modules (checked again by `node infra/tools/build-pulumi.ts`, so the day it serves them
 * the message says so). The language host has no version tags upstream (a pseudo-version of
 * the release commit is needed); the provider is not served at any version.
 */
export const pulumiUnservedModules: Record<Exclude<PulumiBinary, "pulumi">, string> = {
  "pulumi-language-nodejs":
    "github.com/pulumi/pulumi/sdk/nodejs/cmd/pulumi-language-nodejs/v3@v3.0.0-20260820084410-a05d88f24d05",
  "pulumi-resource-kubernetes": `github.com/pulumi/pulumi-kubernetes/sdk/v4@v${pulumiPins.kubernetesProvider}`,
};

export const requiredBinaries: PulumiBinary[] = [
  "pulumi",
  "pulumi-language-nodejs",
  "pulumi-resource-kubernetes",
];

export function pulumiCacheKey(): string {
  const h = createHash("sha256");
  h.update(JSON.stringify({ pulumiPins, pulumiBuilds, buildEnv, requiredGo }));
  for (const m of new Set(pulumiBuilds.map((b) => b.module))) {
    for (const f of ["go.mod", "go.sum"]) h.update(readFileSync(join(wrapperModulesDir, m, f)));
  }
  return h.digest("hex").slice(0, 16);
}

export function pulumiBinDir(env: NodeJS.ProcessEnv = process.env): string {
  return join(cacheRoot(env), "pulumi", pulumiCacheKey(), "bin");
}

interface Manifest {
  pins: typeof pulumiPins;
  goVersion: string;
  builtAt: string;
  buildSeconds: Record<string, number>;
  loadAverage: { before: number[]; after: number[] };
  files: Record<string, { sha256: string; size: number }>;
}

async function sha256File(path: string): Promise<string> {
  const h = createHash("sha256");
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest("hex");
}

const manifestPath = (bin: string) => join(dirname(bin), "manifest.json");

async function verified(bin: string): Promise<Manifest | undefined> {
  if (!existsSync(manifestPath(bin))) return undefined;
  const manifest = JSON.parse(await readFile(manifestPath(bin), "utf8")) as Manifest;
  for (const b of pulumiBuilds) {
    const want = manifest.files[b.binary];
    const path = join(bin, b.binary);
    if (!want || !existsSync(path) || (await sha256File(path)) !== want.sha256) {
      throw new InfraError(
        "PulumiCacheCorrupt",
        `${path} is missing or does not match ${manifestPath(bin)}; delete ${dirname(bin)} and build again`,
      );
    }
  }
  return manifest;
}

const loadavg = async () =>
  (await readFile("/proc/loadavg", "utf8").catch(() => "")).split(" ").slice(0, 3).map(Number);

/** Builds what can be built (the CLI) into the cache, once; returns the bin directory and the manifest. */
export async function buildPulumi(
  opts: { env?: NodeJS.ProcessEnv; log?: Log } = {},
): Promise<{ bin: string; manifest: Manifest }> {
  const env = opts.env ?? process.env;
  const log = opts.log ?? ((l) => console.error(`[pulumi-build] ${l}`));
  const bin = pulumiBinDir(env);
  const cached = await verified(bin);
  if (cached) return { bin, manifest: cached };
  return withLock(join(dirname(bin), ".build.lock"), async () => {
    const again = await verified(bin);
    if (again) return { bin, manifest: again };
    const { version } = await findGo(env);
    await rm(bin, { recursive: true, force: true });
    await mkdir(bin, { recursive: true });
    const before = await loadavg();
    const buildSeconds: Record<string, number> = {};
    for (const b of pulumiBuilds) {
      const cwd = join(wrapperModulesDir, b.module);
      log(`building ${b.binary} ${pulumiPins.pulumi} (nice 19; cold: tens of minutes on 2 cores)`);
      const started = performance.now();
      try {
        // nice: the machine is shared and this is the largest Go build of the project.
        await execFileAsync(
          "nice",
          ["-n", "19", "go", "build", "-tags", b.tags, "-ldflags", b.ldflags, "-o", `${bin}/`, b.pkg],
          { cwd, env: { ...env, ...buildEnv }, maxBuffer: 64 * 1024 * 1024 },
        );
      } catch (err) {
        const stderr = (err as { stderr?: string }).stderr ?? String(err);
        throw new InfraError(
          "PulumiBuildFailed",
          `go build of ${b.pkg} in ${cwd} failed:\n${stderr.trim().split("\n").slice(-20).join("\n")}`,
          { cause: err },
        );
      }
      if (goExecName(b.pkg) !== b.binary) await rename(join(bin, goExecName(b.pkg)), join(bin, b.binary));
      buildSeconds[b.binary] = Math.round(performance.now() - started) / 1000;
      log(`built ${b.binary} in ${buildSeconds[b.binary]}s`);
    }
    const files: Manifest["files"] = {};
    for (const b of pulumiBuilds) {
      const path = join(bin, b.binary);
      files[b.binary] = { sha256: await sha256File(path), size: (await stat(path)).size };
    }
    const manifest: Manifest = {
      pins: pulumiPins,
      goVersion: version,
      builtAt: new Date().toISOString(),
      buildSeconds,
      loadAverage: { before, after: await loadavg() },
      files,
    };
    await writeFile(`${manifestPath(bin)}.tmp`, `${JSON.stringify(manifest, null, 2)}\n`);
    await rename(`${manifestPath(bin)}.tmp`, manifestPath(bin));
    return { bin, manifest };
  });
}

/** Asks the module proxy for a module the toolchain still lacks; the proxy's answer, verbatim. */
export async function probeModule(
  moduleAtVersion: string,
  env: NodeJS.ProcessEnv = process.env,
): Promise<{ served: boolean; answer: string }> {
  try {
    const { stdout } = await execFileAsync("go", ["mod", "download", "-json", moduleAtVersion], {
      cwd: join(wrapperModulesDir, "pulumi"),
      env: { ...env, ...buildEnv, GOFLAGS: "-mod=mod" },
    });
    const info = JSON.parse(stdout) as { Error?: string };
    return info.Error ? { served: false, answer: info.Error } : { served: true, answer: "served" };
  } catch (err) {
    const out = (err as { stdout?: string }).stdout ?? "";
    try {
      const info = JSON.parse(out) as { Error?: string };
      return { served: false, answer: info.Error ?? String(err) };
    } catch {
      return { served: false, answer: String((err as { stderr?: string }).stderr ?? err) };
    }
  }
}

export interface Toolchain {
  /** Directory to put first on PATH: every binary in it is found by the engine as "ambient". */
  bin: string;
}

/**
 * The complete toolchain, or the reason there is none: SOVEREIGN_PULUMI_BIN (all three
 * binaries from elsewhere) first, then the cache. Never builds: building is an explicit
 * step (`node infra/tools/build-pulumi.ts`), too long to start from inside a test.
 */
export function locateToolchain(env: NodeJS.ProcessEnv = process.env): Toolchain | { missing: string } {
  const dirs = env.SOVEREIGN_PULUMI_BIN ? [env.SOVEREIGN_PULUMI_BIN] : [pulumiBinDir(env)];
  for (const dir of dirs) {
    const absent = requiredBinaries.filter((b) => !existsSync(join(dir, b)));
    if (absent.length === 0) return { bin: dir };
    const why = absent
      .map((b) =>
        b === "pulumi"
          ? "pulumi (run `node infra/tools/build-pulumi.ts`)"
          : `${b} (its Go module ${pulumiUnservedModules[b]} is not served by the module proxy here)`,
      )
      .join("; ");
    return { missing: `no ${why} in ${dir}` };
  }
  return { missing: "no toolchain directory" };
}
