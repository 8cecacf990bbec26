// The chart installed for real on the testbed: the hub release into a fresh namespace of the
// hub cluster, a member release into a region cluster. The operator's pods do not run there
// (kwok nodes run no containers, and no operator image is published yet), so nothing here
// waits for them. What is checked instead is what the chart is responsible for: it installs,
// upgrades and uninstalls cleanly, and its RBAC permits every API call the operator's code
// makes (kubectl auth can-i as the chart's ServiceAccount) and nothing the tests name as
// out of bounds. The hub goes one step further and runs the real operator process with the
// chart's ServiceAccount token and the environment the chart renders; so does the region
// admin role, which issues and revokes a region credential with its own token.
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CustomObjectsApi, KubeConfig } from "@kubernetes/client-node";
import test, { type ExecutionContext } from "ava";
import { parse, stringify } from "yaml";
import type { FederatedRun } from "../../crds/types.generated.ts";
import { issueRegionCredential, revokeRegionAccess } from "../../operator/hub/credentials.ts";
import { FINALIZER } from "../../operator/hub/federatedrun-controller.ts";
import { regionNamespace } from "../../operator/hub/region-access.ts";
import { LEARNER_NAMESPACE } from "../../operator/member/work-controller.ts";
import { makeRun } from "../operator/builders.ts";
import { eventually, type Testbed, testNamespace, uniqueName, useTestbed } from "../testbed/harness.ts";
import { repoRoot } from "../testbed/topology.ts";
import { CHART, helm, type K8sObject, one, parseManifests } from "./helm.ts";

const API = { group: "sovereign.ai", version: "v1alpha1" };
const CRDS = ["federatedruns", "sovereignnodes", "attestationpolicies", "regionworks"].map(
  (p) => `${p}.sovereign.ai`,
);

/** One `kubectl auth can-i` question: verb, resource (with /name), and where. */
interface Ask {
  verb: string;
  resource: string;
  namespace?: string;
  /** -A: in every namespace. */
  all?: boolean;
  subresource?: string;
}

const ask = (
  verb: string,
  resource: string,
  where: { namespace?: string; all?: boolean; subresource?: string } = {},
): Ask => ({ verb, resource, ...where });

const describe = (a: Ask) =>
  `${a.verb} ${a.resource}${a.subresource ? `/${a.subresource}` : ""}${a.all ? " in all namespaces" : a.namespace ? ` in ${a.namespace}` : ""}`;

/** Asks the API server (the real authorizer, through impersonation) what `user` may do. */
async function canI(tb: Testbed, cluster: string, user: string, asks: Ask[]): Promise<Map<string, boolean>> {
  const answers = new Map<string, boolean>();
  const queue = [...asks];
  const worker = async () => {
    for (let a = queue.shift(); a; a = queue.shift()) {
      const args = ["auth", "can-i", a.verb, a.resource, `--as=${user}`];
      if (a.all) args.push("--all-namespaces");
      else if (a.namespace) args.push("-n", a.namespace);
      if (a.subresource) args.push(`--subresource=${a.subresource}`);
      const res = await tb.kubectl(cluster, args);
      if (res.code > 1) throw new Error(`kubectl ${args.join(" ")}: ${res.stderr}`);
      answers.set(describe(a), res.code === 0);
    }
  };
  await Promise.all([worker(), worker(), worker(), worker()]);
  return answers;
}

function assertCan(t: ExecutionContext, answers: Map<string, boolean>, allowed: Ask[], denied: Ask[]): void {
  for (const a of allowed) t.true(answers.get(describe(a)), `the operator's code needs to ${describe(a)}`);
  for (const a of denied) t.false(answers.get(describe(a)), `must not be allowed to ${describe(a)}`);
}

async function helmOk(t: ExecutionContext, args: string[], values: object[] = []): Promise<string> {
  const res = await helm(args, values);
  if (res.code !== 0) t.fail(`helm ${args.join(" ")} failed:\n${res.stderr}`);
  return res.stdout;
}

/** A kubeconfig file for a ServiceAccount, with a short-lived token from TokenRequest. */
async function serviceAccountKubeconfig(
  tb: Testbed,
  cluster: string,
  namespace: string,
  sa: string,
  dir: string,
): Promise<string> {
  const token = await tb.kubectl(cluster, ["create", "token", sa, "-n", namespace, "--duration=1h"]);
  if (token.code !== 0) throw new Error(`token for ${namespace}/${sa}: ${token.stderr}`);
  const c = tb.cluster(cluster);
  const file = join(dir, `${sa}.kubeconfig`);
  await writeFile(
    file,
    stringify({
      apiVersion: "v1",
      kind: "Config",
      clusters: [{ name: cluster, cluster: { server: c.server, "certificate-authority": c.caFile } }],
      users: [{ name: sa, user: { token: token.stdout.trim() } }],
      contexts: [{ name: sa, context: { cluster, user: sa, namespace } }],
      "current-context": sa,
    }),
  );
  return file;
}

