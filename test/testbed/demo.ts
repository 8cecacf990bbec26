// `make demo`: three sovereign regions train one model together on the local testbed.
//
// Brings the testbed up (or reuses it), installs the CRDs, starts the operator as separate
// processes (one hub, one member per region, each with only its own credentials), registers
// and accepts the regions, uploads the initial model, applies examples/demo/federatedrun.yaml
// and runs each learner pod's command as a local process (test/testbed/pod-runner.ts: kwok
// nodes run no containers). It prints rounds, per-region state, quorum outcomes, loss and
// accuracy, and bytes sent as they happen, then a summary and where to look next.
//
//   node test/testbed/demo.ts [--rounds=N] [--keep]     (--keep leaves the operators running)
import { type ChildProcess, spawn } from "node:child_process";
import { generateKeyPairSync } from "node:crypto";
import { createWriteStream, existsSync, readFileSync } from "node:fs";
import { mkdir, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { join } from "node:path";
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
import type { FederatedRun, SovereignNode } from "../../crds/types.generated.ts";
import { issueRegionCredential } from "../../operator/hub/credentials.ts";
import { ATTESTED_LABEL } from "../../operator/member/registration.ts";
import { LEARNER_NAMESPACE } from "../../operator/member/work-controller.ts";
import { publishGlobalModel, removeRunBuckets } from "../../transport/mod.ts";
import { sdkPython } from "../sdk/sdk-venv.ts";
import { eventually, useTestbed } from "./harness.ts";
import { PodRunner } from "./pod-runner.ts";
import { repoRoot } from "./topology.ts";

const G = { group: "sovereign.ai", version: "v1alpha1" };
const args = process.argv.slice(2);
const flag = (name: string) => args.find((a) => a.startsWith(`--${name}=`))?.split("=")[1];
const keep = args.includes("--keep");
const JURISDICTIONS = ["DE", "FR", "NL", "IT"];
const t0 = Date.now();
const say = (line: string) => console.log(`[${((Date.now() - t0) / 1000).toFixed(0).padStart(4)}s] ${line}`);

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

// The learners' Python (the SDK and numpy), installed once into .venv-sdk.
say("preparing the learners' Python environment (first time: a minute or two)");
const python = await sdkPython();

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
const auditKeyFile = join(stateDir, "audit-key.pem");
const auditPublicKeyFile = join(stateDir, "audit-key.pub.pem");
await writeFile(auditKeyFile, auditKey.privateKey.export({ format: "pem", type: "pkcs8" }) as string, {
  mode: 0o600,
});
await writeFile(auditPublicKeyFile, auditKey.publicKey.export({ format: "pem", type: "spki" }) as string);
const auditFlags = (who: string) => [
  `--audit-log=${join(stateDir, `audit-${who}.jsonl`)}`,
  `--audit-key=${auditKeyFile}`,
];

// A previous demo's run and its buckets go first, so the demo can be run again.
const runDoc = parse(
  readFileSync(join(repoRoot, "examples", "demo", "federatedrun.yaml"), "utf8"),
) as FederatedRun;
// A fresh name per demo: re-creating a run under a name that just existed is not reliable yet
// (see the issue notes), and the previous demo's runs are deleted below anyway.
const runName = `${runDoc.metadata.name as string}-${Date.now().toString(36).slice(-5)}`;
runDoc.metadata.name = runName;
// The demo's own namespace and regions: its hub never touches anything else on the testbed.
const runNs = "sovereign-demo";
const CONSORTIUM = "sovereign.ai/consortium=demo";
if (flag("rounds")) runDoc.spec.rounds = Number(flag("rounds"));
const hubNats = await connect({
  servers: nats.hub.url,
  user: nats.hub.admin.user,
  pass: nats.hub.admin.password,
});
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
const startOperator = (name: string, argv: string[]) => {
  const log = createWriteStream(join(logDir, `${name}.log`));
  const child = spawn(process.execPath, [join(repoRoot, "operator", "main.ts"), ...argv], {
    cwd: repoRoot,
    stdio: ["ignore", "pipe", "pipe"],
  });
  child.stdout?.pipe(log);
  child.stderr?.pipe(log);
  child.on("exit", (code) => {
    if (stopping) return;
    operatorFailed = `operator ${name} exited (${code}); see ${join(logDir, `${name}.log`)}`;
    say(operatorFailed);
  });
  children.push(child);
};
let stopping = false;
let operatorFailed = "";
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
startOperator("hub", [
  "--mode=hub",
  `--watch-namespace=${runNs}`,
  `--region-selector=${CONSORTIUM}`,
  `--kubeconfig=${tb.cluster("hub").kubeconfig}`,
  `--nats-url=${nats.hub.url}`,
  `--nats-user=${nats.hub.admin.user}`,
  `--nats-password=${nats.hub.admin.password}`,
  ...auditFlags("hub"),
  ...common(hubMetricsPort, await freePort()),
]);
say(`hub operator started (metrics http://127.0.0.1:${hubMetricsPort}/metrics)`);

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
  startOperator(`member-${region}`, [
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
    ...common(await freePort(), await freePort()),
  ]);
  // A fresh start for the gate: no verdict from an earlier demo or test carries over.
  for (const node of tb.cluster(region).nodes.filter((n) => n.gpus > 0)) {
    await core
      .patchNode(
        { name: node.name, body: { metadata: { labels: { [ATTESTED_LABEL]: null } } } },
        setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
      )
      .catch(() => undefined);
  }
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
    60_000,
  );
}
say(`regions accepted and Ready: ${regions.join(", ")}`);

