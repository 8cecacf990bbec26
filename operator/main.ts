// sovereign-operator: `--mode=hub` runs the federation in the hub cluster; `--mode=member`
// runs in a region and pulls its work from the hub with a scoped credential.

import { readFile } from "node:fs/promises";
import { hostname } from "node:os";
import { KubeConfig } from "@kubernetes/client-node";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { parse } from "yaml";
import { parseSovereignNodeSpec } from "../crds/validate.ts";
import { ConfigError, parseConfig, usage } from "./config.ts";
import { hubControllers } from "./hub/setup.ts";
import { Manager } from "./manager.ts";
import type { Registration } from "./member/registration.ts";
import { memberControllers } from "./member/setup.ts";
import { jsonLogger } from "./runtime/log.ts";
import { OperatorMetrics } from "./runtime/metrics.ts";

function loadKubeConfig(flag: string, path: string): KubeConfig {
  const kc = new KubeConfig();
  try {
    if (path) kc.loadFromFile(path);
    else kc.loadFromCluster();
  } catch (err) {
    throw new ConfigError(
      flag,
      `cannot load ${path || "the in-cluster configuration"}: ${(err as Error).message}`,
    );
  }
  return kc;
}

/** The member's registration file: a SovereignNode spec without `accepted`, plus optional labels. */
async function loadRegistration(
  path: string,
): Promise<{ registration: Registration; labels?: Record<string, string> }> {
  let doc: { labels?: Record<string, string>; spec?: Registration } & Partial<Registration>;
  try {
    doc = parse(await readFile(path, "utf8")) as typeof doc;
  } catch (err) {
    throw new ConfigError("registration", `cannot read ${path}: ${(err as Error).message}`);
  }
  const { labels, spec, ...rest } = doc ?? {};
  const registration = (spec ?? rest) as Registration & { accepted?: unknown };
  if ("accepted" in registration) {
    throw new ConfigError("registration", "must not set accepted: only a hub administrator accepts a region");
  }
  const parsed = parseSovereignNodeSpec({ ...registration, accepted: false });
  if (!parsed.ok) {
    throw new ConfigError(
      "registration",
      `${path} is not a valid SovereignNode spec: ${parsed.errors.map((e) => `${e.path}: ${e.message}`).join("; ")}`,
    );
  }
  return { registration, labels };
}

async function connectNats(
  settings: NonNullable<ReturnType<typeof parseConfig>["nats"]>,
  name: string,
): Promise<NatsConnection> {
  try {
    // Reconnects forever: a NATS restart must not take the operator down with it.
    return await connect({
      servers: settings.url,
      user: settings.user,
      pass: settings.password,
      name,
      maxReconnectAttempts: -1,
    });
  } catch (err) {
    throw new ConfigError("nats-url", `cannot connect to ${settings.url}: ${(err as Error).message}`);
  }
}

async function main(argv: string[]): Promise<number> {
  if (argv.includes("--help") || argv.includes("-h")) {
    console.log(usage());
    return 0;
  }
  try {
    return await run(argv);
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(`sovereign-operator: ${err.message}\nRun with --help for every flag.`);
      return 2;
    }
    throw err;
  }
}

async function run(argv: string[]): Promise<number> {
  const config = parseConfig(argv);
  const identity = `${process.env.POD_NAME || hostname()}_${process.pid}`;
  const log = jsonLogger({ level: config.logLevel, name: `sovereign-${config.mode}`, fields: { identity } });
  const metrics = new OperatorMetrics();
  // Everything a user can get wrong is checked before anything starts.
  const registration = config.mode === "member" ? await loadRegistration(config.registrationFile) : undefined;
  const kc = loadKubeConfig("kubeconfig", config.kubeconfig);
  const hubKc = config.mode === "member" ? loadKubeConfig("hub-kubeconfig", config.hubKubeconfig) : undefined;
  const nats = config.nats ? await connectNats(config.nats, `sovereign-${config.mode}`) : undefined;
  const parts =
    config.mode === "hub"
      ? hubControllers({
          kc,
          metrics,
          log,
          workers: config.workers,
          heartbeatTimeoutMs: config.heartbeatTimeoutMs,
          watchNamespace: config.watchNamespace || undefined,
          nodeLabelSelector: config.regionSelector || undefined,
          nats,
          trustManifestKeys: config.insecureSkipAttestation,
        })
      : memberControllers({
          ...(registration as NonNullable<typeof registration>),
          region: config.region,
          regionKc: kc,
          hubKc: hubKc as KubeConfig,
          metrics,
          log,
          workers: config.workers,
          heartbeatIntervalMs: config.heartbeatIntervalMs,
          insecureSkipAttestation: config.insecureSkipAttestation,
          nats,
          learnerNats: config.learnerNatsUrl
            ? { url: config.learnerNatsUrl, credentialsSecret: config.learnerNatsSecret || undefined }
            : undefined,
        });
  if (config.insecureSkipAttestation) {
    log.warn(
      "attestation is DISABLED: learner pods are released without verified GPUs and every run records it",
      {
        flag: "--insecure-skip-attestation",
      },
    );
  }
  const manager = new Manager({ config, kc, metrics, log, identity, ...parts });

  const shutdown = new AbortController();
  for (const sig of ["SIGTERM", "SIGINT"] as const) {
    process.once(sig, () => {
      log.info("shutting down", { signal: sig });
      shutdown.abort();
    });
  }
  await manager.run(shutdown.signal);
  await nats?.drain();
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(`sovereign-operator: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    process.exit(1);
  },
);
