// Builds the testbed's servers from the pinned Go modules into the cache, once.
//
// A build lands in `<cache>/testbed/<key>/bin`; `manifest.json` beside it is written
// last and records each binary's sha256, so a half-finished build is rebuilt and a
// damaged one is reported instead of producing servers that crash in odd ways.
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream, existsSync } from "node:fs";
import { copyFile, mkdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { promisify } from "node:util";
import { TestbedError } from "./errors.ts";
import { withLock } from "./lock.ts";
import {
  allBinaries,
  binDir,
  buildEnv,
  builds,
  kwokStageFiles,
  pins,
  requiredGo,
  wrapperModulesDir,
} from "./pins.ts";

const execFileAsync = promisify(execFile);

export interface BuildManifest {
  pins: typeof pins;
  goVersion: string;
  builtAt: string;
  /** Wall-clock seconds per build group, as measured when the cache was filled. */
  buildSeconds: Record<string, number>;
  files: Record<string, { sha256: string; size: number }>;
}

type Log = (line: string) => void;

export function manifestPath(bin: string): string {
  return join(dirname(bin), "manifest.json");
}

/** The Go toolchain on PATH, refusing one that is absent or older than the pins need. */
export async function findGo(env: NodeJS.ProcessEnv = process.env): Promise<{ version: string }> {
  let stdout: string;
  try {
    ({ stdout } = await execFileAsync("go", ["env", "GOVERSION"], { env: { ...env, ...buildEnv } }));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") {
      throw new TestbedError(
        "GoToolchainMissing",
        `no 'go' on PATH. The testbed builds its servers from pinned Go modules and needs Go ${requiredGo.major}.${requiredGo.minor} or newer: install it (e.g. from your distribution or go.dev) and put it on PATH, then run 'make testbed-up' again.`,
        { cause: err },
      );
    }
    throw new TestbedError("GoToolchainMissing", `'go env GOVERSION' failed: ${String(err)}`, { cause: err });
  }
  const version = stdout.trim();
  const m = /^go(\d+)\.(\d+)/.exec(version);
  const major = Number(m?.[1] ?? 0);
  const minor = Number(m?.[2] ?? 0);
  if (major < requiredGo.major || (major === requiredGo.major && minor < requiredGo.minor)) {
    throw new TestbedError(
      "GoToolchainTooOld",
      `found ${version || "an unknown Go"}, but the pinned modules need go${requiredGo.major}.${requiredGo.minor} or newer (GOTOOLCHAIN=local, so Go will not download one). Install a newer Go and run 'make testbed-up' again.`,
    );
  }
  return { version };
}

async function sha256File(path: string): Promise<string> {
  const h = createHash("sha256");
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest("hex");
}

/**
 * Checks a finished cache against its manifest. Returns the manifest, `undefined` when
 * there is no finished build yet, and throws TestbedCacheCorrupt when files differ.
 */
export async function verifyCache(bin: string): Promise<BuildManifest | undefined> {
  const mpath = manifestPath(bin);
  if (!existsSync(mpath)) return undefined;
  const fixHint = `Delete ${dirname(bin)} (or run 'make testbed-rebuild') and the next 'make testbed-up' rebuilds it.`;
  let manifest: BuildManifest;
  try {
    manifest = JSON.parse(await readFile(mpath, "utf8")) as BuildManifest;
    if (typeof manifest.files !== "object" || manifest.files === null) throw new Error("no files table");
  } catch (err) {
    throw new TestbedError(
      "TestbedCacheCorrupt",
      `the cache manifest ${mpath} is unreadable (${String(err)}). ${fixHint}`,
    );
  }
  for (const name of [...allBinaries, ...kwokStageFiles.map(stageCacheName)]) {
    const want = manifest.files[name];
    const path = join(bin, name);
    if (!want) throw new TestbedError("TestbedCacheCorrupt", `${name} is missing from ${mpath}. ${fixHint}`);
    if (!existsSync(path)) throw new TestbedError("TestbedCacheCorrupt", `${path} is missing. ${fixHint}`);
    const got = await sha256File(path);
    if (got !== want.sha256) {
      throw new TestbedError(
        "TestbedCacheCorrupt",
        `${path} does not match the checksum recorded when it was built (got ${got.slice(0, 12)}…, want ${want.sha256.slice(0, 12)}…). ${fixHint}`,
      );
    }
  }
  return manifest;
}

function stageCacheName(stage: string): string {
  return `kwok-stages/${stage.replaceAll("/", "_")}`;
}

