// The Helm chart (charts/sovereign) without a cluster: lint, what `helm template` renders for
// each mode (RBAC, security, probes, the operator's environment), the values schema refusing
// bad values, the CRDs being the generated ones, and the Grafana dashboard querying only
// metrics the operator registers. install.apiserver.test.ts installs it on the testbed.
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import test from "ava";
import { parse } from "yaml";
import { crdDrift } from "../../charts/sovereign/sync-crds.ts";
import { parseAttestationPolicySpec, parseSovereignNodeSpec } from "../../crds/validate.ts";
import { flags, parseConfig } from "../../operator/config.ts";
import { LEARNER_NAMESPACE } from "../../operator/member/work-controller.ts";
import { OperatorMetrics } from "../../operator/runtime/metrics.ts";
import {
  CHART,
  grantKey,
  grants,
  HUB_VALUES,
  helm,
  type K8sObject,
  MEMBER_VALUES,
  one,
  render,
} from "./helm.ts";
import { metricName, vectorSelectors } from "./prometheus.ts";

const WRITE_VERBS = new Set(["create", "update", "patch", "delete", "deletecollection", "*"]);

test("the chart's CRDs are the generated ones (node charts/sovereign/sync-crds.ts copies them)", async (t) => {
  const drift = await crdDrift();
  t.deepEqual(
    drift,
    { stale: [], extra: [] },
    "charts/sovereign/crds/ differs from crds/generated/: run `node charts/sovereign/sync-crds.ts`",
  );
});

test("helm lint passes for the hub and the member values", async (t) => {
  for (const values of [HUB_VALUES, MEMBER_VALUES]) {
    const res = await helm(["lint", "--strict", CHART, "-f", values]);
    t.is(res.code, 0, `${values}:\n${res.stdout}${res.stderr}`);
    t.regex(res.stdout, /1 chart\(s\) linted, 0 chart\(s\) failed/);
  }
});

test("hub: two leader-electing replicas, no member parts, and least-privilege RBAC", async (t) => {
  const objects = await render([HUB_VALUES]);
  const kinds = new Set(objects.map((o) => o.kind));
  for (const kind of ["Deployment", "ServiceAccount", "Service", "NetworkPolicy", "PodDisruptionBudget"])
    t.true(kinds.has(kind), `hub renders a ${kind}`);
  t.false(kinds.has("DaemonSet"), "no attestation agent at the hub");
  t.false(kinds.has("Namespace"), "no learner namespace at the hub");
  t.false(
    objects.some((o) => o.kind === "ConfigMap" && !o.metadata.name.endsWith("-dashboard")),
    "no registration ConfigMap at the hub",
  );
  const deploy = one(objects, "Deployment");
  t.is(deploy.spec.replicas, 2);
  const env = envOf(deploy);
  t.is(env.SOVEREIGN_MODE, "hub");
  t.is(env.SOVEREIGN_LEADER_ELECT, "true");

  // What operator/hub/*.ts calls, and nothing more (the region-admin ClusterRole is unbound).
  const bound = grants(objects, { skipUnbound: true }).map(grantKey).sort();
  t.deepEqual(
    bound,
    [
      "cluster core events create",
      "cluster sovereign.ai attestationpolicies get",
      "cluster sovereign.ai attestationpolicies list",
      "cluster sovereign.ai attestationpolicies watch",
      "cluster sovereign.ai federatedruns get",
      "cluster sovereign.ai federatedruns list",
      "cluster sovereign.ai federatedruns patch",
      "cluster sovereign.ai federatedruns watch",
      "cluster sovereign.ai federatedruns/status patch",
      "cluster sovereign.ai regionworks create",
      "cluster sovereign.ai regionworks delete",
      "cluster sovereign.ai regionworks get",
      "cluster sovereign.ai regionworks list",
      "cluster sovereign.ai regionworks patch",
      "cluster sovereign.ai regionworks watch",
      "cluster sovereign.ai sovereignnodes get",
      "cluster sovereign.ai sovereignnodes list",
      "cluster sovereign.ai sovereignnodes watch",
      "cluster sovereign.ai sovereignnodes/status patch",
      "sovereign-system coordination.k8s.io leases create",
      "sovereign-system coordination.k8s.io leases get [sovereign-hub]",
      "sovereign-system coordination.k8s.io leases update [sovereign-hub]",
    ].sort(),
  );
  const all = grants(objects, { skipUnbound: true });
  t.false(
    all.some((g) => g.resource.startsWith("secrets")),
    "the hub reads no Secrets",
  );
  t.false(
    all.some((g) => g.apiGroup === "rbac.authorization.k8s.io" || g.resource === "serviceaccounts/token"),
    "the hub operator grants no access and mints no tokens: a hub admin issues region credentials",
  );
  t.false(
    all.some((g) => [g.apiGroup, g.resource, g.verb].includes("*")),
    "no wildcards",
  );
  // The unbound role for admins who issue region credentials exists on request.
  const admin = one(objects, "ClusterRole", "rel-sovereign-region-admin");
  t.false(
    objects.some((o) => o.kind.endsWith("Binding") && o.roleRef.name === admin.metadata.name),
    "the region-admin role is bound by an administrator, never by the chart",
  );
  t.false(
    (admin.rules as { verbs: string[] }[]).some(
      (r) => r.verbs.includes("escalate") || r.verbs.includes("bind"),
    ),
    "no escalate or bind: the role can grant only what it holds",
  );
});

