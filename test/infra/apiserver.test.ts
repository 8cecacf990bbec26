// The objects the Pulumi components ask for, checked against the testbed's real API
// servers — the part of a `pulumi up` that does not need the Pulumi engine or the
// Kubernetes provider plugin (which cannot be built here, see docs/pulumi.md):
//
// 1. The example program's whole graph (hub + three regions, chart included) is built under
//    Pulumi's runtime mocks, which record every resource's inputs and target cluster; the
//    chart releases are rendered by the testbed's helm with exactly the values the
//    components pass. Every object is then server-side applied with dryRun=All to the
//    cluster its provider names: schema, RBAC, admission-policy and chart errors surface
//    here as they would in `pulumi up`. The namespaces the objects need are created for
//    real (unique names) and deleted afterwards.
// 2. The credential path for real: the region's hub-side access and its token Secret are
//    applied at the hub, the token controller fills the Secret, and the kubeconfig the
//    component builds from it lets the member register its own SovereignNode and nothing
//    else (dry-run creates, so nothing is stored).
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import {
  CoreV1Api,
  CustomObjectsApi,
  KubeConfig,
  type KubernetesObject,
  KubernetesObjectApi,
  PatchStrategy,
  RbacAuthorizationV1Api,
} from "@kubernetes/client-node";
import * as pulumi from "@pulumi/pulumi";
import test from "ava";
import { parseAllDocuments } from "yaml";
import { readTestbed, testbedFederation } from "../../infra/example/testbed-stack.ts";
import { chartDir, regionHubKubeconfig } from "../../infra/manifests.ts";
import { memberClusterRoleName, regionNamespace } from "../../operator/hub/region-access.ts";
import { useTestbed } from "../testbed/harness.ts";

const execFileAsync = promisify(execFile);
const FIELD_MANAGER = "sovereign-pulumi-test";
const SECRET_SIG = "4dabf18193072939515e22adb298388d";

interface Recorded {
  type: string;
  name: string;
  inputs: Record<string, unknown>;
  provider: string | undefined;
}

function plain(v: unknown): unknown {
  if (typeof v === "object" && v !== null && SECRET_SIG in v)
    return plain((v as unknown as { value: unknown }).value);
  if (Array.isArray(v)) return v.map(plain);
  if (typeof v === "object" && v !== null) {
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plain(x)]));
  }
  return v;
}

const tb = await useTestbed();
const suffix = `-p${randomBytes(3).toString("hex")}`;
const recorded: Recorded[] = [];
await pulumi.runtime.setMocks(
  {
    newResource(args) {
      recorded.push({ type: args.type, name: args.name, inputs: args.inputs, provider: args.provider });
      const state: Record<string, unknown> = { ...args.inputs };
      if (args.inputs.type === "kubernetes.io/service-account-token") state.data = { token: "bW9jaw==" };
      return { id: `${args.name}-id`, state };
    },
    call: (args) => args.inputs,
  },
  "sovereign-testbed",
  "apiserver-check",
  false,
);
const tbFile = readTestbed(join(tb.description.stateDir, "testbed.json"));
testbedFederation(tbFile, { suffix, manageShared: true, chart: true });
await pulumi.runtime.disconnect();

/** Cluster a recorded resource goes to: its provider's logical name (hub, region-a, …). */
function clusterOf(r: Recorded): string {
  const m = /::pulumi:providers:kubernetes::([^:]+)::/.exec(r.provider ?? "");
  if (!m?.[1])
    throw new Error(`${r.type} ${r.name} has no explicit provider: it would go to the ambient cluster`);
  return m[1];
}

interface Target {
  cluster: string;
  obj: KubernetesObject & Record<string, unknown>;
  from: string;
}

