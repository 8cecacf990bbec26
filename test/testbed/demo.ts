// `make demo`: three sovereign regions train one model together on the local testbed.
//
// Brings the testbed up (or reuses it), installs the CRDs, starts the operator as separate
// processes (one hub, one member per region, each with only its own credentials; the hub under
// Node's permission model, with no read access to any region's data), registers and accepts the
// regions, writes each region's share of the handwritten digits into that region's data
// directory, and trains the same model twice: examples/demo/federatedrun.yaml (FedAvg) and
// examples/demo/federatedrun-diloco.yaml (DiLoCo), one after the other; each learner pod's
// command runs as a local process (test/testbed/pod-runner.ts: kwok nodes run no containers).
// Meanwhile it prints attestation verdicts as the members record them, rounds, per-region
// state and the regions' own scores; then the accuracy against centralized training and each
// region alone (examples/demo/baselines.py, same step budget), the bytes each region sent
// against synchronising every step, the leaf links' byte counters against the regions' data,
// the audit link from every aggregate to its contributors' attested evidence, and where to look.
//
//   node test/testbed/demo.ts [--run=fedavg|diloco] [--rounds=N] [--inner-steps=H] [--batch=B]
//        [--fail-attestation=REGION[:FAULT]] [--fail-after-round=N] [--timeout=S] [--keep]
//        [--kill-region=REGION [--kill-after-round=N] [--outage=S]] [--quorum=all] [--grace=S]
//        [--overlap] [--no-baselines]
//        [--goodput] [--restart=PROCESS [--restart-after-round=N]]
//
// --kill-region (testbed only): in each run, once round ⌈R/3⌉ (or N) closed, REGION's member operator,
// its leaf nats-server and its learner processes are killed (SIGKILL); after an outage as long
// as the run took so far (or --outage seconds) they are started again, and the member replaces
// its failed learner. The demo reports when the hub showed the region not Ready (the hub here
// gives up on a region after 20 s without a heartbeat; members beat every 5 s) and Ready again.
// --quorum=all with no --grace: the synchronous baseline (every region in every round, grace 0).
// --overlap: the learners keep training while a round closes (sovereign_sdk.Overlap).
// --goodput: two DiLoCo runs, the first with --overlap and the YAML's quorum (2 of 3), the second
// the synchronous baseline; each run reports its goodput (test/testbed/goodput.ts) from the
// learners' timing events. Goodput runs use H = 2000 steps of batch 256 unless told otherwise,
// so that a round's compute (seconds) is not dwarfed by the round's protocol overhead.
//
// --fail-attestation (testbed only): after round N (default 2) of the last run, REGION's GPU
// nodes answer their next challenge with bad evidence (FAULT, default measurement-mismatch); the
// member quarantines them and stops its learner; the run should go on with the other two regions
// (quorum 2); docs/demo.md says what happens today.
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { generateKeyPairSync } from "node:crypto";
import { createWriteStream, existsSync, readFileSync } from "node:fs";
import { mkdir, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { join } from "node:path";
import { promisify } from "node:util";
import {
  CoreV1Api,
  CustomObjectsApi,
  type KubeConfig,
  PatchStrategy,
  setHeaderOptions,
} from "@kubernetes/client-node";
import { connect } from "@nats-io/transport-node";
import { parse, stringify } from "yaml";
import { parseTrustedKeys, verifyAuditFile } from "../../attestation/audit/mod.ts";
import { testbedAttestationPolicy } from "../../attestation/testbed/mod.ts";
import { installCrds } from "../../crds/install.ts";
import type { FederatedRun, LearnerKey, RegionWork, SovereignNode } from "../../crds/types.generated.ts";
import { issueRegionCredential } from "../../operator/hub/credentials.ts";
import { NODE_ANNOTATIONS } from "../../operator/member/attestation-rules.ts";
import { EVIDENCE_FAULT_ANNOTATION } from "../../operator/member/attestation-testbed-source.ts";
import { ATTESTED_LABEL } from "../../operator/member/registration.ts";
import { LEARNER_NAMESPACE } from "../../operator/member/work-controller.ts";
import { fetchGlobalModel, publishGlobalModel, removeRunBuckets } from "../../transport/mod.ts";
import { demoPython } from "../sdk/sdk-venv.ts";
import {
  type AuditEntry,
  type AuditLink,
  AuditTail,
  type Communication,
  checkAuditLink,
  communication,
  kib,
  type LeafDelta,
  leafCounters,
  leafDelta,
  pct,
  readAudit,
  safetensorsParameters,
} from "./demo-report.ts";
import { computeGoodput, type Goodput, type Incarnation, parseLearnerLog } from "./goodput.ts";
import { eventually, useTestbed } from "./harness.ts";
import { PodRunner } from "./pod-runner.ts";
import { restart as restartServer, start as startServer, stop as stopServer } from "./testbed.ts";
import { repoRoot } from "./topology.ts";

const execFileP = promisify(execFile);
const G = { group: "sovereign.ai", version: "v1alpha1" };
const args = process.argv.slice(2);
const flag = (name: string) => args.find((a) => a.startsWith(`--${name}=`))?.split("=")[1];
const keep = args.includes("--keep");
const JURISDICTIONS = ["DE", "FR", "NL", "IT"];
const t0 = Date.now();
const say = (line: string) => console.log(`[${((Date.now() - t0) / 1000).toFixed(0).padStart(4)}s] ${line}`);

const goodputMode = args.includes("--goodput");
interface RunChoice {
  key: string;
  file: string;
  /** Learners train ahead while the round closes (DEMO_OVERLAP=1). */
  overlap: boolean;
  /** The synchronous baseline: quorum = every region, grace 0. */
  quorumAll: boolean;
  label: string;
}
const RUNS: RunChoice[] = goodputMode
  ? [
      {
        key: "diloco-overlap",
        file: "federatedrun-diloco.yaml",
        overlap: true,
        quorumAll: false,
        label: "quorum 2/3 + overlap",
      },
      {
        key: "diloco-sync",
        file: "federatedrun-diloco.yaml",
        overlap: false,
        quorumAll: true,
        label: "synchronous (quorum all, grace 0)",
      },
    ]
  : [
      { key: "fedavg", file: "federatedrun.yaml" },
      { key: "diloco", file: "federatedrun-diloco.yaml" },
    ]
      .filter((r) => !flag("run") || flag("run") === r.key)
      .map((r) => ({
        ...r,
        overlap: args.includes("--overlap"),
        quorumAll: flag("quorum") === "all",
        label: [args.includes("--overlap") ? "overlap" : "", flag("quorum") === "all" ? "quorum all" : ""]
          .filter(Boolean)
          .join(", "),
      }));
if (RUNS.length === 0) throw new Error(`--run=${flag("run")}: use fedavg or diloco`);
if (flag("quorum") && flag("quorum") !== "all")
  throw new Error(`--quorum=${flag("quorum")}: only "all" is known`);
const killRegion = flag("kill-region");
/** --kill-after-round=N: kill once round N closed (default ⌈R/3⌉). */
const killAfterFlag = flag("kill-after-round") ? Number(flag("kill-after-round")) : undefined;
if (killAfterFlag !== undefined && !(Number.isInteger(killAfterFlag) && killAfterFlag > 0))
  throw new Error(`--kill-after-round=${flag("kill-after-round")}: a round number, above 0`);
/** --outage=S: how long the killed region stays down (default: as long as the run has trained so far). */
const outageFlag = flag("outage") ? Number(flag("outage")) : undefined;
if (outageFlag !== undefined && !(outageFlag > 0))
  throw new Error(`--outage=${flag("outage")}: seconds, above 0`);
/** --restart=PROCESS (a testbed server, e.g. region-b/kube-apiserver): restarted once round N closed. */
const restartProcess = flag("restart");
const restartAfterFlag = flag("restart-after-round") ? Number(flag("restart-after-round")) : undefined;
if (restartAfterFlag !== undefined && !(Number.isInteger(restartAfterFlag) && restartAfterFlag > 0))
  throw new Error(`--restart-after-round=${flag("restart-after-round")}: a round number, above 0`);
const withBaselines = !args.includes("--no-baselines");
const [failRegion, failFault = "measurement-mismatch"] = (flag("fail-attestation") ?? "").split(":");
const failAfterRound = Number(flag("fail-after-round") ?? 2);

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.listen(0, "127.0.0.1", () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
    srv.on("error", reject);
  });
}