test("hub with watchNamespace: the runs' RBAC is a Role in that namespace", async (t) => {
  const objects = await render([], [{ mode: "hub", hub: { watchNamespace: "runs" } }]);
  const keys = grants(objects, { skipUnbound: true }).map(grantKey);
  t.false(keys.some((k) => k.startsWith("cluster sovereign.ai federatedruns")));
  t.false(keys.includes("cluster core events create"));
  for (const k of [
    "runs sovereign.ai federatedruns list",
    "runs sovereign.ai federatedruns patch",
    "runs sovereign.ai federatedruns/status patch",
    "runs core events create",
    "default core events create",
  ])
    t.true(keys.includes(k), k);
  t.is(envOf(one(objects, "Deployment")).SOVEREIGN_WATCH_NAMESPACE, "runs");
});

test("member: one replica, the agent DaemonSet on GPU nodes, and RBAC only in its own cluster", async (t) => {
  const objects = await render([MEMBER_VALUES]);
  const deploy = one(objects, "Deployment");
  t.is(deploy.spec.replicas, 1);
  t.false(objects.some((o) => o.kind === "PodDisruptionBudget"));
  t.is(one(objects, "Namespace").metadata.name, LEARNER_NAMESPACE);

  const keys = grants(objects, { skipUnbound: true }).map(grantKey).sort();
  t.deepEqual(
    keys,
    [
      "cluster core namespaces create",
      "cluster core nodes get",
      "cluster core nodes list",
      "cluster core nodes patch",
      "cluster core nodes watch",
      "default core events create",
      "sovereign-learners core events create",
      "sovereign-learners core pods create",
      "sovereign-learners core pods delete",
      "sovereign-learners core pods get",
      "sovereign-learners core pods list",
      "sovereign-learners core pods patch",
      "sovereign-learners core pods watch",
      "sovereign-learners core secrets create",
      "sovereign-learners core secrets delete",
      "sovereign-learners core secrets get",
      "sovereign-system coordination.k8s.io leases create",
      "sovereign-system coordination.k8s.io leases get [sovereign-member-region-a]",
      "sovereign-system coordination.k8s.io leases update [sovereign-member-region-a]",
    ].sort(),
  );
  const all = grants(objects);
  t.false(
    all.some((g) => g.apiGroup === "sovereign.ai"),
    "a member holds nothing of sovereign.ai in its cluster (its hub access is the scoped credential)",
  );
  t.false(
    all.some(
      (g) =>
        g.scope === "cluster" && WRITE_VERBS.has(g.verb) && !["nodes", "namespaces"].includes(g.resource),
    ),
    "cluster-wide writes only for node attestation labels and the learner namespace",
  );
  t.false(
    all.some((g) => g.resource === "secrets" && g.scope !== LEARNER_NAMESPACE),
    "Secrets only in the learners' namespace",
  );

  const agent = one(objects, "DaemonSet");
  const pod = agent.spec.template.spec;
  t.deepEqual(pod.nodeSelector, { "nvidia.com/gpu.present": "true" });
  t.true(pod.hostNetwork, "the member dials the agent on the node's InternalIP");
  t.false(pod.automountServiceAccountToken, "the agent needs no API access");
  t.deepEqual(pod.containers[0].command, ["node", "attestation/agent/main.ts"]);
  t.is(pod.containers[0].ports[0].containerPort, Number(envOf(deploy).SOVEREIGN_ATTESTATION_AGENT_PORT));
  assertHardened(t, pod, pod.containers[0], "agent");
});

