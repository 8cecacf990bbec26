// The Pulumi components' resource graph, under Pulumi's own runtime mocks: no engine, no
// provider, no cluster. What is checked is what the components ask Pulumi to create —
// which objects, with which inputs, in which cluster (provider), after what (dependsOn) —
// and that bad arguments are refused with a reason. The real thing runs in
// test/infra/pulumi-up.test.ts.
import * as k8s from "@pulumi/kubernetes";
import * as pulumi from "@pulumi/pulumi";
import test from "ava";
import { parse } from "yaml";
import { chartCrds, InfraError } from "../../infra/manifests.ts";
import {
  HUB_CREDENTIAL_SECRET,
  NATS_LEAF_SECRET,
  SovereignHub,
  SovereignRegion,
  type SovereignRegionArgs,
} from "../../infra/sovereign.ts";
import { memberAdmissionPolicy, regionAccessObjects } from "../../operator/hub/region-access.ts";

// biome-ignore lint/suspicious/noExplicitAny: chart values are free-form; the assertions check their shape
type ChartValues = Record<string, any>;

interface Recorded {
  type: string;
  name: string;
  inputs: Record<string, unknown>;
  provider: string | undefined;
}

const recorded: Recorded[] = [];
const FAKE_TOKEN = "fake-token-from-mock";

await pulumi.runtime.setMocks(
  {
    newResource(args) {
      recorded.push({ type: args.type, name: args.name, inputs: args.inputs, provider: args.provider });
      const state: Record<string, unknown> = { ...args.inputs };
      // What the real provider returns once the token controller filled the Secret.
      if (
        args.type === "kubernetes:core/v1:Secret" &&
        args.inputs.type === "kubernetes.io/service-account-token"
      ) {
        state.data = { token: Buffer.from(FAKE_TOKEN).toString("base64") };
      }
      return { id: `${args.name}-id`, state };
    },
    call(args) {
      return args.inputs;
    },
  },
  "sovereign-test",
  "unit",
  false,
);

// Pulumi hands secret inputs to the mocks wrapped as {<secret signature>: …, value}.
const SECRET_SIG = "4dabf18193072939515e22adb298388d";
const isSecretValue = (v: unknown): v is { value: unknown } =>
  typeof v === "object" && v !== null && SECRET_SIG in v;
function plain(v: unknown): unknown {
  if (isSecretValue(v)) return plain(v.value);
  if (Array.isArray(v)) return v.map(plain);
  if (typeof v === "object" && v !== null) {
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plain(x)]));
  }
  return v;
}
const resolve = <T>(o: pulumi.Output<T>) => new Promise<T>((r) => o.apply(r));
const byName = (name: string) => {
  const r = recorded.find((x) => x.name === name);
  if (!r) throw new Error(`no resource named ${name}; have ${recorded.map((x) => x.name).join(", ")}`);
  return r;
};

const policy = (name: string) => ({
  apiVersion: "sovereign.ai/v1alpha1",
  kind: "AttestationPolicy",
  metadata: { name },
  spec: { verification: { mode: "Local" } },
});
const regionArgs = (region: string, hub: SovereignHub, provider: k8s.Provider): SovereignRegionArgs => ({
  region,
  hub,
  provider,
  registration: {
    jurisdiction: "DE",
    attestationPolicyRef: { name: "strict" },
    dataResidency: { allowedEgress: ["ModelDeltas"], acceptAggregates: true, checkpointLocation: "InRegion" },
  },
  registrationLabels: { "sovereign.ai/consortium": "unit" },
  attestationPolicy: policy("strict"),
  nats: {
    url: "nats://nats.sovereign-system:4222",
    hubLeafUrl: "nats-leaf://hub.example:7422",
    account: "SOVEREIGN",
    leafUser: { user: `leaf-${region}`, password: "leaf-secret" },
    member: { user: "member", password: "member-secret" },
  },
});