/** The release's objects across namespaces, by its instance label. */
async function releaseObjects(tb: Testbed, cluster: string, release: string): Promise<string[]> {
  const res = await tb.kubectl(cluster, [
    "get",
    "clusterroles,clusterrolebindings,roles,rolebindings,serviceaccounts,deployments,daemonsets,services,configmaps,networkpolicies,poddisruptionbudgets",
    "--all-namespaces",
    "-l",
    `app.kubernetes.io/instance=${release}`,
    "-o",
    "name",
  ]);
  if (res.code !== 0) throw new Error(res.stderr);
  return res.stdout.split("\n").filter(Boolean);
}

/** The environment the chart's Deployment gives the operator, as the kubelet would resolve it. */
function deploymentEnv(manifest: string, overrides: Record<string, string>): NodeJS.ProcessEnv {
  const deploy = one(parseManifests(manifest), "Deployment");
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith("SOVEREIGN_") && k !== "KUBECONFIG") env[k] = v;
  }
  for (const e of deploy.spec.template.spec.containers[0].env as K8sObject["spec"][]) {
    if (e.value !== undefined) env[e.name] = e.value;
    else if (e.valueFrom?.fieldRef?.fieldPath === "metadata.name") env[e.name] = "chart-test-0";
  }
  return { ...env, ...overrides };
}