// The initial model (round-0), made by the learner program itself so shapes always match.
const initialPath = join(stateDir, "initial.safetensors");
await new Promise<void>((resolve, reject) => {
  const p = spawn(python, [join(repoRoot, "examples", "demo", "train.py"), "--init", initialPath], {
    stdio: "inherit",
  });
  p.on("exit", (code) => (code === 0 ? resolve() : reject(new Error(`train.py --init exited ${code}`))));
});
// The run name is fresh, so there is nothing of it to wait for; the previous demos' model
// buckets go once their runs are gone.
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
const initial = await publishGlobalModel(hubNats, { namespace: runNs, run: runName, round: 0 }, [
  await readFile(initialPath),
]);
say(`initial model uploaded as round-0 (${initial.size} bytes, ${initial.digest.slice(0, 19)}…)`);

// Learners run as local processes for pods bound to the kwok GPU nodes.
const runner = new PodRunner({
  clusters: Object.fromEntries(regions.map((r) => [r, tb.kubeConfig(r)])) as Record<string, KubeConfig>,
  namespace: LEARNER_NAMESPACE,
  labelSelector: `sovereign.ai/run=${runName}`,
  dataDir: (cluster) => join(stateDir, "data", cluster),
  logDir: join(logDir, "learners"),
  cwd: repoRoot,
  baseEnv: { PATH: `${join(repoRoot, ".venv-sdk", "bin")}:${process.env.PATH}`, PYTHONUNBUFFERED: "1" },
  onEvent: (e) =>
    say(`${e.cluster}: learner ${e.pod} ${e.kind}${e.code !== undefined ? ` (exit ${e.code})` : ""}`),
});
runner.start();

runDoc.metadata.namespace = runNs;
runDoc.spec.attestation = { policyRef: { name: policy.metadata.name as string } };
await custom.createNamespacedCustomObject({ ...G, plural: "federatedruns", namespace: runNs, body: runDoc });
say(
  `applied ${runNs}/${runName}: ${runDoc.spec.rounds} rounds of ${runDoc.spec.algorithm.type}, quorum ${runDoc.spec.quorum?.minRegions}, grace ${runDoc.spec.quorum?.graceWindowSeconds}s`,
);