test("member without the attestation gate: no node writes, no Events", async (t) => {
  const values = parse(await readFile(MEMBER_VALUES, "utf8"));
  values.member.attestation.policy = {};
  const keys = grants(await render([], [values])).map(grantKey);
  t.deepEqual(
    keys.filter((k) => k.includes(" nodes ") || k.includes(" events ")),
    ["cluster core nodes get", "cluster core nodes list"],
  );
});

test("both modes: hardened pods, probes on /healthz and /readyz, metrics Service, resources", async (t) => {
  for (const values of [HUB_VALUES, MEMBER_VALUES]) {
    const objects = await render([values]);
    const deploy = one(objects, "Deployment");
    const pod = deploy.spec.template.spec;
    const c = pod.containers[0];
    assertHardened(t, pod, c, values);
    t.deepEqual(c.command, ["node", "operator/main.ts"]);
    t.deepEqual(c.livenessProbe.httpGet, { path: "/healthz", port: "health" });
    t.deepEqual(c.readinessProbe.httpGet, { path: "/readyz", port: "health" });
    t.deepEqual(
      Object.fromEntries(
        c.ports.map((p: { name: string; containerPort: number }) => [p.name, p.containerPort]),
      ),
      { metrics: 8080, health: 8081 },
    );
    t.truthy(c.resources.requests.cpu && c.resources.requests.memory && c.resources.limits.memory);
    t.is(c.image, "ghcr.io/sovereign-ai/operator:0.1.0", "image tag defaults to the chart's appVersion");
    const svc = one(objects, "Service");
    t.deepEqual(svc.spec.ports[0], { name: "metrics", port: 8080, targetPort: "metrics", protocol: "TCP" });
    t.deepEqual(svc.spec.selector, deploy.spec.selector.matchLabels);
    t.deepEqual(pod.serviceAccountName, one(objects, "ServiceAccount", deploy.metadata.name).metadata.name);

    const np = one(objects, "NetworkPolicy");
    t.deepEqual(np.spec.podSelector.matchLabels, deploy.spec.selector.matchLabels);
    t.deepEqual(np.spec.policyTypes, ["Ingress", "Egress"]);
    const ingressPorts = np.spec.ingress.flatMap((r: { ports: { port: string }[] }) =>
      r.ports.map((p) => p.port),
    );
    t.deepEqual(ingressPorts.sort(), ["health", "metrics"]);
    const egressPorts = np.spec.egress.flatMap((r: { ports: { port: number }[] }) =>
      r.ports.map((p) => p.port),
    );
    for (const port of [53, 443, 6443, 4222]) t.true(egressPorts.includes(port), `egress to port ${port}`);
  }
});