async function python(py: string, argv: string[]): Promise<string> {
  const { stdout } = await execFileP(py, argv, { cwd: repoRoot, maxBuffer: 16 * 1024 * 1024 });
  return stdout;
}

const tb = await useTestbed();
const stateDir = join(tb.description.stateDir, "demo");
const logDir = join(tb.description.stateDir, "logs", "demo");
await rm(stateDir, { recursive: true, force: true });
await rm(logDir, { recursive: true, force: true });
await mkdir(stateDir, { recursive: true });
await mkdir(logDir, { recursive: true });
const hubKc = tb.kubeConfig("hub");
const custom = hubKc.makeApiClient(CustomObjectsApi);
const regions = tb.regions;
const nats = tb.description.nats;
say(`testbed: hub + ${regions.join(", ")} (state ${tb.description.stateDir})`);

// The learners' Python (the SDK, numpy, scikit-learn for its bundled digits), installed once into .venv-sdk.
say("preparing the learners' Python environment (first time: a minute or two)");
const py = await demoPython();

// Each region's data, in that region's own directory (the learners' SOVEREIGN_DATA_DIR): its
// share of the digits, dealt non-IID. Nothing else on the testbed reads it, the hub least of all.
const dataRoot = join(stateDir, "data");
const dataDir = (region: string) => join(dataRoot, region);
const datasets = JSON.parse(
  await python(py, ["examples/demo/baselines.py", "prepare", dataRoot, ...regions]),
) as Record<string, { train: number; test: number; classes: number[]; bytes: number }>;
for (const r of regions) {
  const d = datasets[r];
  if (!d) continue;
  say(
    `${r}: ${d.train} training + ${d.test} held-out digits (${kib(d.bytes)} in ${dataDir(r)}), classes 0-9: ${d.classes.join("/")}`,
  );
}

// The API and the testbed attestation policy: as strict as a production one, but trusting the
// testbed's own roots (the kwok GPUs' evidence is minted under them), which no production
// policy does. Members read it from a file: their hub credential cannot read policies.
await installCrds(hubKc);
const policy = testbedAttestationPolicy("testbed-demo");
const policyFile = join(stateDir, "attestationpolicy.yaml");
// JSON (valid YAML) so that values such as "On" stay strings for every YAML reader.
await writeFile(policyFile, JSON.stringify(policy, null, 2));
await custom
  .deleteClusterCustomObject({ ...G, plural: "attestationpolicies", name: policy.metadata.name as string })
  .catch(() => undefined);
await custom.createClusterCustomObject({ ...G, plural: "attestationpolicies", body: policy });
// Audit trails (hub and members), checkpoints signed with a key kept for the auditor.
const auditKey = generateKeyPairSync("ed25519");
const keyDir = join(stateDir, "keys");
const hubDir = join(stateDir, "hub");
await mkdir(keyDir, { recursive: true });
await mkdir(hubDir, { recursive: true });
const auditKeyFile = join(keyDir, "audit-key.pem");
const auditPublicKeyFile = join(keyDir, "audit-key.pub.pem");
await writeFile(auditKeyFile, auditKey.privateKey.export({ format: "pem", type: "pkcs8" }) as string, {
  mode: 0o600,
});
await writeFile(auditPublicKeyFile, auditKey.publicKey.export({ format: "pem", type: "spki" }) as string);
const auditFile = (who: string) =>
  who === "hub" ? join(hubDir, "audit-hub.jsonl") : join(stateDir, `audit-${who}.jsonl`);
const auditFlags = (who: string) => [`--audit-log=${auditFile(who)}`, `--audit-key=${auditKeyFile}`];

// The demo's own namespace and regions: its hub never touches anything else on the testbed.
const runNs = "sovereign-demo";
const CONSORTIUM = "sovereign.ai/consortium=demo";
const hubNats = await connect({
  servers: nats.hub.url,
  user: nats.hub.admin.user,
  pass: nats.hub.admin.password,
});
// A previous demo's runs and their buckets go first, so the demo can be run again.
const previousRuns = (await custom
  .listNamespacedCustomObject({ ...G, plural: "federatedruns", namespace: runNs })
  .catch(() => ({ items: [] }))) as { items: FederatedRun[] };
for (const previous of previousRuns.items) {
  say(`removing the previous demo run ${runNs}/${previous.metadata.name}`);
  await custom
    .deleteNamespacedCustomObject({
      ...G,
      plural: "federatedruns",
      namespace: runNs,
      name: previous.metadata.name as string,
    })
    .catch(() => undefined);
}

// Operators: separate processes, as in production, each with only its own credentials.
const children: ChildProcess[] = [];
const startOperator = (name: string, argv: string[], nodeFlags: string[] = []) => {
  const log = createWriteStream(join(logDir, `${name}.log`));
  const child = spawn(process.execPath, [...nodeFlags, join(repoRoot, "operator", "main.ts"), ...argv], {
    cwd: repoRoot,
    stdio: ["ignore", "pipe", "pipe"],
  });
  child.stdout?.pipe(log);
  child.stderr?.pipe(log);
  child.on("exit", (code) => {
    if (stopping || killedOnPurpose.has(child)) return;
    operatorFailed = `operator ${name} exited (${code}); see ${join(logDir, `${name}.log`)}`;
    say(operatorFailed);
  });
  children.push(child);
  return child;
};
/** Operators --kill-region killed: their exit is the scenario, not a failure. */
const killedOnPurpose = new Set<ChildProcess>();
let stopping = false;
let operatorFailed = "";
// Whatever ends this process (an error included) ends the operators it started.
process.on("exit", () => {
  for (const c of children) if (c.exitCode === null) c.kill("SIGTERM");
});
const hubMetricsPort = await freePort();
const common = (metrics: number, probes: number) => [
  "--leader-elect=false",
  `--metrics-bind-address=127.0.0.1:${metrics}`,
  `--health-probe-bind-address=127.0.0.1:${probes}`,
];
await hubKc
  .makeApiClient(CoreV1Api)
  .createNamespace({ body: { metadata: { name: runNs } } })
  .catch(() => undefined);

// The hub runs under Node's permission model: it may read the operator's code (the repository
// without its state directory), its own kubeconfig and PKI, the audit key, and read and write its
// audit directory; nothing else, so no region's data directory.
const hubPki = join(tb.description.stateDir, "clusters", "hub", "pki");
const repoEntries = (await readdir(repoRoot)).filter((e) => !e.startsWith("."));
const hubReads = [
  ...repoEntries.map((e) => join(repoRoot, e)),
  hubPki,
  tb.cluster("hub").kubeconfig,
  auditKeyFile,
  hubDir,
];
const hubPermission = [
  "--permission",
  ...hubReads.map((p) => `--allow-fs-read=${p}`),
  `--allow-fs-write=${hubDir}`,
];
startOperator(
  "hub",
  [
    "--mode=hub",
    // Members beat every 5 s (below): four missed beats and a region is not Ready.
    "--heartbeat-timeout=20s",
    `--watch-namespace=${runNs}`,
    `--region-selector=${CONSORTIUM}`,
    `--kubeconfig=${tb.cluster("hub").kubeconfig}`,
    `--nats-url=${nats.hub.url}`,
    `--nats-user=${nats.hub.admin.user}`,
    `--nats-password=${nats.hub.admin.password}`,
    ...auditFlags("hub"),
    ...common(hubMetricsPort, await freePort()),
  ],
  hubPermission,
);
say(`hub operator started under node --permission (metrics http://127.0.0.1:${hubMetricsPort}/metrics)`);
// The same flags, on a probe that tries what the hub must not be able to do: read a region's data.
const probe = await execFileP(process.execPath, [
  ...hubPermission,
  "-e",
  `const fs=require("node:fs");for(const f of process.argv.slice(1)){try{fs.readFileSync(f);console.log("read "+f)}catch(e){console.log(e.code+" "+f)}}`,
  ...regions.map((r) => join(dataDir(r), "digits.npz")),
]).then((r) => r.stdout.trim().split("\n"));
const hubDenied = probe.filter((l) => l.startsWith("ERR_ACCESS_DENIED")).length === regions.length;
say(
  `the hub's permission flags deny reading the regions' data: ${hubDenied ? "yes" : "NO"} (a probe under the same flags: ${probe.map((l) => l.split(" ")[0]).join(", ")})`,
);