// Progress, as a person watching would want it.
const seen = new Set<string>();
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
      `round ${r.round}: ${r.outcome} — aggregated ${r.contributingRegions?.join(", ")}${r.lateRegions?.length ? `; late ${r.lateRegions.join(", ")}` : ""}; model ${r.aggregateDigest?.slice(0, 19)}…`,
    );
    for (const m of await learnerMetrics(r.round)) say(`  ${m}`);
  }
  return s?.phase === "Succeeded" || s?.phase === "Failed" ? run : undefined;
};

/** What each region's learner reported for a round (it prints one JSON line per round). */
async function learnerMetrics(round: number): Promise<string[]> {
  const out: string[] = [];
  for (const region of regions) {
    const dir = join(logDir, "learners", region);
    if (!existsSync(dir)) continue;
    for (const file of await readdir(dir)) {
      for (const line of (await readFile(join(dir, file), "utf8")).split("\n")) {
        if (!line.startsWith("{")) continue;
        const m = JSON.parse(line) as {
          round?: number;
          loss_before?: number;
          loss?: number;
          accuracy?: number;
          tokens?: number;
        };
        if (m.round === round)
          out.push(
            `${region}: the global model scores loss ${m.loss_before?.toFixed(4)}, accuracy ${((m.accuracy ?? 0) * 100).toFixed(1)}% on this region's held-out data; local training on ${m.tokens} samples took it to ${m.loss?.toFixed(4)}`,
          );
      }
    }
  }
  return out;
}

const timeoutMs = Number(flag("timeout") ?? 15 * 60) * 1000;
let finished: FederatedRun | undefined;
const deadline = Date.now() + timeoutMs;
while (!finished && !operatorFailed && Date.now() < deadline) {
  finished = await progress().catch(() => undefined);
  if (!finished) await new Promise((r) => setTimeout(r, 1000));
}

// Summary.
const metrics = await fetch(`http://127.0.0.1:${hubMetricsPort}/metrics`)
  .then((r) => r.text())
  .catch(() => "");
const bytes = [...metrics.matchAll(/^sovereign_delta_bytes_total\{region="([^"]+)"\} (\d+)/gm)].map(
  (m) => `${m[1]} ${(Number(m[2]) / 1024).toFixed(1)} KiB`,
);
console.log("");
if (finished?.status?.phase === "Succeeded") {
  say(
    `the run succeeded: ${finished.status.rounds?.length} rounds in ${((Date.now() - t0) / 1000).toFixed(0)} s`,
  );
} else {
  say(`the run did not finish (${finished?.status?.phase ?? "timed out"}); see the logs in ${logDir}`);
}
if (bytes.length) say(`delta bytes received by the hub: ${bytes.join(", ")} (raw data sent: none)`);
for (const who of ["hub", ...regions]) {
  const file = join(stateDir, `audit-${who}.jsonl`);
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
console.log(`
Where to look next:
  kubectl --kubeconfig ${tb.cluster("hub").kubeconfig} -n ${runNs} get federatedruns,sovereignnodes
  kubectl --kubeconfig ${tb.cluster("hub").kubeconfig} -n ${runNs} describe federatedrun ${runName}
  hub metrics:       http://127.0.0.1:${hubMetricsPort}/metrics (while --keep runs)
  operator logs:     ${logDir}
  learner logs:      ${join(logDir, "learners")}
  audit trails:      node operator/cli.ts audit verify ${join(stateDir, "audit-hub.jsonl")} --keys ${auditPublicKeyFile}
  stop the testbed:  make testbed-down`);

await hubNats.close();
if (keep) {
  say("--keep: the operators and learners keep running; Ctrl-C stops them");
  await new Promise<void>((resolve) => process.once("SIGINT", () => resolve()));
}
stopping = true;
await runner.stop();
for (const c of children) c.kill("SIGTERM");
await Promise.all(
  children.map((c) => new Promise((r) => (c.exitCode !== null ? r(undefined) : c.once("exit", r)))),
);
process.exit(finished?.status?.phase === "Succeeded" ? 0 : 1);