export function kwokStagePaths(bin: string): string[] {
  return kwokStageFiles.map((s) => join(bin, stageCacheName(s)));
}

async function goModuleDir(module: string, cwd: string, env: NodeJS.ProcessEnv): Promise<string> {
  const { stdout } = await execFileAsync("go", ["list", "-m", "-f", "{{.Dir}}", module], {
    cwd,
    env: { ...env, ...buildEnv },
  });
  return stdout.trim();
}

/** The file name `go build -o dir/` gives a main package: its last element, minus a /vN suffix. */
export function goExecName(pkg: string): string {
  const parts = pkg.split("/");
  const last = parts.at(-1) ?? pkg;
  return /^v\d+$/.test(last) && parts.length > 1 ? (parts.at(-2) as string) : last;
}

async function runBuild(bin: string, env: NodeJS.ProcessEnv, log: Log): Promise<Record<string, number>> {
  const seconds: Record<string, number> = {};
  for (const b of builds) {
    const cwd = join(wrapperModulesDir, b.module);
    const names = Object.keys(b.binaries);
    log(
      `building ${names.join(", ")} from pinned modules (first time only; can take many minutes on 2 cores)`,
    );
    const started = performance.now();
    // One `go build` per wrapper module, so the shared dependency graph compiles once.
    const pkgs = Object.values(b.binaries);
    try {
      await execFileAsync("go", ["build", "-ldflags", b.ldflags, "-o", `${bin}/`, ...pkgs], {
        cwd,
        env: { ...env, ...buildEnv },
        maxBuffer: 64 * 1024 * 1024,
      });
    } catch (err) {
      const stderr = (err as { stderr?: string }).stderr ?? "";
      throw new TestbedError(
        "GoBuildFailed",
        `go build of ${names.join(", ")} in ${cwd} failed:\n${stderr.trim().split("\n").slice(-20).join("\n")}\nCheck that the Go module proxy is reachable (GOPROXY=${env.GOPROXY ?? "default"}) and that the wrapper's go.sum is complete ('go mod tidy' in ${cwd}).`,
        { cause: err },
      );
    }
    for (const [name, pkg] of Object.entries(b.binaries)) {
      if (goExecName(pkg) !== name) await rename(join(bin, goExecName(pkg)), join(bin, name));
    }
    seconds[b.module] = Math.round((performance.now() - started) / 100) / 10;
    log(`built ${names.join(", ")} in ${seconds[b.module]}s`);
  }
  const kwokDir = await goModuleDir("sigs.k8s.io/kwok", join(wrapperModulesDir, "k8s"), env);
  await mkdir(join(bin, "kwok-stages"), { recursive: true });
  for (const stage of kwokStageFiles) {
    await copyFile(join(kwokDir, "kustomize", "stage", stage), join(bin, stageCacheName(stage)));
  }
  return seconds;
}

/**
 * Returns the directory holding every testbed binary, building it first when the
 * cache for the current pins is empty. Safe to call from several processes at once.
 */
export async function ensureBinaries(opts: { env?: NodeJS.ProcessEnv; log?: Log } = {}): Promise<string> {
  const env = opts.env ?? process.env;
  const log = opts.log ?? ((l) => console.error(`[testbed] ${l}`));
  const bin = binDir(env);
  if (await verifyCache(bin)) return bin;
  return withLock(join(dirname(bin), ".build.lock"), async () => {
    if (await verifyCache(bin)) return bin; // another process finished it while we waited
    const { version } = await findGo(env);
    log(`cache ${dirname(bin)} is empty: building with ${version}`);
    await rm(bin, { recursive: true, force: true });
    await mkdir(bin, { recursive: true });
    const buildSeconds = await runBuild(bin, env, log);
    const files: BuildManifest["files"] = {};
    for (const name of [...allBinaries, ...kwokStageFiles.map(stageCacheName)]) {
      const path = join(bin, name);
      if (!existsSync(path))
        throw new TestbedError("GoBuildFailed", `the build finished without producing ${path}`);
      const { size } = await stat(path);
      files[name] = { sha256: await sha256File(path), size };
    }
    const manifest: BuildManifest = {
      pins,
      goVersion: version,
      builtAt: new Date().toISOString(),
      buildSeconds,
      files,
    };
    const tmp = `${manifestPath(bin)}.tmp`;
    await writeFile(tmp, `${JSON.stringify(manifest, null, 2)}\n`);
    await rename(tmp, manifestPath(bin));
    return bin;
  });
}