test("image by digest; NATS port from the URL; ServiceMonitor only on request", async (t) => {
  const digest = `sha256:${"a".repeat(64)}`;
  const objects = await render(
    [],
    [
      {
        mode: "hub",
        image: { digest },
        nats: { url: "tls://nats.example:7422" },
        grafana: { dashboard: { enabled: false } },
      },
    ],
  );
  t.is(
    one(objects, "Deployment").spec.template.spec.containers[0].image,
    `ghcr.io/sovereign-ai/operator@${digest}`,
  );
  const egressPorts = one(objects, "NetworkPolicy").spec.egress.flatMap((r: { ports: { port: number }[] }) =>
    r.ports.map((p) => p.port),
  );
  t.true(egressPorts.includes(7422));
  t.false(egressPorts.includes(4222));
  t.false(
    objects.some((o) => o.kind === "ServiceMonitor"),
    "off by default",
  );
  t.false(
    objects.some((o) => o.kind === "ConfigMap"),
    "grafana.dashboard.enabled=false drops the dashboard",
  );
  const sm = one(await render([HUB_VALUES]), "ServiceMonitor");
  t.is(sm.spec.endpoints[0].port, "metrics");
  t.is(sm.metadata.labels?.release, "kube-prometheus-stack");
});

test("the operator accepts the environment the chart gives it (operator/config.ts)", async (t) => {
  const known = new Set([...Object.values(flags).map((f) => f.env), "POD_NAME"]);
  for (const values of [HUB_VALUES, MEMBER_VALUES]) {
    const objects = await render([values]);
    const container = one(objects, "Deployment").spec.template.spec.containers[0];
    const env = envOf(one(objects, "Deployment"));
    for (const name of Object.keys(env)) t.true(known.has(name), `${name} is an operator setting`);
    const config = parseConfig([], env);
    t.is(config.namespace, "sovereign-system", "the Lease lives in the release namespace");
    t.deepEqual(config.metricsBindAddress, { host: "0.0.0.0", port: 8080 });
    t.deepEqual(config.healthProbeBindAddress, { host: "0.0.0.0", port: 8081 });
    // The Role's resourceNames name the Lease the operator elects on.
    const leaseRule = one(objects, "Role", "rel-sovereign-leader-election").rules.find(
      (r: { resourceNames?: string[] }) => r.resourceNames,
    );
    t.deepEqual(leaseRule.resourceNames, [config.leaderElectionId]);
    // Every file the operator is pointed at is mounted.
    const mounts: string[] = container.volumeMounts.map((m: { mountPath: string }) => m.mountPath);
    for (const file of [
      config.hubKubeconfig,
      config.registrationFile,
      config.attestationPolicyFile,
      config.trustAnchors,
      config.auditLog,
      config.auditKey,
    ].filter((f) => f && f !== "testbed")) {
      t.true(
        mounts.some((m) => file === m || file.startsWith(`${m}/`)),
        `${file} is on a mounted volume (${mounts.join(", ")})`,
      );
    }
    if (config.mode === "member") {
      t.is(config.region, "region-a");
      t.is(config.evidenceSource, "agent");
      t.is(config.learnerNatsSecret, "learner-nats");
      t.truthy(config.nats, "NATS URL given, user and password from the Secret");
    }
  }
});

test("member: the registration and policy ConfigMap hold what the operator loads", async (t) => {
  const objects = await render([MEMBER_VALUES]);
  const data = one(objects, "ConfigMap", "rel-sovereign").data;
  const registration = parse(data["registration.yaml"]);
  t.deepEqual(registration.labels, { "sovereign.ai/consortium": "eu-health" });
  const spec = parseSovereignNodeSpec({ ...registration.spec, accepted: false });
  t.true(spec.ok, JSON.stringify(spec));
  // YAML 1.1, as operator/main.ts reads it: `ccMode: On` must come out quoted.
  const policy = parse(data["attestation-policy.yaml"], { version: "1.1" });
  t.is(policy.kind, "AttestationPolicy");
  t.is(policy.metadata.name, registration.spec.attestationPolicyRef.name);
  const parsed = parseAttestationPolicySpec(policy.spec);
  t.true(parsed.ok, JSON.stringify(parsed));
  // A changed registration rolls the operator, which reads it only at start.
  const changed = parse(await readFile(MEMBER_VALUES, "utf8"));
  changed.member.registration.capacity.maxGpus = 32;
  const before = one(objects, "Deployment").spec.template.metadata.annotations["checksum/config"];
  const after = one(await render([], [changed]), "Deployment").spec.template.metadata.annotations[
    "checksum/config"
  ];
  t.not(before, after);
});

