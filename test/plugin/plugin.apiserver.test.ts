// The plugin against the testbed's real API servers: status of runs and regions written here
// (through the status subresource, as the hub operator writes them), through the real kubectl
// binary too; join issuing a credential that authenticates at the hub with only the region's
// permissions; attest reading a node's recorded verdict in a region cluster.
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { CoreV1Api, CustomObjectsApi, KubeConfig } from "@kubernetes/client-node";
import test from "ava";
import { parse } from "yaml";
import { installCrds } from "../../crds/install.ts";
import type { FederatedRun, SovereignNode } from "../../crds/types.generated.ts";
import { revokeRegionAccess } from "../../operator/hub/credentials.ts";
import { attestCommand } from "../../plugin/attest.ts";
import { PluginError } from "../../plugin/errors.ts";
import { joinCommand } from "../../plugin/join.ts";
import { type StatusReport, statusCommand } from "../../plugin/status.ts";
import { makeNode, makeRun } from "../operator/builders.ts";
import { holdGpuNodeLabels, testNamespace, uniqueName, useTestbed } from "../testbed/harness.ts";
import { repoRoot } from "../testbed/topology.ts";

const API = { group: "sovereign.ai", version: "v1alpha1" };
const NOW = () => Date.now();

function capture() {
  let out = "";
  let err = "";
  return {
    io: {
      stdout: (t: string) => {
        out += t;
      },
      stderr: (t: string) => {
        err += t;
      },
      now: NOW,
    },
    out: () => out,
    err: () => err,
  };
}

/** The run and two regions, with the status a hub operator would have written. */
async function seed(t: import("ava").ExecutionContext, admin: KubeConfig, ns: string) {
  const api = admin.makeApiClient(CustomObjectsApi);
  const [a, b] = [uniqueName("plug-a"), uniqueName("plug-b")];
  const fleet = uniqueName("fleet");
  t.teardown(async () => {
    for (const name of [a, b])
      await api.deleteClusterCustomObject({ ...API, plural: "sovereignnodes", name }).catch(() => undefined);
  });
  for (const [name, quarantined] of [
    [a, false],
    [b, true],
  ] as const) {
    const node = makeNode(name).labels({ "sovereign.ai/test-fleet": fleet });
    if (quarantined)
      node.condition("Quarantined", "True", "InvalidDeltas", "a delta failed its signature check");
    const { status, ...body } = node.obj();
    await api.createClusterCustomObject({ ...API, plural: "sovereignnodes", body });
    await api.patchClusterCustomObjectStatus({
      ...API,
      plural: "sovereignnodes",
      name,
      body: [
        {
          op: "add",
          path: "/status",
          value: { ...status, lastHeartbeatTime: new Date().toISOString().replace(/\.\d+Z$/, "Z") },
        },
      ],
    });
  }
  const runName = uniqueName("run");
  const run = makeRun(runName, ns).placement({ minRegions: 2 }).obj();
  run.spec.rounds = 5;
  // Someone else's hub operator watching every namespace must not pick the run up.
  run.spec.suspend = false;
  await api.createNamespacedCustomObject({ ...API, plural: "federatedruns", namespace: ns, body: run });
  const status: FederatedRun["status"] = {
    phase: "Running",
    currentRound: 3,
    regionsPlaced: 2,
    regionsReady: 2,
    roundProgress: {
      round: 3,
      phase: "WaitingForDeltas",
      startTime: "2026-11-24T10:00:00Z",
      deliveredRegions: [a],
    },
    regions: [
      { name: a, placed: true, learnersDesired: 1, learnersReady: 1, lastDeltaRound: 3 },
      {
        name: b,
        placed: true,
        learnersDesired: 1,
        learnersReady: 1,
        lastDeltaRound: 2,
        quarantined: true,
        reason: "RegionQuarantined",
        message: "deltas excluded",
      },
    ],
    conditions: [
      {
        type: "Degraded",
        status: "True",
        reason: "RegionQuarantined",
        message: `${b}'s deltas are excluded`,
        lastTransitionTime: "2026-11-24T10:00:00Z",
      },
    ],
  };
  await api.patchNamespacedCustomObjectStatus({
    ...API,
    plural: "federatedruns",
    namespace: ns,
    name: runName,
    body: [{ op: "add", path: "/status", value: status }],
  });
  return { a, b, runName };
}