/**
 * --fail-attestation: when each step of the quarantine happened (ms since the epoch): the fault
 * injected, the failed region's first failed verdict and its first NodeQuarantined record (the
 * members' audit times), its quarantine first shown in the run's status, and the first round
 * closed without it.
 */
export interface QuarantineTimeline {
  region: string;
  injectedAt: number;
  failedVerdictAt?: number;
  quarantinedAt?: number;
  statusShowsAt?: number;
  firstRoundWithout?: { round: number; outcome: string; contributingRegions: string[]; closedAt: number };
}
let quarantineTimeline: QuarantineTimeline | undefined;

// Attestation verdicts, admissions and quarantines, as the members write them to their audit logs.
const verdictTail = new AuditTail(Object.fromEntries(regions.map((r) => [r, auditFile(r)])), (region, e) => {
  const qt = quarantineTimeline;
  const at = Date.parse(e.time);
  if (qt && region === qt.region && at >= qt.injectedAt) {
    if (e.kind === "AttestationVerdict" && !e.body.verdict.passed) qt.failedVerdictAt ??= at;
    if (e.kind === "NodeQuarantined") qt.quarantinedAt ??= at;
  }
  if (e.kind === "AttestationVerdict") {
    const v = e.body.verdict;
    say(
      `${region} node ${e.body.node}: ${v.passed ? "attested" : `FAILED attestation (${v.reasons.join(", ")})`} (policy ${e.body.policy.name}, ${v.devices.length} GPUs, nonce ${String(v.nonce).slice(0, 12)}…)`,
    );
  } else if (e.kind === "PodAdmitted") {
    say(
      `${region} learner ${e.body.pod.name}: admitted to ${e.body.node} (verdict ${String(e.body.verdictDigest).slice(0, 12)}…)`,
    );
  } else if (e.kind === "NodeQuarantined") {
    say(
      `${region} node ${e.body.node}: QUARANTINED (${e.body.reasons.join(", ")}); its learners are stopped`,
    );
  }
});
verdictTail.start();

/** Each member's flags (without its ports), to start it again after --kill-region. */
const memberArgs = new Map<string, string[]>();
const memberProcs = new Map<string, ChildProcess>();
if (killRegion && !regions.includes(killRegion))
  throw new Error(`--kill-region=${killRegion}: not a region of the testbed (${regions.join(", ")})`);
for (const [i, region] of regions.entries()) {
  const cred = await issueRegionCredential(hubKc, region, { ttlSeconds: 24 * 3600 });
  const hubKubeconfig = join(stateDir, `${region}-hub.kubeconfig`);
  await writeFile(hubKubeconfig, cred.kubeconfig, { mode: 0o600 });
  const registration = join(stateDir, `${region}-registration.yaml`);
  await writeFile(
    registration,
    stringify({
      labels: { "sovereign.ai/consortium": "demo" },
      spec: {
        displayName: `${region} (testbed)`,
        jurisdiction: JURISDICTIONS[i % JURISDICTIONS.length],
        attestationPolicyRef: { name: policy.metadata.name },
        dataResidency: {
          allowedEgress: ["ModelDeltas", "TrainingMetrics"],
          acceptAggregates: true,
          checkpointLocation: "InRegion",
        },
        jetStreamDomain: region,
      },
    }),
  );
  // The learners' NATS credential, as a Secret in the region (never on the hub).
  const r = nats.regions[region];
  if (!r) throw new Error(`no NATS for ${region}`);
  const core = tb.kubeConfig(region).makeApiClient(CoreV1Api);
  await core.createNamespace({ body: { metadata: { name: LEARNER_NAMESPACE } } }).catch(() => undefined);
  await core
    .deleteNamespacedSecret({ name: "learner-nats", namespace: LEARNER_NAMESPACE })
    .catch(() => undefined);
  await core.createNamespacedSecret({
    namespace: LEARNER_NAMESPACE,
    body: {
      metadata: { name: "learner-nats" },
      stringData: { user: r.learner.user, password: r.learner.password },
    },
  });
  // A fresh start for the gate: no attested label or injected fault from an earlier demo or test
  // carries over, nor a failed verdict (a node an earlier --fail-attestation left quarantined).
  // A passing verdict is kept: the member resumes from it, as after a restart.
  for (const node of tb.cluster(region).nodes.filter((n) => n.gpus > 0)) {
    const current = await core.readNode({ name: node.name }).catch(() => undefined);
    const failed = (current?.metadata?.annotations?.[NODE_ANNOTATIONS.reason] ?? "Verified") !== "Verified";
    await core
      .patchNode(
        {
          name: node.name,
          body: {
            metadata: {
              labels: { [ATTESTED_LABEL]: null },
              annotations: {
                [EVIDENCE_FAULT_ANNOTATION]: null,
                ...(failed ? Object.fromEntries(Object.values(NODE_ANNOTATIONS).map((a) => [a, null])) : {}),
              },
            },
          },
        },
        setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
      )
      .catch(() => undefined);
  }
  memberArgs.set(region, [
    "--mode=member",
    `--region=${region}`,
    `--kubeconfig=${tb.cluster(region).kubeconfig}`,
    `--hub-kubeconfig=${hubKubeconfig}`,
    `--registration=${registration}`,
    "--heartbeat-interval=5s",
    `--nats-url=${r.url}`,
    `--nats-user=${r.member.user}`,
    `--nats-password=${r.member.password}`,
    "--learner-nats-secret=learner-nats",
    // The gate: each kwok GPU node answers challenges with evidence minted in NVIDIA's format.
    `--attestation-policy=${policyFile}`,
    "--trust-anchors=testbed",
    "--evidence-source=testbed",
    ...auditFlags(region),
  ]);
  memberProcs.set(
    region,
    startOperator(`member-${region}`, [
      ...(memberArgs.get(region) ?? []),
      ...common(await freePort(), await freePort()),
    ]),
  );
}
say(`member operators started in ${regions.join(", ")}; each registers its region with the hub`);

// The hub administrator accepts each region once it has registered.
for (const region of regions) {
  await eventually(
    () => custom.getClusterCustomObject({ ...G, plural: "sovereignnodes", name: region }),
    `${region} registering`,
    60_000,
  );
  await custom.patchClusterCustomObject(
    { ...G, plural: "sovereignnodes", name: region, body: { spec: { accepted: true } } },
    setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
  );
}
const node = async (region: string) =>
  (await custom.getClusterCustomObject({ ...G, plural: "sovereignnodes", name: region })) as SovereignNode;
for (const region of regions) {
  await eventually(
    async () => {
      const ready = (await node(region)).status?.conditions?.find((c) => c.type === "Ready");
      return ready?.status === "True" ? ready : undefined;
    },
    `${region} Ready`,
    180_000,
  );
}
say(`regions accepted and Ready: ${regions.join(", ")}`);

// The initial model (round-0), made by the learner program itself so shapes always match.
const initialPath = join(stateDir, "initial.safetensors");
await python(py, ["examples/demo/train.py", "--init", initialPath]);
const initialBytes = await readFile(initialPath);
const parameters = safetensorsParameters(initialBytes);
// The previous demos' model buckets go once their runs are gone.
for (const previous of previousRuns.items) {
  const name = previous.metadata.name as string;
  await eventually(
    async () =>
      !(await custom
        .getNamespacedCustomObject({ ...G, plural: "federatedruns", namespace: runNs, name })
        .then(() => true)
        .catch(() => false)),
    `the previous run ${name} gone`,
    60_000,
  );
  await removeRunBuckets(hubNats, { namespace: runNs, run: name });
}

// ---------------------------------------------------------------------------------------------
// The runs

interface RunResult {
  key: string;
  name: string;
  algorithm: string;
  rounds: number;
  innerSteps: number;
  run?: FederatedRun;
  seconds: number;
  leaf: Record<string, LeafDelta>;
  comm?: Communication;
  bytesSent: Record<string, number>;
  deltasAccepted: Record<string, number>;
  modelBytes: number;
  evaluation?: Judged;
  link?: AuditLink;
  quarantine?: string[];
  quarantineTimeline?: QuarantineTimeline;
  label: string;
  quorum?: { minRegions?: number; graceWindowSeconds?: number; lateDeltas?: string };
  overlap: boolean;
  batch: number;
  kill?: Outage;
  restart?: ServerRestart;
  goodput?: Goodput;
  deltas?: DeltaAccount;
}

