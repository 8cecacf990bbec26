// The operator's configuration: flags, then environment variables, then defaults, all
// validated at start so a mistake stops the process with one clear line instead of a
// stack trace minutes later.

export type Mode = "hub" | "member";

export interface OperatorConfig {
  mode: Mode;
  /** Cluster this operator runs in; empty means in-cluster configuration. */
  kubeconfig: string;
  /** Member only: the scoped credential for the hub. */
  hubKubeconfig: string;
  /** Member only: the region this member serves (its SovereignNode name). */
  region: string;
  namespace: string;
  metricsBindAddress: { host: string; port: number };
  healthProbeBindAddress: { host: string; port: number };
  leaderElect: boolean;
  leaderElectionId: string;
  leaseDurationMs: number;
  renewDeadlineMs: number;
  retryPeriodMs: number;
  workers: number;
  logLevel: "debug" | "info" | "warn" | "error";
  /** Development only: release learner pods without attestation (the run records it). */
  insecureSkipAttestation: boolean;
  /** Member only: YAML file with the region's registration (a SovereignNode spec without `accepted`, optional `labels`). */
  registrationFile: string;
  heartbeatIntervalMs: number;
  /** Hub only: how long without a heartbeat before a region is not Ready. */
  heartbeatTimeoutMs: number;
  /** Hub only: watch FederatedRuns in this namespace only (empty: all). */
  watchNamespace: string;
  /** Hub only: manage only SovereignNodes with these labels (empty: all). */
  regionSelector: string;
  /** Unset: no NATS, so no rounds (hub) and no delta bucket or model mirrors (member). */
  nats?: { url: string; user?: string; password?: string };
  learnerNatsUrl: string;
  learnerNatsSecret: string;
  /** Member only: YAML file of the AttestationPolicy the gate verifies against (empty: no gate, learners stay gated). */
  attestationPolicyFile: string;
  /** Member only: `testbed`, or a directory with NVIDIA's roots verifier_device_root.pem and verifier_RIM_root.pem. */
  trustAnchors: string;
  /** Member only: where GPU evidence comes from. */
  evidenceSource: "agent" | "testbed";
  /** Member only: the port the node attestation agent listens on (host network, the node's InternalIP). */
  attestationAgentPort: number;
  /** PEM file of CAs trusted for an NRAS-mode policy's url and jwksUrl instead of the system's; "" for the system's. */
  nrasCa: string;
  /** PEM file of CAs trusted for a Local-mode policy's rimServiceUrl and ocspUrl instead of the system's; "" for the system's. */
  referenceCa: string;
  /** JSON-lines audit log file (empty: in memory, lost on restart). */
  auditLog: string;
  /** PEM file with the Ed25519 private key that signs the audit log's checkpoints (empty: a key made at start). */
  auditKey: string;
}

export class ConfigError extends Error {
  override name = "ConfigError";
  readonly reason = "InvalidConfiguration";
  readonly flag: string;

  /** `flag` is empty for an argument that is not a flag at all. */
  constructor(flag: string, message: string) {
    super(`InvalidConfiguration: ${flag ? `--${flag}: ` : ""}${message}`);
    this.flag = flag;
  }
}

interface FlagSpec {
  env: string;
  default?: string;
  boolean?: boolean;
  help: string;
}