test("status: a real run and its regions, as JSON and through the real kubectl binary", async (t) => {
  const tb = await useTestbed();
  const admin = tb.kubeConfig("hub");
  await installCrds(admin);
  const ns = await testNamespace(t, tb, "hub", "plug");
  const { a, b, runName } = await seed(t, admin, ns);

  const c = capture();
  t.is(await statusCommand([runName], { namespace: ns, output: "json" }, c.io, admin), 0);
  const report = JSON.parse(c.out()) as StatusReport;
  const run = report.runs[0];
  t.is(report.runs.length, 1);
  t.is(run?.phase, "Running");
  t.deepEqual(run?.round, { current: 3, total: 5 });
  t.is(run?.roundState, "WaitingForDeltas");
  t.deepEqual(run?.quorum, { round: 3, delivered: 1, required: 2, deliveredRegions: [a] });
  t.deepEqual(
    run?.regions.map((r) => [r.name, r.deliveredThisRound, r.quarantined]),
    [
      [a, true, false],
      [b, false, true],
    ],
  );
  t.deepEqual(
    report.regions.map((r) => [r.name, r.quarantined]),
    [
      [a, false],
      [b, true],
    ],
  );

  // kubectl finds kubectl-sovereign on PATH and hands it every argument.
  const kubectl = join(tb.description.binDir, "kubectl");
  const env = { ...process.env, PATH: [join(repoRoot, "plugin", "bin"), process.env.PATH].join(delimiter) };
  const viaKubectl = (args: string[]) =>
    new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      execFile(kubectl, ["sovereign", ...args], { env }, (err, stdout, stderr) =>
        resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
      );
    });
  const hubKubeconfig = tb.cluster("hub").kubeconfig;
  const table = await viaKubectl(["status", runName, "-n", ns, "--kubeconfig", hubKubeconfig]);
  t.is(table.code, 0, table.stderr);
  const lines = table.stdout.split("\n");
  t.regex(lines[0] ?? "", /^RUN +PHASE +ROUND +ROUND STATE +QUORUM +READY +DEGRADED$/);
  t.regex(
    lines[1] ?? "",
    new RegExp(`^${runName} +Running +3/5 +WaitingForDeltas +1/2 +2/2 +RegionQuarantined$`),
  );
  t.regex(table.stdout, new RegExp(`\\n  ${b} +yes +1/1 +2 +no +yes +RegionQuarantined: deltas excluded\\n`));
  t.regex(table.stdout, new RegExp(`\\n${b} +DE +yes +True +16/16 +yes +\\d+s ago\\n`));
  t.regex(
    table.stdout,
    new RegExp(`\\n  ${b}: Quarantined=True InvalidDeltas: a delta failed its signature check\\n`),
  );

  const missing = await viaKubectl(["status", "no-such-run", "-n", ns, `--kubeconfig=${hubKubeconfig}`]);
  t.is(missing.code, 1);
  t.regex(missing.stderr, new RegExp(`^RunNotFound: no FederatedRun "no-such-run" in namespace ${ns}`));
  const usage = await viaKubectl(["status", "--bogus"]);
  t.is(usage.code, 2);
  t.regex(usage.stderr, /^InvalidArguments: Unknown option '--bogus'/);
});