/** A valid member, for the schema cases to break one thing each. */
const member = () => ({
  mode: "member",
  member: {
    region: "region-a",
    hubKubeconfigSecret: { name: "hub-credential" },
    registration: {
      jurisdiction: "DE",
      attestationPolicyRef: { name: "p" },
      dataResidency: {
        allowedEgress: ["ModelDeltas"],
        acceptAggregates: true,
        checkpointLocation: "InRegion",
      },
      jetStreamDomain: "region-a",
    },
  },
});

const refusals: { name: string; values: object; expect: RegExp[] }[] = [
  { name: "mode missing", values: {}, expect: [/missing property 'mode'/] },
  {
    name: "mode invalid",
    values: { mode: "hob" },
    expect: [/'\/mode'/, /value must be one of 'hub', 'member'/],
  },
  {
    name: "member without region and hub credential",
    values: { mode: "member", member: { registration: member().member.registration } },
    expect: [/'\/member'/, /missing properties 'region', 'hubKubeconfigSecret'/],
  },
  {
    name: "member without registration",
    values: { mode: "member", member: { region: "region-a", hubKubeconfigSecret: { name: "h" } } },
    expect: [/'\/member\/registration'/, /missing property 'attestationPolicyRef'/],
  },
  {
    name: "region not a DNS label",
    values: { ...member(), member: { ...member().member, region: "Region_A" } },
    expect: [/'\/member\/region'/, /'Region_A' does not match pattern/],
  },
  {
    name: "registration sets accepted",
    values: {
      ...member(),
      member: { ...member().member, registration: { ...member().member.registration, accepted: true } },
    },
    expect: [/'\/member\/registration\/accepted'/, /'not' failed/],
  },
  {
    name: "invalid CPU limit",
    values: { mode: "hub", resources: { limits: { cpu: "lots" } } },
    expect: [/'\/resources\/limits\/cpu'/, /'lots' does not match pattern/],
  },
  {
    name: "invalid memory request",
    values: { mode: "hub", resources: { requests: { memory: "1GB" } } },
    expect: [/'\/resources\/requests\/memory'/, /'1GB'/],
  },
  {
    name: "logLevel not in the enum",
    values: { mode: "hub", logLevel: "verbose" },
    expect: [/'\/logLevel'/, /value must be one of 'debug', 'info', 'warn', 'error'/],
  },
  { name: "workers 0", values: { mode: "hub", workers: 0 }, expect: [/'\/workers'/, /minimum/] },
  {
    name: "a duration in words",
    values: { mode: "hub", leaderElection: { leaseDuration: "15 seconds" } },
    expect: [/'\/leaderElection\/leaseDuration'/],
  },
  {
    name: "not a NATS URL",
    values: { mode: "hub", nats: { url: "http://nats:4222" } },
    expect: [/'\/nats\/url'/],
  },
  {
    name: "a misspelt top-level value",
    values: { mode: "hub", replicas: 3 },
    expect: [/additional properties 'replicas' not allowed/],
  },
  {
    name: "the attestation agent at the hub",
    values: { mode: "hub", attestationAgent: { enabled: true } },
    expect: [/'\/attestationAgent\/enabled'/],
  },
  {
    name: "an attestation policy without trust anchors",
    values: {
      ...member(),
      member: {
        ...member().member,
        attestation: { policy: { metadata: { name: "p" }, spec: { verification: { mode: "Local" } } } },
      },
    },
    expect: [/'\/member\/attestation'/],
  },
  {
    name: "an NRAS policy at the member's gate",
    values: {
      ...member(),
      member: {
        ...member().member,
        attestation: {
          policy: { metadata: { name: "p" }, spec: { verification: { mode: "NRAS" } } },
          trustAnchors: { secretName: "roots" },
        },
      },
    },
    expect: [/'\/member\/attestation\/policy\/spec\/verification\/mode'/, /value must be 'Local'/],
  },
  {
    name: "a policy other than the registration names",
    values: {
      ...member(),
      member: {
        ...member().member,
        attestation: {
          policy: { metadata: { name: "other" }, spec: {} },
          trustAnchors: { secretName: "roots" },
        },
      },
    },
    expect: [/the policy is named "other" but member.registration.attestationPolicyRef.name is "p"/],
  },
  {
    name: "two hub replicas without leader election",
    values: { mode: "hub", leaderElection: { enabled: false } },
    expect: [/leaderElection.enabled: false with 2 replicas would run every controller twice/],
  },
  {
    name: "a hub with a persistent audit log and two replicas",
    values: { mode: "hub", audit: { existingClaim: "audit" } },
    expect: [/audit.existingClaim: .*set replicaCount: 1/],
  },
];

