// Starting, probing and stopping the testbed's server processes. Each server runs
// detached in its own session with its output in a log file, so it outlives the command
// that started it and `testbed-down` (or a test) can stop it by pid.
import { spawn } from "node:child_process";
import { closeSync, existsSync, openSync, readFileSync } from "node:fs";
import { request as httpRequest } from "node:http";
import { request as httpsRequest } from "node:https";
import { createServer } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { TestbedError } from "./errors.ts";

export type Probe =
  | { kind: "http"; url: string }
  | { kind: "https"; url: string; ca?: string; cert?: string; key?: string; insecure?: boolean }
  | { kind: "none" };

/** Everything needed to (re)start one server; persisted so `restart` needs no recomputation. */
export interface ProcessSpec {
  /** `<cluster>/<component>`, e.g. `region-a/kube-apiserver` or `etcd`. */
  name: string;
  command: string;
  args: string[];
  log: string;
  port: number;
  probe: Probe;
  env?: Record<string, string>;
  pid?: number;
}

export function isAlive(pid: number | undefined): boolean {
  if (!pid) return false;
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
  // A zombie still answers kill(0); treat it as dead.
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.split(") ")[1]?.[0] !== "Z";
  } catch {
    return false;
  }
}

export async function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once("error", () => resolve(false));
    srv.listen({ port, host: "127.0.0.1", exclusive: true }, () => srv.close(() => resolve(true)));
  });
}

export async function assertPortsFree(ports: { port: number; owner: string }[]): Promise<void> {
  for (const { port, owner } of ports) {
    if (!(await portIsFree(port))) {
      throw new TestbedError(
        "PortInUse",
        `127.0.0.1:${port}, needed by ${owner}, is already in use by another program. Stop that program (see 'ss -ltnp sport = :${port}'), run 'make testbed-down' if it is an old testbed, or move this testbed with SOVEREIGN_TESTBED_PORT_BASE=<port> (it uses that port and the 99 above it).`,
      );
    }
  }
}

export function startProcess(spec: ProcessSpec): number {
  const fd = openSync(spec.log, "a");
  try {
    const child = spawn(spec.command, spec.args, {
      detached: true,
      stdio: ["ignore", fd, fd],
      env: { ...process.env, ...spec.env },
    });
    if (child.pid === undefined) throw new TestbedError("ServerNotReady", `could not start ${spec.command}`);
    child.unref();
    return child.pid;
  } finally {
    closeSync(fd);
  }
}

/** One probe attempt: true when the server answers 200. */
export async function probeOnce(probe: Probe): Promise<boolean> {
  if (probe.kind === "none") return true;
  return new Promise((resolve) => {
    const opts =
      probe.kind === "https"
        ? {
            ca: probe.ca ? readFileSync(probe.ca) : undefined,
            rejectUnauthorized: !probe.insecure,
            cert: probe.cert ? readFileSync(probe.cert) : undefined,
            key: probe.key ? readFileSync(probe.key) : undefined,
            timeout: 2000,
          }
        : { timeout: 2000 };
    const req = (probe.kind === "https" ? httpsRequest : httpRequest)(probe.url, opts, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on("error", () => resolve(false));
    req.on("timeout", () => req.destroy());
    req.end();
  });
}

export function tailLog(path: string, lines = 25): string {
  if (!existsSync(path)) return "(no log)";
  return readFileSync(path, "utf8").trimEnd().split("\n").slice(-lines).join("\n");
}

export async function waitReady(spec: ProcessSpec, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!isAlive(spec.pid)) {
      throw new TestbedError(
        "ServerNotReady",
        `${spec.name} exited during start-up. Last lines of ${spec.log}:\n${tailLog(spec.log)}`,
      );
    }
    if (await probeOnce(spec.probe)) return;
    await sleep(200);
  }
  throw new TestbedError(
    "ServerNotReady",
    `${spec.name} did not become ready within ${timeoutMs / 1000}s. Last lines of ${spec.log}:\n${tailLog(spec.log)}`,
  );
}

/** SIGTERM, then SIGKILL after a grace period; resolves once the process is gone. */
export async function stopProcess(pid: number | undefined, graceMs = 10_000): Promise<void> {
  if (!isAlive(pid)) return;
  const signal = (sig: NodeJS.Signals) => {
    try {
      process.kill(pid as number, sig);
    } catch {
      // already gone
    }
  };
  signal("SIGTERM");
  const deadline = Date.now() + graceMs;
  while (isAlive(pid) && Date.now() < deadline) await sleep(100);
  if (isAlive(pid)) {
    signal("SIGKILL");
    while (isAlive(pid)) await sleep(50);
  }
}