/** --restart: which server was restarted after which round, and how long it was away (ms since the epoch). */
export interface ServerRestart {
  process: string;
  afterRound: number;
  at: number;
  backAt?: number;
  /** The rounds closed after the restart began: their outcome and who contributed. */
  roundsAfter: { round: number; outcome: string; contributingRegions: string[] }[];
}

/** --kill-region: what was killed and when (ms since the epoch). */
export interface Outage {
  region: string;
  afterRound: number;
  killedAt: number;
  plannedMs: number;
  restoredAt?: number;
  /** When the member's replacement learner started (its pod admitted again). */
  learnerBackAt?: number;
  outageSeconds?: number;
  learnersKilled: number;
  /** Rounds whose aggregate has the region's delta, trained after it came back. */
  contributedAfter: number[];
  /** The first round the region's fresh learner trained (the global model it fetched is round − 1). */
  rejoinedAtRound?: number;
  /** When the hub first showed the region not Ready (its SovereignNode), read by the demo each second. */
  detectedAt?: number;
  /** Why the hub said so (the Ready condition's reason). */
  detectedReason?: string;
  /** When the hub showed the region Ready again after it came back. */
  readyAgainAt?: number;
  /** Rounds closed while the region was out, who aggregated them, and when (ms, whole seconds). */
  roundsDuring: { round: number; outcome: string; contributingRegions: string[]; closedAt: number }[];
}

/** Every accepted delta against the round history: aggregated once, lost, or counted twice. */
interface DeltaAccount {
  published: number;
  accepted: number;
  aggregated: number;
  lost: number;
  /** Accepted, then refused as RegionQuarantined: the region was quarantined before the round closed. */
  excluded: number;
  doubleCounted: number;
  problems: string[];
}

interface Judged {
  accuracy: number;
  loss: number;
  regions: Record<string, number>;
}

const runDocs = RUNS.map((r) => {
  const doc = parse(readFileSync(join(repoRoot, "examples", "demo", r.file), "utf8")) as FederatedRun;
  if (flag("rounds")) doc.spec.rounds = Number(flag("rounds"));
  const env = doc.spec.workload.env ?? [];
  doc.spec.workload.env = env;
  const h = flag("inner-steps") ?? (goodputMode ? "2000" : undefined);
  if (h) {
    for (const e of env) if (e.name === "DEMO_INNER_STEPS") e.value = h;
    if (doc.spec.algorithm.diloco) doc.spec.algorithm.diloco.innerSteps = Number(h);
  }
  const batch = flag("batch") ?? (goodputMode ? "256" : undefined);
  if (batch) env.push({ name: "DEMO_BATCH", value: batch });
  if (r.overlap) env.push({ name: "DEMO_OVERLAP", value: "1" });
  const quorum = { ...doc.spec.quorum };
  if (flag("grace")) quorum.graceWindowSeconds = Number(flag("grace"));
  if (r.quorumAll) {
    // The API holds a quorum to at most the placement's minimum: both are every region.
    doc.spec.placement.minRegions = regions.length;
    quorum.minRegions = regions.length;
    // No grace: the baseline waits for every region and not a moment longer (--goodput's
    // --grace is for its quorum run).
    quorum.graceWindowSeconds = goodputMode ? 0 : Number(flag("grace") ?? 0);
  }
  // A region back from an outage may deliver a round late: fold its work in, not drop it.
  if (killRegion) quorum.lateDeltas = "NextRound";
  doc.spec.quorum = quorum as typeof doc.spec.quorum;
  const innerSteps = Number(env.find((e) => e.name === "DEMO_INNER_STEPS")?.value ?? 100);
  return { ...r, doc, innerSteps, batch: Number(batch ?? 32) };
});
// The baselines' budget: the SGD steps all three learners take together in one run.
const budget = Math.max(...runDocs.map((r) => regions.length * r.doc.spec.rounds * r.innerSteps));
// --no-baselines: they would take the learners' CPU while goodput is measured.
const baselinesPromise = (
  withBaselines
    ? python(py, ["examples/demo/baselines.py", "baselines", dataRoot, String(budget), ...regions])
    : Promise.reject(new Error("skipped (--no-baselines)"))
).then(
  (out) =>
    JSON.parse(out) as { steps: number; batch: number; centralized: Judged; alone: Record<string, Judged> },
);
baselinesPromise.catch(() => undefined);

const timeoutMs = Number(flag("timeout") ?? 15 * 60) * 1000;
const results: RunResult[] = [];