test("bad values are refused with a message that names the value", async (t) => {
  const results = await Promise.all(
    refusals.map(async (c) => ({ c, res: await helm(["template", "rel", CHART], [c.values]) })),
  );
  for (const { c, res } of results) {
    t.not(res.code, 0, `${c.name}: helm accepted it`);
    for (const re of c.expect) t.regex(res.stderr, re, `${c.name}: ${res.stderr}`);
  }
  // The valid member they start from renders.
  await t.notThrowsAsync(render([], [member()]));
});

// ---- The dashboard

/** Grafana's reference to the dashboard's datasource variable. */
const DATASOURCE_UID = ["$", "{datasource}"].join("");

interface Panel {
  id: number;
  type: string;
  title: string;
  datasource?: { uid: string };
  fieldConfig?: { defaults?: { unit?: string } };
  targets?: { expr: string; datasource?: { uid: string } }[];
  gridPos: { h: number; w: number; x: number; y: number };
}

/** Metric names in a PromQL expression (the dashboard test's selector reader, prometheus.ts). */
const metricNames = (expr: string): string[] => vectorSelectors(expr).map(metricName);

test("metricNames reads metric names, not functions, labels or keywords", (t) => {
  t.deepEqual(
    metricNames(
      'histogram_quantile(0.9, sum by (le) (rate(a_seconds_bucket{job=~"$job", x!="y"}[$__rate_interval]))) / on (job) group_left b_total or vector(0)',
    ),
    ["a_seconds_bucket", "b_total"],
  );
});

