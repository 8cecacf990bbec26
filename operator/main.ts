// sovereign-operator: `--mode=hub` runs the federation in the hub cluster; `--mode=member`
// runs in a region and pulls its work from the hub with a scoped credential.

import { createPrivateKey, generateKeyPairSync } from "node:crypto";
import { accessSync, constants } from "node:fs";
import { readFile } from "node:fs/promises";
import { hostname } from "node:os";
import { dirname, join } from "node:path";
import { KubeConfig } from "@kubernetes/client-node";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { parse } from "yaml";
import {
  AuditLog,
  type CheckpointSigner,
  ed25519CheckpointSigner,
  FileAuditStore,
} from "../attestation/audit/mod.ts";
import type { TrustAnchors } from "../attestation/mod.ts";
import type { AttestationPolicySpec } from "../crds/types.generated.ts";
import { parseAttestationPolicySpec, parseSovereignNodeSpec } from "../crds/validate.ts";
import { ConfigError, type OperatorConfig, parseConfig, usage } from "./config.ts";
import { hubControllers } from "./hub/setup.ts";
import { Manager } from "./manager.ts";
import { AgentEvidenceSource, type EvidenceSource } from "./member/evidence-source.ts";
import type { Registration } from "./member/registration.ts";
import { type MemberAttestation, type MemberAudit, memberControllers } from "./member/setup.ts";
import { reuseConnections } from "./runtime/kubeconfig.ts";
import { jsonLogger, type Logger } from "./runtime/log.ts";
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
  return reuseConnections(kc);
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

/** The member's gate from --attestation-policy, --trust-anchors and --evidence-source; undefined without a policy. */
async function loadAttestation(
  config: OperatorConfig,
  policyName: string,
  log: Logger,
  regionKc: KubeConfig,
): Promise<MemberAttestation | undefined> {
  if (!config.attestationPolicyFile) return undefined;
  let doc: { metadata?: { name?: string; generation?: number }; spec?: unknown };
  try {
    // YAML 1.1, as kubectl reads it: a bare `ccMode: On` is refused here as by the API server.
    doc = parse(await readFile(config.attestationPolicyFile, "utf8"), { version: "1.1" }) as typeof doc;
  } catch (err) {
    throw new ConfigError(
      "attestation-policy",
      `cannot read ${config.attestationPolicyFile}: ${(err as Error).message}`,
    );
  }
  const parsed = parseAttestationPolicySpec(doc?.spec);
  if (!parsed.ok) {
    throw new ConfigError(
      "attestation-policy",
      `${config.attestationPolicyFile} is not a valid AttestationPolicy: ${parsed.errors.map((e) => `${e.path}: ${e.message}`).join("; ")}`,
    );
  }
  const spec = parsed.value as AttestationPolicySpec;
  const name = doc.metadata?.name ?? "";
  if (name !== policyName) {
    throw new ConfigError(
      "attestation-policy",
      `the file holds AttestationPolicy "${name}", but the registration names "${policyName}"; give the policy the region registered with`,
    );
  }
  let nras: MemberAttestation["nras"];
  if (config.nrasCa) {
    if (spec.verification.mode !== "NRAS") {
      throw new ConfigError("nras-ca", `applies to verification.mode NRAS only; ${name} verifies locally`);
    }
    try {
      nras = { ca: await readFile(config.nrasCa, "utf8") };
    } catch (err) {
      throw new ConfigError("nras-ca", `cannot read ${config.nrasCa}: ${(err as Error).message}`);
    }
  }
  let references: MemberAttestation["references"];
  if (config.referenceCa) {
    if (spec.verification.mode !== "Local") {
      throw new ConfigError(
        "reference-ca",
        `applies to verification.mode Local only; ${name} has NRAS appraise the evidence (see --nras-ca)`,
      );
    }
    try {
      references = { ca: await readFile(config.referenceCa, "utf8") };
    } catch (err) {
      throw new ConfigError("reference-ca", `cannot read ${config.referenceCa}: ${(err as Error).message}`);
    }
  }
  let anchors: TrustAnchors;
  let source: EvidenceSource;
  if (config.trustAnchors === "testbed") {
    // Loaded only when asked for: the testbed roots must never sit next to a production policy.
    const testbed = await import("../attestation/testbed/mod.ts");
    anchors = testbed.testbedTrustAnchors();
    log.warn(
      "trusting the testbed roots: anyone can mint evidence under them; never use this in production",
      {
        flag: "--trust-anchors=testbed",
      },
    );
  } else {
    // nvidiaTrustAnchors lives beside the testbed roots; it checks the files against NVIDIA's pinned fingerprints.
    const { nvidiaTrustAnchors } = await import("../attestation/testbed/trust.ts");
    try {
      anchors = nvidiaTrustAnchors(
        await readFile(join(config.trustAnchors, "verifier_device_root.pem"), "utf8"),
        await readFile(join(config.trustAnchors, "verifier_RIM_root.pem"), "utf8"),
      );
    } catch (err) {
      throw new ConfigError("trust-anchors", (err as Error).message);
    }
  }
  if (config.evidenceSource === "testbed") {
    const { TestbedEvidenceSource } = await import("./member/attestation-testbed-source.ts");
    // Testbed only: faults can be injected into a running member through a node annotation.
    source = new TestbedEvidenceSource({ faultsFromNodes: regionKc });
  } else source = new AgentEvidenceSource({ port: config.attestationAgentPort });
  return {
    policy: { name, generation: doc.metadata?.generation ?? 0, spec },
    anchors,
    source,
    ...(nras ? { nras } : {}),
    ...(references ? { references } : {}),
  };
}