function startOperator(
  t: ExecutionContext,
  env: NodeJS.ProcessEnv,
): { child: ChildProcess; output: () => string } {
  const child = spawn(process.execPath, ["operator/main.ts"], {
    cwd: repoRoot,
    env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout?.on("data", (c: Buffer) => {
    output += c.toString();
  });
  child.stderr?.on("data", (c: Buffer) => {
    output += c.toString();
  });
  t.teardown(() => {
    if (child.exitCode === null) child.kill("SIGKILL");
  });
  return { child, output: () => output };
}

async function stopOperator(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const exited = new Promise((r) => child.once("exit", r));
  child.kill("SIGTERM");
  await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
  if (child.exitCode === null) child.kill("SIGKILL");
}

test("hub: install, RBAC the operator's calls need, a real operator run, upgrade keeps runs, uninstall", async (t) => {
  const tb = await useTestbed();
  const cluster = "hub";
  const kubeconfig = tb.cluster(cluster).kubeconfig;
  const ns = await testNamespace(t, tb, cluster, "chart-hub");
  const runs = await testNamespace(t, tb, cluster, "chart-runs");
  // Runs keep the operator's finalizer once it is gone (a failed test may stop it early):
  // strip it, or the namespace could never be deleted. Teardowns run last-registered first.
  t.teardown(async () => {
    const names = await tb.kubectl(cluster, ["get", "federatedruns", "-n", runs, "-o", "name"]);
    for (const name of names.stdout.split("\n").filter(Boolean)) {
      await tb.kubectl(cluster, [
        "patch",
        name,
        "-n",
        runs,
        "--type=merge",
        "-p",
        '{"metadata":{"finalizers":null}}',
      ]);
    }
  });
  const release = uniqueName("hub");
  const fullname = `${release}-sovereign`;
  const sa = `system:serviceaccount:${ns}:${fullname}`;
  const dir = await mkdtemp(join(tmpdir(), "sovereign-chart-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  t.teardown(async () => {
    await helm(["uninstall", release, "-n", ns, "--kubeconfig", kubeconfig, "--ignore-not-found"]);
  });
  const helmArgs = ["-n", ns, "--kubeconfig", kubeconfig];
  // The hub sees only its own namespace of runs and no region, so it never touches what
  // other tests on the shared hub cluster are doing.
  const values = {
    mode: "hub",
    hub: { watchNamespace: runs, regionSelector: `sovereign.ai/test-fleet=${release}` },
    rbac: { regionAdminClusterRole: true },
  };

  await helmOk(t, ["install", release, CHART, ...helmArgs], [values]);
  for (const crd of CRDS) {
    t.is((await tb.kubectl(cluster, ["get", "crd", crd])).code, 0, `CRD ${crd} exists`);
  }
  const installed = await releaseObjects(tb, cluster, release);
  for (const name of [
    `clusterrole.rbac.authorization.k8s.io/${fullname}`,
    `clusterrolebinding.rbac.authorization.k8s.io/${fullname}`,
    `clusterrole.rbac.authorization.k8s.io/${fullname}-region-admin`,
    `role.rbac.authorization.k8s.io/${fullname}-leader-election`,
    `role.rbac.authorization.k8s.io/${fullname}`,
    `serviceaccount/${fullname}`,
    `deployment.apps/${fullname}`,
  ])
    t.true(installed.includes(name), `${name} installed (${installed.join(", ")})`);

  // Every call in operator/hub/*.ts and the runtime it uses, and what must stay out of reach.
  const region = "sovereign-region-anywhere";
  const allowed = [
    ...["get", "list", "watch", "patch"].map((v) =>
      ask(v, "federatedruns.sovereign.ai", { namespace: runs }),
    ),
    ask("patch", "federatedruns.sovereign.ai", { namespace: runs, subresource: "status" }),
    ...["list", "watch"].map((v) => ask(v, "sovereignnodes.sovereign.ai")),
    ask("patch", "sovereignnodes.sovereign.ai", { subresource: "status" }),
    ...["list", "watch"].map((v) => ask(v, "attestationpolicies.sovereign.ai")),
    ...["list", "watch"].map((v) => ask(v, "regionworks.sovereign.ai", { all: true })),
    ...["create", "patch", "delete"].map((v) => ask(v, "regionworks.sovereign.ai", { namespace: region })),
    ask("create", "events", { namespace: runs }),
    ask("create", "events", { namespace: "default" }),
    ask("create", "leases.coordination.k8s.io", { namespace: ns }),
    ask("get", "leases.coordination.k8s.io/sovereign-hub", { namespace: ns }),
    ask("update", "leases.coordination.k8s.io/sovereign-hub", { namespace: ns }),
  ];
  const denied = [
    ask("get", "secrets", { namespace: ns }),
    ask("list", "secrets", { all: true }),
    ask("list", "federatedruns.sovereign.ai", { namespace: "default" }),
    ask("patch", "sovereignnodes.sovereign.ai"),
    ask("delete", "sovereignnodes.sovereign.ai"),
    ask("create", "clusterrolebindings.rbac.authorization.k8s.io"),
    ask("create", "rolebindings.rbac.authorization.k8s.io", { namespace: region }),
    ask("create", "serviceaccounts", { namespace: region, subresource: "token" }),
    ask("create", "namespaces"),
    ask("update", "leases.coordination.k8s.io/someone-else", { namespace: ns }),
    ask("create", "pods", { namespace: ns }),
  ];
  assertCan(t, await canI(tb, cluster, sa, [...allowed, ...denied]), allowed, denied);

  // The real hub operator, as the chart's ServiceAccount, with the chart's environment.
  const manifest = await helmOk(t, ["get", "manifest", release, ...helmArgs]);
  const operator = startOperator(
    t,
    deploymentEnv(manifest, {
      KUBECONFIG: await serviceAccountKubeconfig(tb, cluster, ns, fullname, dir),
      SOVEREIGN_METRICS_BIND_ADDRESS: "127.0.0.1:0",
      SOVEREIGN_HEALTH_PROBE_BIND_ADDRESS: "127.0.0.1:0",
    }),
  );
  const custom = tb.kubeConfig(cluster).makeApiClient(CustomObjectsApi);
  const getRun = (name: string) =>
    custom.getNamespacedCustomObject({
      ...API,
      plural: "federatedruns",
      namespace: runs,
      name,
    }) as Promise<FederatedRun>;
  const first = makeRun("chart-run-1", runs).obj();
  await custom.createNamespacedCustomObject({
    ...API,
    plural: "federatedruns",
    namespace: runs,
    body: first,
  });
  const reconciled = await eventually(
    async () => {
      const r = await getRun("chart-run-1");
      return r.metadata.finalizers?.includes(FINALIZER) && (r.status?.conditions?.length ?? 0) > 0 && r;
    },
    "the hub operator to add its finalizer and write the run's status",
    30_000,
  ).catch((err: Error) => {
    throw new Error(`${err.message}\noperator output:\n${operator.output()}`);
  });
  t.truthy(reconciled.status?.observedGeneration);
  const lease = await tb.kubectl(cluster, ["get", "lease", "sovereign-hub", "-n", ns, "-o", "json"]);
  t.regex(JSON.parse(lease.stdout).spec.holderIdentity, /^chart-test-0_/, "it leads on the chart's Lease");
  // Deleting a run: the operator removes its finalizer, and the run goes.
  await custom.deleteNamespacedCustomObject({
    ...API,
    plural: "federatedruns",
    namespace: runs,
    name: "chart-run-1",
  });
  await eventually(
    async () => {
      try {
        await getRun("chart-run-1");
        return false;
      } catch (err) {
        return (err as { code?: number }).code === 404;
      }
    },
    "the deleted run to be released by the operator",
    30_000,
  );
  t.false(/forbidden/i.test(operator.output()), `no call was forbidden:\n${operator.output()}`);
  await stopOperator(operator.child);

  // The region-admin role issues and revokes a region credential with its own token.
  const issuer = "region-issuer";
  t.is((await tb.kubectl(cluster, ["create", "serviceaccount", issuer, "-n", ns])).code, 0);
  const binding = `${release}-issuer`;
  const bound = await tb.kubectl(cluster, [
    "create",
    "clusterrolebinding",
    binding,
    `--clusterrole=${fullname}-region-admin`,
    `--serviceaccount=${ns}:${issuer}`,
  ]);
  t.is(bound.code, 0, bound.stderr);
  t.teardown(async () => {
    await tb.kubectl(cluster, ["delete", "clusterrolebinding", binding, "--ignore-not-found"]);
  });
  const regionName = uniqueName("chart");
  t.teardown(() => revokeRegionAccess(tb.kubeConfig(cluster), regionName).catch(() => undefined));
  const issuerKc = new KubeConfig();
  issuerKc.loadFromFile(await serviceAccountKubeconfig(tb, cluster, ns, issuer, dir));
  const credential = await eventually(
    // The new binding reaches the authorizer's cache a moment after it is written.
    () => issueRegionCredential(issuerKc, regionName, { ttlSeconds: 600 }),
    "the region admin to issue a credential",
    30_000,
  );
  t.is(credential.region, regionName);
  await revokeRegionAccess(issuerKc, regionName);
  t.is(
    (await tb.kubectl(cluster, ["get", "namespace", regionNamespace(regionName)])).stdout.includes("Active"),
    false,
  );

  // A run made before the upgrade is still there after it (same uid).
  const second = makeRun("chart-run-2", runs).obj();
  await custom.createNamespacedCustomObject({
    ...API,
    plural: "federatedruns",
    namespace: runs,
    body: second,
  });
  const before = await getRun("chart-run-2");
  await helmOk(
    t,
    ["upgrade", release, CHART, ...helmArgs],
    [{ ...values, hub: { ...values.hub, watchNamespace: "" } }],
  );
  const status = JSON.parse(await helmOk(t, ["status", release, ...helmArgs, "-o", "json"]));
  t.is(status.version, 2);
  t.is(status.info.status, "deployed");
  t.is((await getRun("chart-run-2")).metadata.uid, before.metadata.uid, "the upgrade kept the FederatedRun");
  // The changed value took effect: runs everywhere now, through the ClusterRole; no Role left.
  const after = await canI(tb, cluster, sa, [ask("list", "federatedruns.sovereign.ai", { all: true })]);
  t.true([...after.values()][0], "watchNamespace='' grants runs in all namespaces");
  t.false(
    (await releaseObjects(tb, cluster, release)).includes(`role.rbac.authorization.k8s.io/${fullname}`),
    "the watch namespace's Role went with the value",
  );

  await helmOk(t, ["uninstall", release, ...helmArgs]);
  await eventually(
    async () => (await releaseObjects(tb, cluster, release)).length === 0,
    "uninstall to remove every object of the release",
  );
  for (const crd of CRDS) {
    t.is(
      (await tb.kubectl(cluster, ["get", "crd", crd])).code,
      0,
      `${crd} is kept (Helm never deletes crds/)`,
    );
  }
  t.is(
    (await getRun("chart-run-2")).metadata.uid,
    before.metadata.uid,
    "runs outlive the operator's release",
  );
});

test("member: install in a region cluster, RBAC for the member's calls only, upgrade, uninstall", async (t) => {
  const tb = await useTestbed();
  const cluster = tb.regions[0] as string;
  const kubeconfig = tb.cluster(cluster).kubeconfig;
  // The learners' namespace is shared by every test's member on this cluster: make sure it
  // exists (the Role goes into it) and never delete it.
  const created = await tb.kubectl(cluster, ["create", "namespace", LEARNER_NAMESPACE]);
  if (created.code !== 0 && !created.stderr.includes("AlreadyExists")) t.fail(created.stderr);
  const ns = await testNamespace(t, tb, cluster, "chart-member");
  const release = uniqueName("member");
  const fullname = `${release}-sovereign`;
  const region = uniqueName("region");
  const sa = `system:serviceaccount:${ns}:${fullname}`;
  const helmArgs = ["-n", ns, "--kubeconfig", kubeconfig];
  t.teardown(async () => {
    await helm(["uninstall", release, ...helmArgs, "--ignore-not-found"]);
  });
  const policy = parse(await readFile(join(repoRoot, "examples", "attestationpolicy-testbed.yaml"), "utf8"));
  const values = {
    mode: "member",
    member: {
      region,
      hubKubeconfigSecret: { name: "sovereign-hub-credential" },
      registration: {
        jurisdiction: "DE",
        attestationPolicyRef: { name: policy.metadata.name },
        dataResidency: {
          allowedEgress: ["ModelDeltas"],
          acceptAggregates: true,
          checkpointLocation: "InRegion",
        },
        jetStreamDomain: region,
      },
      createLearnerNamespace: false,
      attestation: { policy, trustAnchors: { testbed: true }, evidenceSource: "testbed" },
    },
  };

  // A member's cluster needs no sovereign.ai CRDs: its work is at the hub (chart README).
  await helmOk(t, ["install", release, CHART, ...helmArgs, "--skip-crds"], [values]);
  const installed = await releaseObjects(tb, cluster, release);
  for (const name of [
    `clusterrole.rbac.authorization.k8s.io/${fullname}`,
    `clusterrolebinding.rbac.authorization.k8s.io/${fullname}`,
    `role.rbac.authorization.k8s.io/${fullname}`,
    `role.rbac.authorization.k8s.io/${fullname}-node-events`,
    `role.rbac.authorization.k8s.io/${fullname}-leader-election`,
    `configmap/${fullname}`,
    `deployment.apps/${fullname}`,
  ])
    t.true(installed.includes(name), `${name} installed (${installed.join(", ")})`);

  // Every call in operator/member/*.ts against the region's own cluster, with the gate on.
  const learners = LEARNER_NAMESPACE;
  const allowed = [
    ...["get", "list", "watch", "create", "patch", "delete"].map((v) =>
      ask(v, "pods", { namespace: learners }),
    ),
    ...["get", "create", "delete"].map((v) => ask(v, "secrets", { namespace: learners })),
    ask("create", "events", { namespace: learners }),
    ask("create", "events", { namespace: "default" }),
    ...["list", "watch", "patch"].map((v) => ask(v, "nodes")),
    ask("create", "namespaces"),
    ask("create", "leases.coordination.k8s.io", { namespace: ns }),
    ask("get", `leases.coordination.k8s.io/sovereign-member-${region}`, { namespace: ns }),
    ask("update", `leases.coordination.k8s.io/sovereign-member-${region}`, { namespace: ns }),
  ];
  const denied = [
    ask("list", "secrets", { namespace: learners }),
    ask("get", "secrets", { namespace: ns }),
    ask("get", "secrets", { namespace: "kube-system" }),
    ask("create", "pods", { namespace: "default" }),
    ask("delete", "nodes"),
    ask("patch", "nodes", { subresource: "status" }),
    ask("delete", "namespaces"),
    ask("create", "sovereignnodes.sovereign.ai"),
    ask("list", "regionworks.sovereign.ai", { all: true }),
    ask("create", "clusterroles.rbac.authorization.k8s.io"),
  ];
  assertCan(t, await canI(tb, cluster, sa, [...allowed, ...denied]), allowed, denied);

  // Upgrade with a changed value: the Deployment follows, the RBAC stays.
  await helmOk(
    t,
    ["upgrade", release, CHART, ...helmArgs, "--skip-crds"],
    [{ ...values, logLevel: "debug" }],
  );
  const manifest = await helmOk(t, ["get", "manifest", release, ...helmArgs]);
  const env = one(parseManifests(manifest), "Deployment").spec.template.spec.containers[0].env as {
    name: string;
    value?: string;
  }[];
  t.is(env.find((e) => e.name === "SOVEREIGN_LOG_LEVEL")?.value, "debug");
  const live = await tb.kubectl(cluster, ["get", "deployment", fullname, "-n", ns, "-o", "json"]);
  t.true(live.stdout.includes('"debug"'), "the live Deployment has the new value");
  t.true(
    (await canI(tb, cluster, sa, [ask("create", "pods", { namespace: learners })])).values().next().value,
  );

  await helmOk(t, ["uninstall", release, ...helmArgs]);
  await eventually(
    async () => (await releaseObjects(tb, cluster, release)).length === 0,
    "uninstall to remove every object of the release",
  );
  t.is(
    (await tb.kubectl(cluster, ["get", "namespace", LEARNER_NAMESPACE])).code,
    0,
    "a learner namespace the release did not create stays",
  );
});