test("join: files with the registration and a credential that reaches the hub with only the region's rights", async (t) => {
  const tb = await useTestbed();
  const admin = tb.kubeConfig("hub");
  await installCrds(admin);
  const region = uniqueName("join");
  const dir = await mkdtemp(join(tmpdir(), "kubectl-sovereign-join-"));
  const api = admin.makeApiClient(CustomObjectsApi);
  t.teardown(async () => {
    await rm(dir, { recursive: true, force: true });
    await api
      .deleteClusterCustomObject({ ...API, plural: "sovereignnodes", name: region })
      .catch(() => undefined);
    await revokeRegionAccess(admin, region);
  });
  const c = capture();
  const options = { jurisdiction: "FR", policy: "strict", "out-dir": dir, ttl: "1h" };
  t.is(await joinCommand([region], options, c.io, admin), 0);
  t.regex(
    c.err(),
    new RegExp(`wrote ${dir}/${region}-hub.kubeconfig: ${region}'s hub credential, valid until 20`),
  );
  const kubeconfigFile = join(dir, `${region}-hub.kubeconfig`);
  t.is((await stat(kubeconfigFile)).mode & 0o777, 0o600, "the token file is the owner's only");
  const registration = parse(
    await readFile(join(dir, `${region}-registration.yaml`), "utf8"),
  ) as SovereignNode;

  const member = new KubeConfig();
  member.loadFromFile(kubeconfigFile);
  const memberApi = member.makeApiClient(CustomObjectsApi);
  // The registration as written is what the member may create: its own, unaccepted.
  await memberApi.createClusterCustomObject({ ...API, plural: "sovereignnodes", body: registration });
  const stored = (await memberApi.getClusterCustomObject({
    ...API,
    plural: "sovereignnodes",
    name: region,
  })) as SovereignNode;
  t.is(stored.spec.jurisdiction, "FR");
  t.false(stored.spec.accepted);
  // And nothing more: the plugin run with this credential is refused the runs, with the reason.
  const refused = await statusCommand([], { namespace: "default" }, capture().io, member).catch(
    (e: unknown) => e,
  );
  t.true(refused instanceof PluginError);
  t.is((refused as PluginError).reason, "NoHubAccess");
  t.regex((refused as PluginError).message, /cannot list FederatedRuns in default/);

  // A second join keeps the files rather than overwriting a credential someone may still need.
  const again = await joinCommand([region], options, capture().io, admin).catch((e: unknown) => e);
  t.is((again as PluginError).reason, "FileExists");
});

test("attest: a node's recorded verdict in a region cluster, and the reasons for what is not there", async (t) => {
  const tb = await useTestbed();
  await holdGpuNodeLabels(t);
  const region = tb.regions[0] as string;
  const kc = tb.kubeConfig(region);
  const core = kc.makeApiClient(CoreV1Api);
  // A node of its own (no GPU label, so no running member operator adopts it and rewrites
  // its annotations under the test), carrying what a member records for a quarantined node.
  const name = uniqueName("attest-node");
  const plain = uniqueName("plain-node");
  t.teardown(async () => {
    for (const n of [name, plain]) await core.deleteNode({ name: n }).catch(() => undefined);
  });
  const evidence = new Date(Date.now() - 90_000);
  await core.createNode({
    body: {
      metadata: {
        name,
        labels: { "sovereign.ai/attested": "false" },
        annotations: {
          "sovereign.ai/attestation-verdict": "ab".repeat(32),
          "sovereign.ai/attestation-time": new Date(evidence.getTime() + 5_000).toISOString(),
          "sovereign.ai/attestation-evidence-time": evidence.toISOString(),
          "sovereign.ai/attestation-reason": "CertRevoked",
          "sovereign.ai/attestation-message": "OCSP: the device certificate is revoked",
          "sovereign.ai/attestation-policy": "cd".repeat(32),
          "sovereign.ai/quarantined-at": new Date(evidence.getTime() + 5_000).toISOString(),
        },
      },
    },
  });
  await core.createNode({ body: { metadata: { name: plain } } });

  const c = capture();
  t.is(await attestCommand([name], {}, c.io, kc), 0);
  t.regex(c.out(), new RegExp(`^node ${name}: Quarantined since `));
  t.regex(
    c.out(),
    /\n {2}verdict +FAILED at .*\n {2}reasons +CertRevoked\n {2}message +OCSP: the device certificate is revoked\n/,
  );
  t.regex(c.out(), /\n {2}evidence +collected .*, (8\d|9\d|1\d\d)s old\n/);
  const json = capture();
  await attestCommand([name], { output: "json" }, json.io, kc);
  const a = JSON.parse(json.out());
  t.false(a.attested);
  t.deepEqual(a.verdict.reasons, ["CertRevoked"]);
  t.is(a.verdict.policyDigest, "cd".repeat(32));

  const notGpu = await attestCommand([plain], {}, capture().io, kc).catch((e: unknown) => e);
  t.is((notGpu as PluginError).reason, "NotAGpuNode");
  const missing = await attestCommand(["no-such-node"], {}, capture().io, kc).catch((e: unknown) => e);
  t.is((missing as PluginError).reason, "NodeNotFound");

  // The shared kwok GPU nodes, read only: whatever a member recorded, the answer agrees with its label.
  const gpuNode = tb.cluster(region).nodes.find((n) => n.gpus > 0)?.name as string;
  const shared = capture();
  t.is(await attestCommand([gpuNode], { output: "json" }, shared.io, kc), 0);
  const s = JSON.parse(shared.out());
  t.is(s.attested, s.label === "true");
  t.is(s.gpus > 0, true);
});
