// Bad input to the testbed scripts gives a specific reason and says what to do. These
// run the real CLI in a scratch state/cache directory, never touching the shared testbed.
import { execFile } from "node:child_process";
import { mkdir, mkdtemp, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import test from "ava";
import { manifestPath, verifyCache } from "./build.ts";
import { isTestbedError } from "./errors.ts";
import { allBinaries, binDir, kwokStageFiles } from "./pins.ts";
import { layoutFor } from "./topology.ts";

const cli = join(import.meta.dirname, "cli.ts");

function runCli(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [cli, ...args], { env }, (err, _stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === "number" ? err.code : 1) : 0, stderr });
    });
  });
}

async function scratch(): Promise<{ state: string; cache: string }> {
  const root = await mkdtemp(join(tmpdir(), "sovereign-testbed-bad-"));
  return { state: join(root, "state"), cache: join(root, "cache") };
}

test("a port the testbed needs that is already taken is named, with what to do", async (t) => {
  const { state, cache } = await scratch();
  const env: NodeJS.ProcessEnv = { ...process.env, SOVEREIGN_TESTBED_DIR: state, SOVEREIGN_CACHE_DIR: cache };
  // Find a free block, then occupy the port the hub kube-apiserver would use.
  const server: Server = createServer();
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const taken = (server.address() as { port: number }).port;
  t.teardown(() => server.close());
  // The taken port is the first one checked (etcd's, at the base), so the outcome does
  // not depend on whether other ports of the block happen to be free right now.
  env.SOVEREIGN_TESTBED_PORT_BASE = String(taken);
  t.is(layoutFor(state, env).etcd.clientPort, taken);

  const res = await runCli(["up"], env);
  t.is(res.code, 1);
  t.regex(res.stderr, new RegExp(`PortInUse: 127\\.0\\.0\\.1:${taken}, needed by etcd`));
  t.regex(res.stderr, /SOVEREIGN_TESTBED_PORT_BASE/);
});

test("a nonsensical port base is refused before anything starts", async (t) => {
  const { state, cache } = await scratch();
  const res = await runCli(["up"], {
    ...process.env,
    SOVEREIGN_TESTBED_DIR: state,
    SOVEREIGN_CACHE_DIR: cache,
    SOVEREIGN_TESTBED_PORT_BASE: "http",
  });
  t.is(res.code, 1);
  t.regex(res.stderr, /SOVEREIGN_TESTBED_PORT_BASE=http is not a port/);
});

test("without a Go toolchain and with nothing cached, the build says to install Go", async (t) => {
  const { cache } = await scratch();
  const emptyBin = join(dirname(cache), "empty-path");
  await mkdir(emptyBin, { recursive: true });
  const res = await runCli(["build"], { ...process.env, SOVEREIGN_CACHE_DIR: cache, PATH: emptyBin });
  t.is(res.code, 1);
  t.regex(res.stderr, /GoToolchainMissing: no 'go' on PATH/);
  t.regex(res.stderr, /install it/);
});

test("a Go toolchain older than the pins need is refused by name", async (t) => {
  const { cache } = await scratch();
  const fakeBin = join(dirname(cache), "old-go");
  await mkdir(fakeBin, { recursive: true });
  await writeFile(join(fakeBin, "go"), "#!/bin/sh\necho go1.21.5\n", { mode: 0o755 });
  const res = await runCli(["build"], {
    ...process.env,
    SOVEREIGN_CACHE_DIR: cache,
    PATH: `${fakeBin}:/usr/bin:/bin`,
  });
  t.is(res.code, 1);
  t.regex(res.stderr, /GoToolchainTooOld: found go1\.21\.5/);
});

async function fakeFinishedCache(cache: string): Promise<string> {
  const bin = binDir({ SOVEREIGN_CACHE_DIR: cache });
  await mkdir(join(bin, "kwok-stages"), { recursive: true });
  const files: Record<string, { sha256: string; size: number }> = {};
  const { createHash } = await import("node:crypto");
  const names = [...allBinaries, ...kwokStageFiles.map((s) => `kwok-stages/${s.replaceAll("/", "_")}`)];
  for (const name of names) {
    const body = `content of ${name}`;
    await writeFile(join(bin, name), body);
    files[name] = { sha256: createHash("sha256").update(body).digest("hex"), size: body.length };
  }
  await writeFile(manifestPath(bin), JSON.stringify({ files }));
  return bin;
}

test("an intact cache verifies; a damaged binary is reported with how to rebuild", async (t) => {
  const { cache } = await scratch();
  const bin = await fakeFinishedCache(cache);
  t.truthy(await verifyCache(bin));

  await writeFile(join(bin, "kube-apiserver"), "truncated");
  const err = await t.throwsAsync(verifyCache(bin));
  t.true(isTestbedError(err, "TestbedCacheCorrupt"));
  t.regex(err?.message ?? "", /kube-apiserver does not match the checksum/);
  t.regex(err?.message ?? "", /make testbed-rebuild/);

  // The CLI surfaces the same reason instead of starting broken servers.
  const res = await runCli(["build"], { ...process.env, SOVEREIGN_CACHE_DIR: cache });
  t.is(res.code, 1);
  t.regex(res.stderr, /TestbedCacheCorrupt/);
});

test("a missing binary and an unreadable manifest are both reported as a corrupt cache", async (t) => {
  const { cache } = await scratch();
  const bin = await fakeFinishedCache(cache);
  const { rm } = await import("node:fs/promises");
  await rm(join(bin, "etcd"));
  await t.throwsAsync(verifyCache(bin), { message: /TestbedCacheCorrupt: .*etcd is missing/ });
  await writeFile(manifestPath(bin), "{not json");
  await t.throwsAsync(verifyCache(bin), {
    message: /TestbedCacheCorrupt: the cache manifest .* is unreadable/,
  });
});

test("restarting a server of a testbed that is not up says to start it first", async (t) => {
  const { state } = await scratch();
  const res = await runCli(["restart", "hub/kube-apiservr"], {
    ...process.env,
    SOVEREIGN_TESTBED_DIR: state,
  });
  t.is(res.code, 1);
  t.regex(res.stderr, /TestbedNotUp: no testbed in .*: run 'make testbed-up' first/);
});