export const flags: Record<string, FlagSpec> = {
  mode: { env: "SOVEREIGN_MODE", help: "hub or member" },
  kubeconfig: {
    env: "KUBECONFIG",
    default: "",
    help: "kubeconfig of the cluster this operator runs in (empty: in-cluster)",
  },
  "hub-kubeconfig": {
    env: "SOVEREIGN_HUB_KUBECONFIG",
    default: "",
    help: "member mode: the region's scoped hub credential",
  },
  region: { env: "SOVEREIGN_REGION", default: "", help: "member mode: this region's SovereignNode name" },
  namespace: {
    env: "SOVEREIGN_NAMESPACE",
    default: "sovereign-system",
    help: "namespace of the leader-election Lease",
  },
  "metrics-bind-address": {
    env: "SOVEREIGN_METRICS_BIND_ADDRESS",
    default: "0.0.0.0:8080",
    help: "host:port for /metrics",
  },
  "health-probe-bind-address": {
    env: "SOVEREIGN_HEALTH_PROBE_BIND_ADDRESS",
    default: "0.0.0.0:8081",
    help: "host:port for /healthz and /readyz",
  },
  "leader-elect": {
    env: "SOVEREIGN_LEADER_ELECT",
    default: "true",
    boolean: true,
    help: "elect a leader on a Lease",
  },
  "leader-election-id": {
    env: "SOVEREIGN_LEADER_ELECTION_ID",
    default: "",
    help: "Lease name (default sovereign-<mode>[-<region>])",
  },
  "lease-duration": {
    env: "SOVEREIGN_LEASE_DURATION",
    default: "15s",
    help: "how long a Lease holds without renewal",
  },
  "renew-deadline": {
    env: "SOVEREIGN_RENEW_DEADLINE",
    default: "10s",
    help: "how long the leader keeps trying to renew",
  },
  "retry-period": { env: "SOVEREIGN_RETRY_PERIOD", default: "2s", help: "time between Lease attempts" },
  workers: { env: "SOVEREIGN_WORKERS", default: "2", help: "concurrent reconciles per controller" },
  "log-level": { env: "SOVEREIGN_LOG_LEVEL", default: "info", help: "debug, info, warn or error" },
  registration: {
    env: "SOVEREIGN_REGISTRATION",
    default: "",
    help: "member mode: YAML with this region's SovereignNode spec (no accepted) and optional labels",
  },
  "heartbeat-interval": {
    env: "SOVEREIGN_HEARTBEAT_INTERVAL",
    default: "10s",
    help: "member mode: how often to report in",
  },
  "heartbeat-timeout": {
    env: "SOVEREIGN_HEARTBEAT_TIMEOUT",
    default: "60s",
    help: "hub mode: a region without a heartbeat this long is not Ready",
  },
  "region-selector": {
    env: "SOVEREIGN_REGION_SELECTOR",
    default: "",
    help: "hub mode: label selector limiting which SovereignNodes this hub manages",
  },
  "watch-namespace": {
    env: "SOVEREIGN_WATCH_NAMESPACE",
    default: "",
    help: "hub mode: only FederatedRuns in this namespace",
  },
  "nats-url": {
    env: "SOVEREIGN_NATS_URL",
    default: "",
    help: "NATS server of this cluster: the hub's (hub mode) or the region's (member mode); empty runs no rounds",
  },
  "nats-user": { env: "SOVEREIGN_NATS_USER", default: "", help: "NATS user name" },
  "nats-password": { env: "SOVEREIGN_NATS_PASSWORD", default: "", help: "NATS password" },
  "learner-nats-url": {
    env: "SOVEREIGN_LEARNER_NATS_URL",
    default: "",
    help: "member mode: NATS URL learner pods use (default: --nats-url)",
  },
  "learner-nats-secret": {
    env: "SOVEREIGN_LEARNER_NATS_SECRET",
    default: "",
    help: "member mode: Secret in sovereign-learners with keys user and password for learner pods",
  },
  "attestation-policy": {
    env: "SOVEREIGN_ATTESTATION_POLICY",
    default: "",
    help: "member mode: YAML of the AttestationPolicy the region's registration names; learners are admitted to GPU nodes whose evidence passes it",
  },
  "trust-anchors": {
    env: "SOVEREIGN_TRUST_ANCHORS",
    default: "",
    help: "member mode: a directory with NVIDIA's verifier_device_root.pem and verifier_RIM_root.pem, or 'testbed' (never in production)",
  },
  "evidence-source": {
    env: "SOVEREIGN_EVIDENCE_SOURCE",
    default: "agent",
    help: "member mode: agent (the attestation agent on each GPU node) or testbed (minted evidence for kwok nodes)",
  },
  "nras-ca": {
    env: "SOVEREIGN_NRAS_CA",
    default: "",
    help: "member mode, verification.mode NRAS: PEM file of the CAs to trust for the policy's NRAS and JWKS URLs (default: the system's roots)",
  },
  "reference-ca": {
    env: "SOVEREIGN_REFERENCE_CA",
    default: "",
    help: "member mode, verification.mode Local: PEM file of the CAs to trust for the policy's RIM service and OCSP responder URLs, e.g. an in-house mirror (default: the system's roots)",
  },
  "attestation-agent-port": {
    env: "SOVEREIGN_ATTESTATION_AGENT_PORT",
    default: "9444",
    help: "member mode: port of the attestation agent on each GPU node's InternalIP",
  },
  "audit-log": {
    env: "SOVEREIGN_AUDIT_LOG",
    default: "",
    help: "JSON-lines audit log on a persistent volume (default: in memory, lost on restart)",
  },
  "audit-key": {
    env: "SOVEREIGN_AUDIT_KEY",
    default: "",
    help: "PEM Ed25519 private key signing the audit log's checkpoints (default: a key made at start)",
  },
  "insecure-skip-attestation": {
    env: "SOVEREIGN_INSECURE_SKIP_ATTESTATION",
    default: "false",
    boolean: true,
    help: "development only: run learners without attestation",
  },
};