test("the dashboard is valid JSON that queries only metrics the operator registers", async (t) => {
  const text = await readFile(join(CHART, "dashboards", "sovereign-operator.json"), "utf8");
  const dashboard = JSON.parse(text);
  // Shipped as the sidecar's ConfigMap, byte for byte.
  const cm = one(await render([HUB_VALUES]), "ConfigMap", "rel-sovereign-dashboard");
  t.is(cm.metadata.labels?.grafana_dashboard, "1");
  t.is(cm.data["sovereign-operator.json"], text.trimEnd());

  const registered = new Set<string>();
  for (const m of await new OperatorMetrics({ defaultMetrics: false }).registry.getMetricsAsJSON()) {
    registered.add(m.name);
    if (String(m.type) === "histogram")
      for (const s of ["_bucket", "_sum", "_count"]) registered.add(m.name + s);
  }
  const vars = dashboard.templating.list as { name: string; type: string; query: unknown }[];
  t.like(
    vars.find((v) => v.name === "datasource"),
    { type: "datasource", query: "prometheus" },
  );
  const exprs: string[] = vars
    .filter((v) => v.type === "query")
    .map((v) => (v.query as { query: string }).query.replace(/^label_values\(([^,]+),.*$/, "$1"));

  const panels = dashboard.panels as Panel[];
  const ids = panels.map((p) => p.id);
  t.is(new Set(ids).size, ids.length, "panel ids are unique");
  for (const p of panels.filter((p) => p.type !== "row")) {
    t.is(p.datasource?.uid, DATASOURCE_UID, `${p.title}: uses the datasource variable`);
    t.truthy(p.fieldConfig?.defaults?.unit, `${p.title}: has a unit`);
    t.true((p.targets ?? []).length > 0, `${p.title}: has queries`);
    for (const target of p.targets ?? []) {
      t.is(target.datasource?.uid, DATASOURCE_UID);
      t.true(target.expr.includes('job=~"$job"'), `${p.title}: filtered by $job: ${target.expr}`);
      exprs.push(target.expr);
    }
    t.true(p.gridPos.x + p.gridPos.w <= 24, `${p.title}: fits the grid`);
  }
  const used = new Set<string>();
  for (const expr of exprs) {
    const names = metricNames(expr);
    t.true(names.length > 0, `no metric in ${expr}`);
    for (const name of names) {
      t.true(registered.has(name), `${name} (in ${expr}) is not a metric the operator registers`);
      used.add(name.replace(/_(bucket|sum|count)$/, ""));
    }
  }
  // The panels the dashboard promises.
  for (const name of [
    "sovereign_runs",
    "sovereign_run_current_round",
    "sovereign_run_regions",
    "sovereign_rounds_total",
    "sovereign_round_duration_seconds",
    "sovereign_region_ready",
    "sovereign_region_attested_gpus",
    "sovereign_quarantined_nodes",
    "sovereign_attestation_evidence_age_seconds",
    "sovereign_attestation_verifications_total",
    "sovereign_delta_bytes_total",
    "sovereign_learner_steps_total",
    "sovereign_deltas_refused_total",
    "controller_runtime_reconcile_errors_total",
    "workqueue_depth",
  ])
    t.true(used.has(name), `the dashboard shows ${name}`);
});

// ---- helpers

function envOf(deploy: K8sObject): Record<string, string> {
  const env: Record<string, string> = {};
  for (const e of deploy.spec.template.spec.containers[0].env as {
    name: string;
    value?: string;
    valueFrom?: { secretKeyRef?: { key: string }; fieldRef?: unknown };
  }[]) {
    // Secret values are not in the manifest; stand in a placeholder, as the kubelet would a value.
    env[e.name] =
      e.value ?? (e.valueFrom?.secretKeyRef ? `from-secret-${e.valueFrom.secretKeyRef.key}` : "pod-0");
  }
  return env;
}

function assertHardened(
  t: {
    is: (a: unknown, b: unknown, m?: string) => void;
    deepEqual: (a: unknown, b: unknown, m?: string) => void;
  },
  pod: K8sObject["spec"],
  container: K8sObject["spec"],
  what: string,
): void {
  t.is(pod.securityContext.runAsNonRoot, true, `${what}: pod runAsNonRoot`);
  t.is(pod.securityContext.seccompProfile.type, "RuntimeDefault", `${what}: seccomp`);
  const sc = container.securityContext;
  t.is(sc.runAsNonRoot, true, `${what}: runAsNonRoot`);
  t.is(sc.readOnlyRootFilesystem, true, `${what}: readOnlyRootFilesystem`);
  t.is(sc.allowPrivilegeEscalation, false, `${what}: allowPrivilegeEscalation`);
  t.deepEqual(sc.capabilities.drop, ["ALL"], `${what}: drop ALL capabilities`);
}