const hubProvider = new k8s.Provider("hub", { kubeconfig: "hub" });
const regionProviders = ["region-a", "region-b", "region-c"].map(
  (r) => new k8s.Provider(r, { kubeconfig: r }),
);
const hub = new SovereignHub("hub", {
  provider: hubProvider,
  server: "https://hub.example:6443",
  caData: "Q0EtREFUQQ==",
  attestationPolicies: [policy("strict")],
  nats: { url: "nats://nats.sovereign-system:4222", auth: { user: "hub", password: "hub-secret" } },
});
const regions = ["region-a", "region-b", "region-c"].map(
  (r, i) => new SovereignRegion(r, regionArgs(r, hub, regionProviders[i] as k8s.Provider)),
);
const kubeconfigs = await Promise.all(regions.map((r) => resolve(r.hubKubeconfig)));
// Every registration (and its provider wiring) has reached the mock monitor.
await pulumi.runtime.disconnect();

const providerUrn = (name: string) => {
  const p = recorded.find((r) => r.type === "pulumi:providers:kubernetes" && r.name === name);
  if (!p) throw new Error(`no provider ${name}`);
  return p;
};

test("the hub installs the chart's CRDs, the member admission policy and its AttestationPolicies, in the hub cluster", (t) => {
  providerUrn("hub");
  for (const crd of chartCrds()) {
    const r = byName(`hub-crd-${crd.metadata.name}`);
    t.is(r.type, "kubernetes:apiextensions.k8s.io/v1:CustomResourceDefinition");
    t.deepEqual((r.inputs.spec as { group: string }).group, "sovereign.ai");
    t.regex(r.provider ?? "", /::hub::/);
  }
  const [vap, binding] = memberAdmissionPolicy();
  t.deepEqual(byName("hub-validatingadmissionpolicy").inputs.spec, (vap as { spec: unknown }).spec);
  t.deepEqual(
    byName("hub-validatingadmissionpolicybinding").inputs.spec,
    (binding as { spec: unknown }).spec,
  );
  const ap = byName("hub-attestationpolicy-strict");
  t.is(ap.type, "kubernetes:sovereign.ai/v1alpha1:AttestationPolicy");
  t.regex(ap.provider ?? "", /::hub::/);
});

test("the hub chart runs in hub mode without Helm's copy of the CRDs, with the NATS auth Secret", (t) => {
  const rel = byName("hub-chart");
  t.is(rel.type, "kubernetes:helm.sh/v3:Release");
  t.is(rel.inputs.skipCrds, true);
  t.is(rel.inputs.namespace, "sovereign-system");
  const values = rel.inputs.values as ChartValues;
  t.is(values.mode, "hub");
  t.deepEqual(values.nats, {
    url: "nats://nats.sovereign-system:4222",
    auth: { existingSecret: "sovereign-nats" },
  });
  const auth = byName("hub-nats-auth").inputs.stringData as Record<string, unknown>;
  t.deepEqual(plain(auth), { user: "hub", password: "hub-secret" });
  t.true(
    isSecretValue(auth.password) || isSecretValue(auth),
    "the NATS password is kept secret in the state",
  );
});

test("each region's scoped access is created at the hub, matching operator/hub/region-access.ts", (t) => {
  for (const region of ["region-a", "region-b", "region-c"]) {
    for (const obj of regionAccessObjects(region)) {
      const r = byName(`${region}-hub-${(obj.kind as string).toLowerCase()}`);
      t.regex(r.provider ?? "", /::hub::/, `${region} ${obj.kind as string} goes to the hub`);
      t.deepEqual(r.inputs.metadata, obj.metadata);
      if ("rules" in obj) t.deepEqual(r.inputs.rules, obj.rules);
      if ("subjects" in obj) t.deepEqual(r.inputs.subjects, obj.subjects);
    }
    const token = byName(`${region}-hub-token`);
    t.is(token.inputs.type, "kubernetes.io/service-account-token");
    t.deepEqual(token.inputs.metadata, {
      name: "member-token",
      namespace: `sovereign-region-${region}`,
      annotations: { "kubernetes.io/service-account.name": "member" },
    });
  }
});