for (const [index, spec] of runDocs.entries()) {
  const last = index === runDocs.length - 1;
  const runDoc = spec.doc;
  // A fresh name per demo: re-creating a run under a name that just existed is not reliable yet.
  const runName = `${runDoc.metadata.name as string}-${Date.now().toString(36).slice(-5)}`;
  runDoc.metadata.name = runName;
  runDoc.metadata.namespace = runNs;
  runDoc.spec.attestation = { policyRef: { name: policy.metadata.name as string } };
  console.log("");
  say(`=== run ${index + 1}/${runDocs.length}: ${runDoc.spec.algorithm.type} ===`);
  const initial = await publishGlobalModel(hubNats, { namespace: runNs, run: runName, round: 0 }, [
    initialBytes,
  ]);
  say(
    `initial model uploaded as round-0 (${parameters} parameters, ${initial.size} bytes, ${initial.digest.slice(0, 19)}…)`,
  );

  // Learners run as local processes for pods bound to the kwok GPU nodes.
  const runner = new PodRunner({
    clusters: Object.fromEntries(regions.map((r) => [r, tb.kubeConfig(r)])) as Record<string, KubeConfig>,
    namespace: LEARNER_NAMESPACE,
    labelSelector: `sovereign.ai/run=${runName}`,
    dataDir: (cluster) => dataDir(cluster),
    logDir: join(logDir, "learners", spec.key),
    cwd: repoRoot,
    baseEnv: { PATH: `${join(repoRoot, ".venv-sdk", "bin")}:${process.env.PATH}`, PYTHONUNBUFFERED: "1" },
    onEvent: (e) => {
      if (e.kind === "started") {
        firstLearnerAt ??= Date.now();
        learnersUp.add(e.cluster);
        if (learnersUp.size === regions.length) everyLearnerAt ??= Date.now();
      }
      if (
        e.kind === "started" &&
        outage?.restoredAt &&
        e.cluster === outage.region &&
        !outage.learnerBackAt
      ) {
        outage.learnerBackAt = Date.now();
        say(
          `--kill-region: ${e.cluster}'s fresh learner started ${((outage.learnerBackAt - outage.restoredAt) / 1000).toFixed(0)} s after the region came back`,
        );
      }
      say(`${e.cluster}: learner ${e.pod} ${e.kind}${e.code !== undefined ? ` (exit ${e.code})` : ""}`);
    },
  });
  /**
   * When the run's first learner process started, and when every region had one: the run's
   * training time counts from the latter (admissions finish minutes apart under load).
   */
  let firstLearnerAt: number | undefined;
  let everyLearnerAt: number | undefined;
  const learnersUp = new Set<string>();
  let outage: Outage | undefined;
  runner.start();
  // The leaf links' background (streams of earlier runs and tests that cross them), measured
  // over 10 s before this run exists, to tell the run's own bytes from it.
  const background0 = await leafCounters(nats.hub.monitorUrl);
  const backgroundT0 = Date.now();
  await new Promise((r) => setTimeout(r, 10_000));
  const leafBefore = await leafCounters(nats.hub.monitorUrl);
  const backgroundSeconds = (Date.now() - backgroundT0) / 1000;
  const leafT0 = Date.now();
  const deltaBytesBefore = await hubDeltaBytes();
  const started = Date.now();
  await custom.createNamespacedCustomObject({
    ...G,
    plural: "federatedruns",
    namespace: runNs,
    body: runDoc,
  });
  const algo = runDoc.spec.algorithm;
  say(
    `applied ${runNs}/${runName}: ${runDoc.spec.rounds} rounds of ${algo.type}${algo.diloco ? ` (outer Nesterov lr ${algo.diloco.outerLearningRate}, momentum ${algo.diloco.outerMomentum})` : ""}, H = ${spec.innerSteps} inner steps, ${runDoc.spec.deltaEncoding?.dtype} deltas, quorum ${runDoc.spec.quorum?.minRegions}, grace ${runDoc.spec.quorum?.graceWindowSeconds}s`,
  );

  const seen = new Set<string>();
  const learnerKeys = new Map<string, LearnerKey>();
  const quarantine: string[] = [];
  let faultInjected = false;
  const killAfter = killAfterFlag ?? Math.ceil(runDoc.spec.rounds / 3);
  let serverRestart: ServerRestart | undefined;
  /** --kill-region: the region's member, leaf server and learners go down at once. */
  const killNow = async (region: string) => {
    const killedAt = Date.now();
    const member = memberProcs.get(region);
    if (member) {
      killedOnPurpose.add(member);
      member.kill("SIGKILL");
    }
    await stopServer(`${region}/nats-server`, { stateDir: tb.description.stateDir, kill: true, log: say });
    const learnersKilled = runner.kill(region);
    // Out for as long as the run has trained so far: its first third. Admitting the first
    // learners (attestation, minutes under load) is set-up, not training, so it is not counted:
    // the clock starts once every region has a learner.
    const plannedMs = outageFlag
      ? outageFlag * 1000
      : killedAt - (everyLearnerAt ?? firstLearnerAt ?? started);
    outage = {
      region,
      afterRound: killAfter,
      killedAt,
      plannedMs,
      learnersKilled,
      contributedAfter: [],
      roundsDuring: [],
    };
    say(
      `--kill-region: killed ${region}'s member operator, its leaf nats-server and ${learnersKilled} learner process(es) after round ${killAfter}; back in ${(plannedMs / 1000).toFixed(0)} s (as long as the run has trained so far)`,
    );
  };
  const restore = async () => {
    if (!outage || outage.restoredAt) return;
    const region = outage.region;
    await startServer(`${region}/nats-server`, { stateDir: tb.description.stateDir, log: say });
    memberProcs.set(
      region,
      startOperator(`member-${region}-restarted`, [
        ...(memberArgs.get(region) ?? []),
        ...common(await freePort(), await freePort()),
      ]),
    );
    outage.restoredAt = Date.now();
    outage.outageSeconds = (outage.restoredAt - outage.killedAt) / 1000;
    say(
      `--kill-region: ${region} is back after ${outage.outageSeconds.toFixed(0)} s (nats-server and member operator started; the member replaces its failed learner)`,
    );
  };
  /** The hub's view of the killed region (its SovereignNode's Ready), and the rounds closed without it. */
  const watchOutage = async (o: Outage, rounds: NonNullable<FederatedRun["status"]>["rounds"] = []) => {
    for (const r of rounds) {
      if (o.roundsDuring.some((x) => x.round === r.round) || !r.completionTime) continue;
      const closedAt = Date.parse(r.completionTime);
      if (closedAt < o.killedAt - 1000 || closedAt > (o.restoredAt ?? Number.POSITIVE_INFINITY)) continue;
      if (r.outcome === "QuorumReached" || r.outcome === "AllRegionsReported")
        o.roundsDuring.push({
          round: r.round,
          outcome: r.outcome,
          contributingRegions: r.contributingRegions ?? [],
          closedAt,
        });
    }
    if (o.detectedAt && (o.readyAgainAt || !o.restoredAt)) return;
    const node = (await custom.getClusterCustomObject({
      ...G,
      plural: "sovereignnodes",
      name: o.region,
    })) as {
      status?: { conditions?: { type: string; status: string; reason?: string }[] };
    };
    const ready = node.status?.conditions?.find((c) => c.type === "Ready");
    if (!o.detectedAt && ready?.status === "False") {
      o.detectedAt = Date.now();
      o.detectedReason = ready.reason;
      say(
        `--kill-region: the hub shows ${o.region} not Ready (${ready.reason}) ${((o.detectedAt - o.killedAt) / 1000).toFixed(0)} s after it went down`,
      );
    } else if (o.detectedAt && o.restoredAt && !o.readyAgainAt && ready?.status === "True") {
      o.readyAgainAt = Date.now();
      say(
        `--kill-region: the hub shows ${o.region} Ready again ${((o.readyAgainAt - o.restoredAt) / 1000).toFixed(0)} s after it came back`,
      );
    }
  };
  const progress = async (): Promise<FederatedRun | undefined> => {
    const run = (await custom.getNamespacedCustomObject({
      ...G,
      plural: "federatedruns",
      namespace: runNs,
      name: runName,
    })) as FederatedRun;
    const s = run.status;
    const line = `phase ${s?.phase ?? "-"}, round ${s?.currentRound ?? 0}/${run.spec.rounds}${s?.roundProgress ? ` ${s.roundProgress.phase} (${(s.roundProgress.deliveredRegions ?? []).join(", ") || "no deltas yet"})` : ""}`;
    if (!seen.has(line)) {
      seen.add(line);
      say(line);
    }
    for (const r of s?.rounds ?? []) {
      const key = `round ${r.round} ${r.outcome}`;
      if (seen.has(key)) continue;
      seen.add(key);
      say(
        r.aggregateDigest
          ? `round ${r.round}: ${r.outcome} — aggregated ${r.contributingRegions?.join(", ")}${r.lateRegions?.length ? `; late ${r.lateRegions.join(", ")}` : ""}${r.foldedLateDeltas?.length ? `; folded in late: ${r.foldedLateDeltas.map((f) => `${f.region} round ${f.round}`).join(", ")}` : ""}; model ${r.aggregateDigest.slice(0, 19)}…`
          : `round ${r.round}: ${r.outcome} — nothing aggregated (late ${r.lateRegions?.join(", ") || "-"}); the round starts again`,
      );
      for (const m of await learnerMetrics(spec.key, r.round)) say(`  ${m}`);
    }
    // The learners' keys and their attestation bindings, as the members list them at the hub.
    const works = (await custom.listClusterCustomObject({ ...G, plural: "regionworks" })) as {
      items: RegionWork[];
    };
    for (const w of works.items) {
      if (w.spec.run.name !== runName) continue;
      for (const k of w.status?.learnerKeys ?? []) learnerKeys.set(`${k.publicKey}/${k.learner}`, k);
    }
    if (failRegion && last) {
      if (!faultInjected && (s?.rounds ?? []).some((r) => r.round >= failAfterRound)) {
        faultInjected = true;
        await injectFault(failRegion, failFault);
      }
      if (faultInjected) {
        const entry = s?.regions?.find((r) => r.name === failRegion);
        const conditions = (s?.conditions ?? [])
          .filter((c) => c.type === "Degraded" || c.type === "Ready")
          .map((c) => `${c.type}=${c.status}${c.reason ? ` (${c.reason})` : ""}`)
          .join(", ");
        const l = `run status: ${conditions}; ${failRegion}: placed ${entry?.placed}, learners ready ${entry?.learnersReady ?? 0}/${entry?.learnersDesired ?? "-"}, last delta round ${entry?.lastDeltaRound ?? "-"}${entry?.quarantined !== undefined ? `, quarantined ${entry.quarantined}` : ""}${entry?.reason ? `, ${entry.reason}: ${entry.message}` : ""}`;
        if (!seen.has(l)) {
          seen.add(l);
          quarantine.push(l);
          say(l);
        }
        const qt = quarantineTimeline;
        if (qt && entry?.quarantined) qt.statusShowsAt ??= Date.now();
        const without = (s?.rounds ?? []).find(
          (r) =>
            r.round > failAfterRound &&
            r.completionTime !== undefined &&
            Date.parse(r.completionTime) >= (qt?.injectedAt ?? 0) - 1000 &&
            (r.outcome === "QuorumReached" || r.outcome === "AllRegionsReported") &&
            !(r.contributingRegions ?? []).includes(failRegion),
        );
        if (qt && without && !qt.firstRoundWithout) {
          qt.firstRoundWithout = {
            round: without.round,
            outcome: without.outcome ?? "",
            contributingRegions: without.contributingRegions ?? [],
            closedAt: Date.parse(without.completionTime ?? ""),
          };
        }
      }
    }
    // A closed round (QuorumMissed retries are recorded too, and aggregate nothing).
    const closed = (s?.rounds ?? []).filter(
      (r) => r.outcome === "QuorumReached" || r.outcome === "AllRegionsReported",
    );
    if (killRegion && !outage && closed.some((r) => r.round >= killAfter)) await killNow(killRegion);
    const restartAfter = restartAfterFlag ?? Math.ceil(runDoc.spec.rounds / 3);
    if (restartProcess && !serverRestart && closed.some((r) => r.round >= restartAfter)) {
      serverRestart = {
        process: restartProcess,
        afterRound: Math.max(...closed.map((r) => r.round)),
        at: Date.now(),
        roundsAfter: [],
      };
      await restartServer(restartProcess, { stateDir: tb.description.stateDir, log: say });
      serverRestart.backAt = Date.now();
      say(
        `--restart: ${restartProcess} restarted after round ${serverRestart.afterRound} in ${((serverRestart.backAt - serverRestart.at) / 1000).toFixed(1)} s`,
      );
    }
    if (outage) await watchOutage(outage, s?.rounds ?? []);
    if (outage && !outage.restoredAt && Date.now() - outage.killedAt >= outage.plannedMs) await restore();
    return s?.phase === "Succeeded" || s?.phase === "Failed" ? run : undefined;
  };

  let finished: FederatedRun | undefined;
  const deadline = Date.now() + timeoutMs;
  while (!finished && !operatorFailed && Date.now() < deadline) {
    finished = await progress().catch((err: Error) => {
      // An apiserver busy or restarting: look again; say why once.
      const why = `progress: ${err.message}`;
      if (!seen.has(why)) {
        seen.add(why);
        say(why);
      }
      return undefined;
    });
    if (!finished) await new Promise((r) => setTimeout(r, 1000));
  }
  const seconds = (Date.now() - started) / 1000;
  // A short run may end between two polls: its final status still counts as shown then.
  if (
    quarantineTimeline &&
    !quarantineTimeline.statusShowsAt &&
    finished?.status?.regions?.find((r) => r.name === quarantineTimeline?.region)?.quarantined
  )
    quarantineTimeline.statusShowsAt = Date.now();
  // Whatever happened, the killed region comes back for what runs next on the testbed.
  await restore().catch((err: Error) =>
    say(`--kill-region: bringing ${killRegion} back failed: ${err.message}`),
  );
  // The last bytes (the final model's mirror) settle within a moment of the run's end.
  await new Promise((r) => setTimeout(r, 2000));
  const leafAfter = await leafCounters(nats.hub.monitorUrl);
  const leafSeconds = (Date.now() - leafT0) / 1000;
  const backgroundOf = (r: string) => {
    const b = leafDelta(background0.get(r), leafBefore.get(r));
    return b.reconnected ? undefined : { upPerSecond: b.up / backgroundSeconds, seconds: leafSeconds };
  };
  await runner.stop();
  const result: RunResult = {
    key: spec.key,
    name: runName,
    algorithm: runDoc.spec.algorithm.type,
    rounds: runDoc.spec.rounds,
    innerSteps: spec.innerSteps,
    seconds,
    leaf: Object.fromEntries(
      regions.map((r) => [r, leafDelta(leafBefore.get(r), leafAfter.get(r), backgroundOf(r))]),
    ),
    bytesSent: {},
    deltasAccepted: {},
    modelBytes: initial.size,
    ...(finished ? { run: finished } : {}),
    ...(quarantine.length ? { quarantine } : {}),
    ...(quarantineTimeline ? { quarantineTimeline } : {}),
    label: spec.label,
    quorum: runDoc.spec.quorum,
    overlap: spec.overlap,
    batch: spec.batch,
    ...(outage ? { kill: outage } : {}),
    ...(serverRestart
      ? {
          restart: {
            ...serverRestart,
            roundsAfter: (finished?.status?.rounds ?? [])
              .filter((r) => r.round > (serverRestart?.afterRound ?? 0))
              .map((r) => ({
                round: r.round,
                outcome: r.outcome,
                contributingRegions: r.contributingRegions ?? [],
              })),
          },
        }
      : {}),
  };
  results.push(result);
  // Goodput, from the learners' own timing events and the round history.
  if (finished) {
    const incarnations: Incarnation[] = [];
    for (const region of regions) {
      const dir = join(logDir, "learners", spec.key, region);
      if (!existsSync(dir)) continue;
      for (const file of await readdir(dir))
        incarnations.push(...parseLearnerLog(region, await readFile(join(dir, file), "utf8")));
    }
    const rounds = finished.status?.rounds ?? [];
    // The run ends when its last round closed (whole seconds in the status, rounded up).
    const runEnd =
      Math.max(...rounds.map((r) => (r.completionTime ? Date.parse(r.completionTime) : 0))) / 1000;
    result.goodput = computeGoodput(
      incarnations,
      rounds,
      outage ? [{ region: outage.region, t: outage.killedAt / 1000 }] : [],
      runEnd > 0 ? runEnd : undefined,
    );
    const g = result.goodput;
    say(
      `goodput ${spec.label || spec.key}: ${pct(g.goodput)} (${g.useful.toFixed(0)} useful of ${g.possible.toFixed(0)} possible steps); lost: startup ${pct(g.lost.startup)}, waiting for the round ${pct(g.lost.waiting)}, work never aggregated ${pct(g.lost.lostWork)}, publish/fetch/evaluate ${pct(g.lost.other)}`,
    );
    if (outage) {
      const fresh = g.learners.filter((l) => l.region === outage?.region && !l.killed);
      const firstBack = incarnations
        .filter((i) => i.region === outage?.region && (i.events[0]?.t ?? 0) * 1000 >= (outage?.killedAt ?? 0))
        .flatMap((i) => i.events.filter((e) => e.event === "published").map((e) => e.delta_round ?? 0));
      outage.rejoinedAtRound = firstBack.length ? Math.min(...firstBack) : undefined;
      outage.contributedAfter = [
        ...new Set(
          incarnations
            .filter(
              (i) => i.region === outage?.region && (i.events[0]?.t ?? 0) * 1000 >= (outage?.killedAt ?? 0),
            )
            .flatMap(
              (inc) =>
                g.learners.find((l) => l.pid === inc.pid && l.region === inc.region)?.aggregatedRounds ?? [],
            ),
        ),
      ].sort((a, b) => a - b);
      say(
        `${outage.region} after the outage: ${fresh.length} fresh learner(s); first delta for round ${outage.rejoinedAtRound ?? "-"}; aggregated in rounds ${outage.contributedAfter.join(", ") || "none"}`,
      );
    }
    // Every accepted delta aggregated exactly once (on time or folded in later), none twice.
    const hubEntries = await readAudit(auditFile("hub"));
    const acceptedKeys = hubEntries
      .filter((e) => e.kind === "DeltaAccepted" && e.body.run === `${runNs}/${runName}`)
      .map((e) => `${e.body.region}/${e.body.round}`);
    // From the audit trail's RoundClosed entries: the run's status keeps only its last 100 rounds.
    const aggregatedKeys = hubEntries
      .filter(
        (e) =>
          e.kind === "RoundClosed" && e.body.run === `${runNs}/${runName}` && e.body.outcome === "QuorumMet",
      )
      .flatMap((e) => {
        const b = e.body as { round: number; contributed: string[]; lateFolded?: string[] };
        return [
          ...b.contributed.map((g2) => `${g2}/${b.round}`),
          ...(b.lateFolded ?? []).map((f) => f.replace("@", "/")),
        ];
      });
    // Accepted, then taken back because the region was quarantined before the round closed: a
    // refusal in the audit trail (RegionQuarantined), not a lost delta.
    const excludedKeys = new Set(
      hubEntries
        .filter(
          (e) =>
            e.kind === "DeltaRefused" &&
            e.body.run === `${runNs}/${runName}` &&
            e.body.reason === "RegionQuarantined",
        )
        .map((e) => `${e.body.region}/${e.body.round}`),
    );
    const count = (xs: string[]) =>
      xs.reduce((m, x) => m.set(x, (m.get(x) ?? 0) + 1), new Map<string, number>());
    const acc = count(acceptedKeys);
    const agg = count(aggregatedKeys);
    const problems: string[] = [];
    let lost = 0;
    let excluded = 0;
    let doubled = 0;
    for (const [k, n] of acc) {
      if (n > 1) problems.push(`${k}: accepted ${n} times`);
      if (!agg.has(k) && excludedKeys.has(k)) excluded++;
      else if (!agg.has(k)) {
        lost++;
        problems.push(`${k}: accepted, never aggregated`);
      }
    }
    for (const [k, n] of agg) {
      if (n > 1) {
        doubled += n - 1;
        problems.push(`${k}: aggregated ${n} times`);
      }
      if (!acc.has(k)) problems.push(`${k}: aggregated without an accepted delta in the audit trail`);
    }
    const published = incarnations.reduce(
      (n, i) => n + i.events.filter((e) => e.event === "published").length,
      0,
    );
    result.deltas = {
      published,
      accepted: acceptedKeys.length,
      aggregated: aggregatedKeys.length,
      lost,
      excluded,
      doubleCounted: doubled + [...acc.values()].reduce((n, v) => n + v - 1, 0),
      problems,
    };
    say(
      `deltas ${spec.key}: ${published} published, ${acceptedKeys.length} accepted, ${aggregatedKeys.length} aggregated, ${excluded} refused after their region was quarantined; lost ${lost}, counted twice ${result.deltas.doubleCounted}${problems.length ? ` (${problems.slice(0, 4).join("; ")})` : ""}`,
    );
  }
  if (finished?.status?.phase !== "Succeeded") {
    say(
      `the run did not finish (${finished?.status?.phase ?? (operatorFailed || "timed out")}); see the logs in ${logDir}`,
    );
    break;
  }
  say(`the run succeeded: ${finished.status.rounds?.length} rounds in ${seconds.toFixed(0)} s`);

  // What each region sent (the hub's status) and what synchronising every step would have cost.
  const hubAudit = await readAudit(auditFile("hub"));
  // The run's status (regions[].bytesSent) when the hub fills it, else its delta byte counter.
  const deltaBytesAfter = await hubDeltaBytes();
  for (const g of regions) {
    const status = finished.status.regions?.find((r) => r.name === g)?.bytesSent;
    result.bytesSent[g] = status || (deltaBytesAfter.get(g) ?? 0) - (deltaBytesBefore.get(g) ?? 0);
  }
  for (const e of hubAudit) {
    if (e.kind === "DeltaAccepted" && e.body.run === `${runNs}/${runName}`)
      result.deltasAccepted[e.body.region] = (result.deltasAccepted[e.body.region] ?? 0) + 1;
  }
  const sent = Object.values(result.bytesSent).reduce((a, b) => a + b, 0);
  const accepted = Object.values(result.deltasAccepted).reduce((a, b) => a + b, 0);
  result.comm = communication({
    parameters,
    innerSteps: spec.innerSteps,
    upPerRound: sent / Math.max(1, accepted),
    downPerRound: initial.size,
  });

  // The final global model, judged on every region's held-out data.
  const finalRound = finished.status.rounds?.at(-1)?.round ?? runDoc.spec.rounds;
  const fetched = await fetchGlobalModel(hubNats, { namespace: runNs, run: runName, round: finalRound });
  const chunks: Uint8Array[] = [];
  for await (const c of fetched.data) chunks.push(c);
  const finalPath = join(stateDir, `final-${spec.key}.safetensors`);
  await writeFile(finalPath, Buffer.concat(chunks));
  result.evaluation = JSON.parse(
    await python(py, ["examples/demo/baselines.py", "evaluate", dataRoot, finalPath, ...regions]),
  ) as Judged;
  say(
    `final ${result.algorithm} model: ${pct(result.evaluation.accuracy)} on the union of the regions' held-out digits`,
  );

  // The audit link: each aggregate → its accepted deltas → attested learner keys → admissions → verdicts.
  const members = Object.fromEntries(
    await Promise.all(regions.map(async (r) => [r, await readAudit(auditFile(r))] as [string, AuditEntry[]])),
  );
  result.link = checkAuditLink({
    run: `${runNs}/${runName}`,
    runUid: finished.metadata.uid as string,
    hub: hubAudit,
    members,
    learnerKeys: [...learnerKeys.values()],
    aggregateDigests: new Map(
      (finished.status.rounds ?? []).flatMap((r) =>
        r.aggregateDigest ? [[r.round, r.aggregateDigest]] : [],
      ),
    ),
  });
}