export function usage(): string {
  const rows = Object.entries(flags).map(
    ([name, f]) =>
      `  --${name.padEnd(28)} ${f.help}${f.default ? ` (default ${f.default})` : ""} [$${f.env}]`,
  );
  return `usage: sovereign-operator --mode=hub|member [flags]\n\n${rows.join("\n")}`;
}

/** "15s", "1m30s", "500ms", "2h" → milliseconds. */
function natsSettings(url: string, user: string, password: string): OperatorConfig["nats"] {
  if (!url) {
    if (user || password) throw new ConfigError("nats-user", "needs --nats-url");
    return undefined;
  }
  if (!/^(nats|tls|wss?):\/\/[^\s]+$/.test(url)) {
    throw new ConfigError("nats-url", `"${url}" is not a NATS URL like nats://nats.sovereign-system:4222`);
  }
  if (Boolean(user) !== Boolean(password)) {
    throw new ConfigError(
      user ? "nats-password" : "nats-user",
      "set --nats-user and --nats-password together",
    );
  }
  return { url, ...(user ? { user, password } : {}) };
}

export function parseDuration(flag: string, text: string): number {
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h)/gy;
  const unit: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
  let total = 0;
  let consumed = 0;
  for (const m of text.matchAll(re)) {
    total += Number(m[1]) * (unit[m[2] as string] as number);
    consumed += m[0].length;
  }
  if (!text || consumed !== text.length || !Number.isFinite(total) || total <= 0) {
    throw new ConfigError(flag, `"${text}" is not a positive duration; write it like 15s, 500ms or 1m30s`);
  }
  return total;
}

function parseAddress(flag: string, text: string): { host: string; port: number } {
  const m = /^(.*):(\d{1,5})$/.exec(text);
  const port = Number(m?.[2]);
  if (!m || port > 65535)
    throw new ConfigError(flag, `"${text}" is not host:port (e.g. 0.0.0.0:8080 or :8080)`);
  return { host: m[1] || "0.0.0.0", port };
}

function parseBool(flag: string, text: string): boolean {
  if (["true", "1", "yes"].includes(text)) return true;
  if (["false", "0", "no"].includes(text)) return false;
  throw new ConfigError(flag, `"${text}" is not true or false`);
}

const dns1123Label = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