test("the region's hub kubeconfig carries the hub's address and CA, the issued token and the region's namespace", (t) => {
  for (const [i, region] of ["region-a", "region-b", "region-c"].entries()) {
    const kc = parse(kubeconfigs[i] as string);
    t.is(kc.clusters[0].cluster.server, "https://hub.example:6443");
    t.is(kc.clusters[0].cluster["certificate-authority-data"], "Q0EtREFUQQ==");
    t.is(kc.users[0].user.token, FAKE_TOKEN);
    t.is(kc.contexts[0].context.namespace, `sovereign-region-${region}`);
    const secret = byName(`${region}-hub-credential`);
    t.is((secret.inputs.metadata as { name: string }).name, HUB_CREDENTIAL_SECRET);
    t.is((plain(secret.inputs.stringData) as { kubeconfig: string }).kubeconfig, kubeconfigs[i] as string);
    t.regex(
      secret.provider ?? "",
      new RegExp(`::${region}::`),
      "the credential lives in the region, not at the hub",
    );
  }
});

test("the region's hub kubeconfig is a secret output", async (t) => {
  t.true(await pulumi.isSecret(regions[0]?.hubKubeconfig as pulumi.Output<string>));
});

test("the region's chart runs in member mode with its registration, attestation policy and NATS settings", (t) => {
  const rel = byName("region-b-chart");
  t.regex(rel.provider ?? "", /::region-b::/);
  const values = rel.inputs.values as ChartValues;
  t.is(values.mode, "member");
  t.is(values.member.region, "region-b");
  t.deepEqual(values.member.hubKubeconfigSecret, { name: HUB_CREDENTIAL_SECRET, key: "kubeconfig" });
  t.is(values.member.registration.jetStreamDomain, "region-b");
  t.is(values.member.registration.jurisdiction, "DE");
  t.false("accepted" in values.member.registration);
  t.deepEqual(values.member.registrationLabels, { "sovereign.ai/consortium": "unit" });
  t.is(values.member.attestation.policy.metadata.name, values.member.registration.attestationPolicyRef.name);
  t.is(values.nats.auth.existingSecret, "sovereign-nats");
});

test("the region's NATS leaf configuration links its own JetStream domain to the hub", (t) => {
  const leaf = byName("region-c-nats-leaf");
  t.is((leaf.inputs.metadata as { name: string }).name, NATS_LEAF_SECRET);
  const data = leaf.inputs.stringData as Record<string, unknown>;
  t.true(isSecretValue(data["nats.conf"]) || isSecretValue(data), "the leaf password is kept secret");
  const conf = (plain(data) as Record<string, string>)["nats.conf"] as string;
  t.regex(conf, /domain: "region-c"/);
  t.regex(conf, /nats-leaf:\/\/leaf-region-c:leaf-secret@hub\.example:7422/);
  t.regex(conf, /account: "SOVEREIGN"/);
});

test("a region's registration may not accept itself", (t) => {
  const args = regionArgs("region-x", hub, regionProviders[0] as k8s.Provider);
  const err = t.throws(
    () =>
      new SovereignRegion("bad-accepted", {
        ...args,
        registration: { ...args.registration, accepted: true },
      }),
    { instanceOf: InfraError },
  );
  t.is(err?.reason, "RegistrationSetsAccepted");
});

test("a region's attestation policy must be the one its registration names", (t) => {
  const args = regionArgs("region-y", hub, regionProviders[0] as k8s.Provider);
  const err = t.throws(
    () => new SovereignRegion("bad-policy", { ...args, attestationPolicy: policy("other") }),
    {
      instanceOf: InfraError,
    },
  );
  t.is(err?.reason, "AttestationPolicyMismatch");
});

test("a region name that cannot be a namespace is refused", (t) => {
  const args = regionArgs("Region_A", hub, regionProviders[0] as k8s.Provider);
  const err = t.throws(() => new SovereignRegion("bad-name", args), { instanceOf: InfraError });
  t.is(err?.reason, "InvalidRegionName");
});