/** The hub's sovereign_delta_bytes_total per region (encoded delta bytes it accepted). */
async function hubDeltaBytes(): Promise<Map<string, number>> {
  const text = await fetch(`http://127.0.0.1:${hubMetricsPort}/metrics`)
    .then((r) => r.text())
    .catch(() => "");
  return new Map(
    [...text.matchAll(/^sovereign_delta_bytes_total\{region="([^"]+)"\} (\d+)/gm)].map((m) => [
      m[1] as string,
      Number(m[2]),
    ]),
  );
}

/** Testbed only: the region's GPU nodes answer their next challenge with bad evidence, at once. */
async function injectFault(region: string, fault: string): Promise<void> {
  const core = tb.kubeConfig(region).makeApiClient(CoreV1Api);
  quarantineTimeline = { region, injectedAt: Date.now() };
  for (const n of tb.cluster(region).nodes.filter((x) => x.gpus > 0)) {
    await core.patchNode(
      {
        name: n.name,
        body: {
          metadata: {
            annotations: {
              [EVIDENCE_FAULT_ANNOTATION]: fault,
              [NODE_ANNOTATIONS.reattest]: String(Date.now()),
            },
          },
        },
      },
      setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
    );
  }
  say(
    `--fail-attestation: ${region}'s GPU nodes now answer with ${fault} evidence (annotation ${EVIDENCE_FAULT_ANNOTATION}); re-challenged now`,
  );
}