async function helmTemplate(r: Recorded): Promise<Target[]> {
  const dir = await mkdtemp(join(tmpdir(), "sovereign-helm-"));
  try {
    const values = join(dir, "values.json");
    await writeFile(values, JSON.stringify(plain(r.inputs.values)));
    const { stdout } = await execFileAsync(
      join(tb.description.binDir, "helm"),
      [
        "template",
        String(r.inputs.name),
        String(r.inputs.chart ?? chartDir),
        "--namespace",
        String(r.inputs.namespace),
        "--skip-crds",
        "-f",
        values,
      ],
      { maxBuffer: 32 * 1024 * 1024 },
    );
    return parseAllDocuments(stdout)
      .map((d) => d.toJSON() as Target["obj"] | null)
      .filter((o): o is Target["obj"] => !!o?.kind)
      .map((obj) => {
        obj.metadata ??= {};
        if (obj.kind !== "Namespace" && !obj.metadata.namespace && !clusterScoped.has(obj.kind as string)) {
          obj.metadata.namespace = String(r.inputs.namespace);
        }
        return { cluster: clusterOf(r), obj, from: `chart ${r.name}` };
      });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const clusterScoped = new Set([
  "Namespace",
  "ClusterRole",
  "ClusterRoleBinding",
  "CustomResourceDefinition",
  "ValidatingAdmissionPolicy",
  "ValidatingAdmissionPolicyBinding",
  "AttestationPolicy",
  "SovereignNode",
]);

async function targets(): Promise<Target[]> {
  const out: Target[] = [];
  for (const r of recorded) {
    if (r.type === "kubernetes:helm.sh/v3:Release") {
      out.push(...(await helmTemplate(r)));
      continue;
    }
    const m = /^kubernetes:([^:]+):([A-Za-z]+)$/.exec(r.type);
    if (!m) continue; // providers, components
    const [group, version] = (m[1] as string).split("/");
    const apiVersion = group === "core" ? (version as string) : `${group}/${version}`;
    const obj = { ...(plain(r.inputs) as Record<string, unknown>), apiVersion, kind: m[2] } as Target["obj"];
    out.push({ cluster: clusterOf(r), obj, from: r.name });
  }
  return out;
}

const all = await targets();

test.serial(
  "every object of the hub + three regions graph, chart included, is accepted by the real API servers",
  async (t) => {
    t.true(all.filter((x) => x.from.startsWith("chart")).length > 10, "the charts rendered objects");
    t.deepEqual(new Set(all.map((x) => x.cluster)), new Set(["hub", "region-a", "region-b", "region-c"]));
    // Namespaces the objects live in, created for real when missing and removed afterwards.
    const created: { cluster: string; name: string }[] = [];
    const needed = new Map<string, Set<string>>();
    for (const x of all) {
      const ns = x.obj.kind === "Namespace" ? x.obj.metadata?.name : x.obj.metadata?.namespace;
      if (ns) needed.set(x.cluster, (needed.get(x.cluster) ?? new Set()).add(ns));
    }
    t.teardown(async () => {
      for (const c of created) {
        await tb
          .kubeConfig(c.cluster)
          .makeApiClient(CoreV1Api)
          .deleteNamespace({ name: c.name })
          .catch(() => undefined);
      }
    });
    // The test's own (suffixed) namespaces are created and removed afterwards. A shared one such
    // as sovereign-learners (which a member creates at run time) is created when missing but
    // never removed: the demo or another test may be using it.
    for (const [cluster, names] of needed) {
      const core = tb.kubeConfig(cluster).makeApiClient(CoreV1Api);
      for (const name of names) {
        const exists = await core.readNamespace({ name }).then(
          () => true,
          () => false,
        );
        if (exists) continue;
        await core
          .createNamespace({ body: { metadata: { name, labels: { "sovereign.ai/test": "pulumi" } } } })
          .catch((err: { code?: number }) => {
            if (err.code !== 409) throw err;
          });
        if (name.endsWith(suffix)) created.push({ cluster, name });
      }
    }
    const failures: string[] = [];
    for (const x of all) {
      const api = KubernetesObjectApi.makeApiClient(tb.kubeConfig(x.cluster));
      try {
        await api.patch(x.obj, undefined, "All", FIELD_MANAGER, true, PatchStrategy.ServerSideApply);
      } catch (err) {
        const body = (err as { body?: unknown }).body;
        failures.push(
          `${x.cluster} ${x.obj.kind as string} ${x.obj.metadata?.name} (${x.from}): ${typeof body === "string" ? body : String(err)}`,
        );
      }
    }
    t.deepEqual(failures, []);
  },
);

test.serial(
  "the region's token Secret yields a hub kubeconfig limited to its own SovereignNode",
  async (t) => {
    // Renamed from the graph's suffix: the previous test's teardown is deleting those namespaces.
    const suffix2 = `-q${randomBytes(3).toString("hex")}`;
    const region = `region-a${suffix2}`;
    const hubKc = tb.kubeConfig("hub");
    const api = KubernetesObjectApi.makeApiClient(hubKc);
    t.teardown(async () => {
      const rbac = hubKc.makeApiClient(RbacAuthorizationV1Api);
      await rbac.deleteClusterRoleBinding({ name: memberClusterRoleName(region) }).catch(() => undefined);
      await rbac.deleteClusterRole({ name: memberClusterRoleName(region) }).catch(() => undefined);
      await hubKc
        .makeApiClient(CoreV1Api)
        .deleteNamespace({ name: regionNamespace(region) })
        .catch(() => undefined);
    });
    // The component's hub-side objects for this region, in the order Pulumi's dependsOn gives.
    const mine = all
      .filter((x) => x.cluster === "hub" && x.from.startsWith("region-a-hub-"))
      .map((x) => ({
        ...x,
        obj: JSON.parse(JSON.stringify(x.obj).replaceAll(suffix, suffix2)) as Target["obj"],
      }));
    t.is(mine.length, 7, mine.map((x) => x.from).join(", "));
    for (const x of mine)
      await api.patch(x.obj, undefined, undefined, FIELD_MANAGER, true, PatchStrategy.ServerSideApply);
    const core = hubKc.makeApiClient(CoreV1Api);
    let token = "";
    for (let i = 0; i < 100 && !token; i++) {
      const s = await core.readNamespacedSecret({ name: "member-token", namespace: regionNamespace(region) });
      token = s.data?.token ? Buffer.from(s.data.token, "base64").toString("utf8") : "";
      if (!token) await new Promise((r) => setTimeout(r, 200));
    }
    t.truthy(token, "kube-controller-manager's token controller filled the Secret");
    const cluster = tb.cluster("hub");
    const member = new KubeConfig();
    member.loadFromString(
      regionHubKubeconfig({
        region,
        server: cluster.server,
        caData: readFileSync(cluster.caFile).toString("base64"),
        token,
      }),
    );
    const custom = member.makeApiClient(CustomObjectsApi);
    const probe = (name: string) =>
      custom
        .createClusterCustomObject({
          group: "sovereign.ai",
          version: "v1alpha1",
          plural: "sovereignnodes",
          dryRun: "All",
          body: {
            apiVersion: "sovereign.ai/v1alpha1",
            kind: "SovereignNode",
            metadata: { name },
            spec: {
              jurisdiction: "DE",
              accepted: false,
              attestationPolicyRef: { name: "testbed" },
              dataResidency: {
                allowedEgress: ["ModelDeltas"],
                acceptAggregates: false,
                checkpointLocation: "InRegion",
              },
              jetStreamDomain: name,
            },
          },
        })
        .then(
          () => 201,
          (err: { code?: number }) => err.code ?? 0,
        );
    // RBAC and admission caches take a moment to learn new bindings.
    let ownCode = 0;
    let other = 0;
    for (let i = 0; i < 120; i++) {
      ownCode = await probe(region);
      other = await probe(`region-b${suffix2}`);
      if (ownCode === 201 && other === 403) break;
      await new Promise((r) => setTimeout(r, 250));
    }
    t.is(ownCode, 201, "the member may register its own SovereignNode");
    t.is(other, 403, "but not another region's");
    const work = await member
      .makeApiClient(CustomObjectsApi)
      .listNamespacedCustomObject({
        group: "sovereign.ai",
        version: "v1alpha1",
        plural: "regionworks",
        namespace: regionNamespace(region),
      })
      .then(
        () => 200,
        (err: { code?: number }) => err.code ?? 0,
      );
    t.is(work, 200, "and read its RegionWorks");
    const runs = await member
      .makeApiClient(CustomObjectsApi)
      .listClusterCustomObject({ group: "sovereign.ai", version: "v1alpha1", plural: "federatedruns" })
      .then(
        () => 200,
        (err: { code?: number }) => err.code ?? 0,
      );
    t.is(runs, 403, "but no FederatedRuns");
  },
);