/** --audit-log and --audit-key: a file store and a kept signing key. */
async function loadAudit(config: OperatorConfig, log: Logger): Promise<MemberAudit | undefined> {
  let signer: CheckpointSigner | undefined;
  if (config.auditKey) {
    try {
      signer = ed25519CheckpointSigner(createPrivateKey(await readFile(config.auditKey, "utf8")));
    } catch (err) {
      throw new ConfigError("audit-key", `cannot use ${config.auditKey}: ${(err as Error).message}`);
    }
  }
  if (!config.auditLog) return signer ? { signer } : undefined;
  const store = await FileAuditStore.open(config.auditLog).catch((err: Error) => {
    throw new ConfigError("audit-log", `cannot open ${config.auditLog}: ${err.message}`);
  });
  if (store.recovery.tornTail)
    log.warn("audit: set aside a torn write at the end of the log", { ...store.recovery });
  return { store, signer };
}

async function loadAuditSigner(config: OperatorConfig): Promise<MemberAudit | undefined> {
  if (!config.auditKey) return undefined;
  try {
    return { signer: ed25519CheckpointSigner(createPrivateKey(await readFile(config.auditKey, "utf8"))) };
  } catch (err) {
    throw new ConfigError("audit-key", `cannot use ${config.auditKey}: ${(err as Error).message}`);
  }
}

/**
 * The hub's audit log for the time this replica leads: opened (the file re-read to its
 * current head) on first use, closed by `close` when leadership ends; `currentStore` is what
 * /audit/export serves meanwhile. Without --audit-log, undefined: the hub keeps no log.
 */
function leaderScopedHubAudit(
  config: OperatorConfig,
  signer: CheckpointSigner | undefined,
  log: Logger,
  identity: string,
) {
  if (!config.auditLog) return undefined;
  const path = config.auditLog;
  // The file is opened only on leading: check now that it could be, so a wrong path fails at start.
  try {
    accessSync(dirname(path), constants.W_OK);
  } catch (err) {
    throw new ConfigError("audit-log", `cannot write in the directory of ${path}: ${(err as Error).message}`);
  }
  if (!signer)
    log.warn(
      "audit checkpoints are signed with a key made at start; give --audit-key to sign with a kept key",
      {},
    );
  const checkpointSigner = signer ?? ed25519CheckpointSigner(generateKeyPairSync("ed25519").privateKey);
  let opened: Promise<{ store: FileAuditStore; log: AuditLog }> | undefined;
  let store: FileAuditStore | undefined;
  const openOnce = async () => {
    const s = await FileAuditStore.open(path).catch((err: Error) => {
      throw new ConfigError("audit-log", `cannot open ${path}: ${err.message}`);
    });
    if (s.recovery.tornTail)
      log.warn("audit: set aside a torn write at the end of the log", { ...s.recovery });
    store = s;
    const auditLog = await AuditLog.open(s, {
      logId: "hub",
      signer: checkpointSigner,
      clock: () => new Date(),
      openedBy: `sovereign-hub/${identity}`,
    });
    return { store: s, log: auditLog };
  };
  return {
    open: async () => {
      opened ??= openOnce();
      return (await opened).log;
    },
    currentStore: () => store,
    close: async () => {
      const was = opened;
      opened = undefined;
      store = undefined;
      const o = await was?.catch(() => undefined);
      await o?.log.checkpoint().catch(() => undefined);
      await o?.store.close();
    },
  };
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
  const attestation =
    registration && !config.insecureSkipAttestation
      ? await loadAttestation(config, registration.registration.attestationPolicyRef.name, log, kc)
      : undefined;
  // The hub's log is opened when this replica starts leading and closed when it stops, never
  // at start: a standby's reading of the file goes stale as soon as the leader appends to it,
  // and scanning it at start could set aside the leader's write in progress as a torn tail.
  // So two hub replicas may share one volume (ReadWriteMany), and a failover continues the
  // same chain. A member opens its own log at start (one replica per region).
  const audit = config.mode === "hub" ? await loadAuditSigner(config) : await loadAudit(config, log);
  const nats = config.nats ? await connectNats(config.nats, `sovereign-${config.mode}`) : undefined;
  const hubAudit =
    config.mode === "hub" ? leaderScopedHubAudit(config, audit?.signer, log, identity) : undefined;
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
          audit: hubAudit?.open,
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
          attestation,
          audit,
        });
  if (config.insecureSkipAttestation) {
    log.warn(
      "attestation is DISABLED: learner pods are released without verified GPUs and every run records it",
      {
        flag: "--insecure-skip-attestation",
      },
    );
  }
  const manager = new Manager({
    config,
    kc,
    metrics,
    log,
    identity,
    auditStore: hubAudit ? hubAudit.currentStore : audit?.store,
    leaderResources: hubAudit,
    ...parts,
  });

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