/** What each region's learner reported for a round (it prints one JSON line per round). */
async function learnerMetrics(run: string, round: number): Promise<string[]> {
  const out: string[] = [];
  for (const region of regions) {
    const dir = join(logDir, "learners", run, region);
    if (!existsSync(dir)) continue;
    for (const file of await readdir(dir)) {
      for (const line of (await readFile(join(dir, file), "utf8")).split("\n")) {
        if (!line.startsWith("{") || line.startsWith('{"event"')) continue;
        const m = JSON.parse(line) as {
          round?: number;
          loss_before?: number;
          loss?: number;
          accuracy?: number;
          delta_bytes?: number;
        };
        if (m.round === round)
          out.push(
            `${region}: the global model scores ${pct(m.accuracy ?? 0)} (loss ${m.loss_before?.toFixed(3)}) on this region's held-out digits; ${runDocs[0]?.innerSteps ?? ""} local steps took it to loss ${m.loss?.toFixed(3)}; delta ${m.delta_bytes} bytes`,
          );
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Summary

verdictTail.stop();
await verdictTail.poll().catch(() => undefined);
const baselines = await baselinesPromise.catch((err: Error) => {
  say(`the baselines failed: ${err.message}`);
  return undefined;
});
const ok = results.length === runDocs.length && results.every((r) => r.run?.status?.phase === "Succeeded");
console.log("");
say("=== summary ===");
const table = (rows: string[][]) => {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length))) ?? [];
  for (const r of rows) console.log(`  ${r.map((c, i) => c.padEnd(widths[i] ?? 0)).join("  ")}`);
};
console.log(
  `\nAccuracy of the final model on the union of the regions' held-out digits (${Object.values(datasets).reduce((a, d) => a + d.test, 0)} images) and on each region's; budget: ${budget} Adam steps of batch ${baselines?.batch ?? 32} for every row (3 regions × rounds × H)`,
);
const accRows: string[][] = [["model", "union", ...regions]];
for (const r of results) {
  if (r.evaluation)
    accRows.push([
      `federated ${r.algorithm}${r.label ? ` (${r.label})` : ""}${r.quarantine ? ` (${failRegion} quarantined)` : ""}`,
      pct(r.evaluation.accuracy),
      ...regions.map((g) => pct(r.evaluation?.regions[g] ?? 0)),
    ]);
}
if (baselines) {
  accRows.push([
    "centralized (union of the training data)",
    pct(baselines.centralized.accuracy),
    ...regions.map((g) => pct(baselines.centralized.regions[g] ?? 0)),
  ]);
  for (const g of regions) {
    const a = baselines.alone[g];
    if (a) accRows.push([`${g} alone`, pct(a.accuracy), ...regions.map((x) => pct(a.regions[x] ?? 0))]);
  }
}
table(accRows);

if (results.some((r) => r.goodput)) {
  console.log(
    "\nGoodput: steps of aggregated deltas ÷ (each learner process's steps per second × its time up), over the learners that were up; the lost part by cause",
  );
  const rows: string[][] = [
    [
      "run",
      "H × batch",
      "goodput",
      "startup",
      "waiting for the round",
      "work not aggregated",
      "publish/fetch/eval",
      "outage",
      "seconds",
    ],
  ];
  for (const r of results) {
    const g = r.goodput;
    if (!g) continue;
    rows.push([
      r.label || r.key,
      `${r.innerSteps} × ${r.batch}`,
      pct(g.goodput),
      pct(g.lost.startup),
      pct(g.lost.waiting),
      pct(g.lost.lostWork),
      pct(g.lost.other),
      r.kill
        ? `${r.kill.region} ${r.kill.outageSeconds?.toFixed(0) ?? "?"} s after round ${r.kill.afterRound}`
        : "-",
      r.seconds.toFixed(0),
    ]);
  }
  table(rows);
}

console.log(
  `\nCommunication per round per region (P = ${parameters} parameters); synchronising every inner step would move 8·P·H bytes (an fp32 gradient up and the averaged one down, per step)`,
);
const commRows: string[][] = [
  ["run", "H", "delta up", "model down", "per-step sync", "ratio (up+down)", "ratio (up only)"],
];
for (const r of results) {
  if (r.comm)
    commRows.push([
      r.algorithm,
      String(r.innerSteps),
      `${r.comm.upPerRound.toFixed(0)} B`,
      `${r.comm.downPerRound} B`,
      kib(r.comm.perStepPerRound),
      `${r.comm.ratio.toFixed(0)}×`,
      `${r.comm.ratioUp.toFixed(0)}×`,
    ]);
}
table(commRows);

console.log(
  "\nBytes on each region's leaf link during each run (hub nats-server /leafz), less the link's background (its rate over 10 s before the run, times the run's duration), against the region's data (digits.npz in its data directory)",
);
const leafRows: string[][] = [
  [
    "run",
    "region",
    "left the region",
    "background",
    "net of background",
    "of which deltas",
    "into the region",
    "region's data",
    "net / data",
  ],
];
for (const r of results) {
  for (const g of regions) {
    const l = r.leaf[g];
    const data = datasets[g]?.bytes ?? 0;
    if (!l) continue;
    leafRows.push([
      r.algorithm,
      g,
      `${kib(l.up)}${l.reconnected ? " (reconnected: ≥)" : ""}`,
      l.backgroundUpPerSecond !== undefined ? `${l.backgroundUpPerSecond} B/s` : "-",
      l.upNet === undefined
        ? "-"
        : `${kib(l.upNet)}${l.upNet < (r.bytesSent[g] ?? 0) ? " (noisy: below the deltas)" : ""}`,
      kib(r.bytesSent[g] ?? 0),
      kib(l.down),
      kib(data),
      `${((l.upNet ?? l.up) / data).toFixed(2)}`,
    ]);
  }
}
table(leafRows);
console.log(
  `  the hub process: node --permission, reads limited to the code, its kubeconfig, PKI, the audit key and ${hubDir}; region data readable by it: ${hubDenied ? "no (ERR_ACCESS_DENIED for each region's digits.npz)" : "YES"}`,
);

console.log("");
for (const who of ["hub", ...regions]) {
  const file = auditFile(who);
  if (!existsSync(file)) continue;
  const report = await verifyAuditFile(file, {
    trustedKeys: parseTrustedKeys(await readFile(auditPublicKeyFile, "utf8")),
  });
  const kinds = new Map<string, number>();
  for (const e of report.entries) kinds.set(e.kind, (kinds.get(e.kind) ?? 0) + 1);
  say(
    `audit trail ${who}: ${report.ok ? "intact" : `BROKEN (${report.failure?.reason})`}, ${report.entriesVerified} entries (${[...kinds].map(([k, n]) => `${n} ${k}`).join(", ")})`,
  );
}
for (const r of results) {
  if (!r.link) continue;
  say(
    `audit link ${r.algorithm}: ${r.link.ok ? "complete" : "BROKEN"} — ${r.link.rounds} aggregates → ${r.link.deltas} accepted deltas → ${r.link.keys} learner keys bound by their nonces → ${r.link.admissions} admissions → ${r.link.verdicts} passing GPU verdicts${r.link.ok ? "" : `: ${r.link.problems.slice(0, 3).join("; ")}`}`,
  );
}
for (const r of results) {
  say(
    `${r.algorithm}: ${r.run?.status?.phase ?? "unfinished"}, ${r.run?.status?.rounds?.length ?? 0} rounds in ${r.seconds.toFixed(0)} s`,
  );
  if (r.quarantine) for (const l of r.quarantine.slice(-1)) say(`  ${l}`);
  const qt = r.quarantineTimeline;
  if (qt) {
    const after = (t?: number) =>
      t === undefined ? "never" : `+${((t - qt.injectedAt) / 1000).toFixed(1)} s`;
    say(
      `  ${qt.region} after its fault: failed verdict ${after(qt.failedVerdictAt)}, quarantined ${after(qt.quarantinedAt)}, shown in the run's status ${after(qt.statusShowsAt)}, first round closed without it ${qt.firstRoundWithout ? `(round ${qt.firstRoundWithout.round}, ${qt.firstRoundWithout.outcome}) ${after(qt.firstRoundWithout.closedAt)}` : "never"}`,
    );
  }
}
say(`wall time ${((Date.now() - t0) / 1000).toFixed(0)} s`);
// One line for tools (test/e2e/demo.disruptive.test.ts) to read.
console.log(
  `DEMO-RESULT ${JSON.stringify({
    ok,
    parameters,
    hubDenied,
    datasets,
    baselines,
    runs: results.map((r) => ({
      key: r.key,
      algorithm: r.algorithm,
      phase: r.run?.status?.phase,
      rounds: r.run?.status?.rounds,
      regions: r.run?.status?.regions,
      conditions: r.run?.status?.conditions,
      seconds: r.seconds,
      comm: r.comm,
      leaf: r.leaf,
      bytesSent: r.bytesSent,
      evaluation: r.evaluation,
      link: r.link,
      quarantine: r.quarantine,
      quarantineTimeline: r.quarantineTimeline,
      label: r.label,
      quorum: r.quorum,
      overlap: r.overlap,
      innerSteps: r.innerSteps,
      batch: r.batch,
      kill: r.kill,
      restart: r.restart,
      goodput: r.goodput,
      deltas: r.deltas,
    })),
  })}`,
);
console.log(`
Where to look next:
  docs/demo.md       what these figures mean, and the figures of a full run
  kubectl --kubeconfig ${tb.cluster("hub").kubeconfig} -n ${runNs} get federatedruns,sovereignnodes
  kubectl --kubeconfig ${tb.cluster("hub").kubeconfig} -n ${runNs} describe federatedrun ${results.at(-1)?.name ?? ""}
  hub metrics:       http://127.0.0.1:${hubMetricsPort}/metrics (while --keep runs)
  operator logs:     ${logDir}
  learner logs:      ${join(logDir, "learners")}
  audit trails:      node operator/cli.ts audit verify ${auditFile("hub")} --keys ${auditPublicKeyFile}
  again, one run:    node test/testbed/demo.ts --run=diloco   (or --fail-attestation=region-b)
  stop the testbed:  make testbed-down`);

await hubNats.close();
if (keep) {
  say("--keep: the operators keep running; Ctrl-C stops them");
  await new Promise<void>((resolve) => process.once("SIGINT", () => resolve()));
}
stopping = true;
if (failRegion) {
  // Heal the region's nodes for whatever runs next on the testbed.
  const core = tb.kubeConfig(failRegion).makeApiClient(CoreV1Api);
  for (const n of tb.cluster(failRegion).nodes.filter((x) => x.gpus > 0)) {
    await core
      .patchNode(
        { name: n.name, body: { metadata: { annotations: { [EVIDENCE_FAULT_ANNOTATION]: null } } } },
        setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
      )
      .catch(() => undefined);
  }
}
for (const c of children) c.kill("SIGTERM");
await Promise.all(
  // A child killed by a signal (--kill-region) has no exit code, only its signal.
  children.map(
    (c) =>
      new Promise((r) => (c.exitCode !== null || c.signalCode !== null ? r(undefined) : c.once("exit", r))),
  ),
);
process.exit(ok ? 0 : 1);