/** Parses argv (without node and script) and the environment into a validated config. */
export function parseConfig(argv: string[], env: NodeJS.ProcessEnv = process.env): OperatorConfig {
  const given = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    const m = /^--([a-z-]+)(?:=(.*))?$/s.exec(arg);
    if (!m) throw new ConfigError("", `unexpected argument "${arg}"; flags look like --name=value`);
    const name = m[1] as string;
    const spec = flags[name];
    if (!spec) throw new ConfigError(name, `unknown flag; known flags:\n${usage()}`);
    let value = m[2];
    if (value === undefined) {
      if (spec.boolean) value = "true";
      else {
        value = argv[++i];
        if (value === undefined) throw new ConfigError(name, "needs a value");
      }
    }
    given.set(name, value);
  }
  const get = (name: string): string => {
    const spec = flags[name] as FlagSpec;
    return given.get(name) ?? env[spec.env] ?? spec.default ?? "";
  };

  const mode = get("mode");
  if (mode !== "hub" && mode !== "member") {
    throw new ConfigError("mode", `must be hub or member${mode ? `, not "${mode}"` : " (it is required)"}`);
  }
  const region = get("region");
  const hubKubeconfig = get("hub-kubeconfig");
  if (mode === "member") {
    if (!dns1123Label.test(region)) {
      throw new ConfigError(
        "region",
        `member mode needs this region's SovereignNode name, a DNS label like region-a${region ? `; "${region}" is not one` : ""}`,
      );
    }
    if (!hubKubeconfig)
      throw new ConfigError("hub-kubeconfig", "member mode needs the region's scoped hub kubeconfig");
  } else if (region || hubKubeconfig) {
    throw new ConfigError(
      region ? "region" : "hub-kubeconfig",
      "only applies in member mode; the hub holds no region credential",
    );
  }
  const logLevel = get("log-level");
  if (!["debug", "info", "warn", "error"].includes(logLevel)) {
    throw new ConfigError("log-level", `"${logLevel}" is not one of debug, info, warn, error`);
  }
  const workers = Number(get("workers"));
  if (!Number.isInteger(workers) || workers < 1 || workers > 64) {
    throw new ConfigError("workers", `"${get("workers")}" is not a whole number from 1 to 64`);
  }
  const leaseDurationMs = parseDuration("lease-duration", get("lease-duration"));
  const renewDeadlineMs = parseDuration("renew-deadline", get("renew-deadline"));
  const retryPeriodMs = parseDuration("retry-period", get("retry-period"));
  if (leaseDurationMs <= renewDeadlineMs) {
    throw new ConfigError(
      "lease-duration",
      "must be longer than --renew-deadline, or a leader could outlive its lease",
    );
  }
  if (renewDeadlineMs <= retryPeriodMs * 1.2) {
    throw new ConfigError("renew-deadline", "must be longer than 1.2 × --retry-period");
  }
  const namespace = get("namespace");
  if (!dns1123Label.test(namespace))
    throw new ConfigError("namespace", `"${namespace}" is not a valid namespace name`);
  const leaderElectionId =
    get("leader-election-id") || (mode === "hub" ? "sovereign-hub" : `sovereign-member-${region}`);
  const attestationPolicyFile = get("attestation-policy");
  const trustAnchors = get("trust-anchors");
  const evidenceSource = get("evidence-source");
  if (evidenceSource !== "agent" && evidenceSource !== "testbed") {
    throw new ConfigError("evidence-source", `"${evidenceSource}" is not agent or testbed`);
  }
  const agentPort = Number(get("attestation-agent-port"));
  if (!Number.isInteger(agentPort) || agentPort < 1 || agentPort > 65535) {
    throw new ConfigError(
      "attestation-agent-port",
      `"${get("attestation-agent-port")}" is not a port from 1 to 65535`,
    );
  }
  if (mode === "hub" && (attestationPolicyFile || trustAnchors || evidenceSource !== "agent")) {
    throw new ConfigError(
      attestationPolicyFile ? "attestation-policy" : trustAnchors ? "trust-anchors" : "evidence-source",
      "only applies in member mode; regions attest their own GPUs",
    );
  }
  if (attestationPolicyFile && !trustAnchors) {
    throw new ConfigError(
      "trust-anchors",
      "--attestation-policy needs the roots to verify against: a directory with NVIDIA's verifier_device_root.pem and verifier_RIM_root.pem",
    );
  }
  if ((evidenceSource === "testbed") !== (trustAnchors === "testbed") && attestationPolicyFile) {
    throw new ConfigError(
      "evidence-source",
      "testbed evidence and the testbed trust anchors go together: set both --evidence-source=testbed and --trust-anchors=testbed, or neither",
    );
  }
  return {
    mode,
    kubeconfig: get("kubeconfig"),
    hubKubeconfig,
    region,
    namespace,
    metricsBindAddress: parseAddress("metrics-bind-address", get("metrics-bind-address")),
    healthProbeBindAddress: parseAddress("health-probe-bind-address", get("health-probe-bind-address")),
    leaderElect: parseBool("leader-elect", get("leader-elect")),
    leaderElectionId,
    leaseDurationMs,
    renewDeadlineMs,
    retryPeriodMs,
    workers,
    logLevel: logLevel as OperatorConfig["logLevel"],
    insecureSkipAttestation: parseBool("insecure-skip-attestation", get("insecure-skip-attestation")),
    registrationFile: get("registration"),
    heartbeatIntervalMs: parseDuration("heartbeat-interval", get("heartbeat-interval")),
    heartbeatTimeoutMs: parseDuration("heartbeat-timeout", get("heartbeat-timeout")),
    watchNamespace: get("watch-namespace"),
    nats: natsSettings(get("nats-url"), get("nats-user"), get("nats-password")),
    learnerNatsUrl: get("learner-nats-url") || get("nats-url"),
    learnerNatsSecret: get("learner-nats-secret"),
    regionSelector: get("region-selector"),
    attestationPolicyFile,
    trustAnchors,
    evidenceSource,
    attestationAgentPort: agentPort,
    nrasCa: get("nras-ca"),
    referenceCa: get("reference-ca"),
    auditLog: get("audit-log"),
    auditKey: get("audit-key"),
  };
}
