// Pulumi component resources for a Sovereign federation: one SovereignHub in the hub
// cluster, one SovereignRegion per region's cluster. A platform team composes them in its
// own program (see infra/example/index.ts) with one Kubernetes provider per cluster.
//
// What lands where:
//   hub cluster    namespace, CRDs, the member admission policy, AttestationPolicies,
//                  the chart in hub mode, and per region its scoped access (namespace,
//                  ServiceAccount, Role/ClusterRole and bindings from
//                  operator/hub/region-access.ts) plus a token Secret for it;
//   region cluster namespace, the kubeconfig built around that token (a Secret the chart
//                  mounts), NATS leaf configuration and credentials, and the chart in member
//                  mode carrying the region's registration and attestation policy.
// The hub never gets a credential to a region: the only cross-cluster value is the
// region's own hub kubeconfig, which flows hub → region inside this one Pulumi program and
// is kept secret in its state.
import * as k8s from "@pulumi/kubernetes";
import * as pulumi from "@pulumi/pulumi";
import {
  MEMBER_SERVICE_ACCOUNT,
  memberAdmissionPolicy,
  regionAccessObjects,
  regionNamespace,
} from "../operator/hub/region-access.ts";
import {
  type CrdManifest,
  chartCrds,
  chartDir,
  checkRegionName,
  InfraError,
  type LeafNatsOptions,
  leafNatsConfig,
  mergeValues,
  type NatsUser,
  regionHubKubeconfig,
} from "./manifests.ts";

type Obj = Record<string, unknown>;

export const DEFAULT_NAMESPACE = "sovereign-system";
export const HUB_CREDENTIAL_SECRET = "sovereign-hub-credential";
export const HUB_CREDENTIAL_KEY = "kubeconfig";
export const NATS_AUTH_SECRET = "sovereign-nats";
export const NATS_LEAF_SECRET = "sovereign-nats-leaf";
export const MEMBER_TOKEN_SECRET = "member-token";

export interface ChartOptions {
  /** Install the operator chart (default true). Off: only the surrounding objects are made. */
  enabled?: boolean;
  /** Local chart directory (default charts/sovereign of this repository). */
  path?: string;
  /** Helm release name (default "sovereign"); cluster-scoped RBAC objects are named after it. */
  releaseName?: string;
  /** Extra chart values, merged over what the component sets. */
  values?: Obj;
}

export interface NatsConnection {
  /** This cluster's NATS server as the operator dials it. */
  url: string;
  /** The operator's user there; stored in a Secret the chart references. */
  auth?: NatsUser;
}

export interface SovereignHubArgs {
  /** Provider for the hub cluster. */
  provider: k8s.Provider;
  namespace?: string;
  /** The hub API server address the regions dial (may differ from the admin's). */
  server: pulumi.Input<string>;
  /** Base64 PEM of the CA the regions trust for `server`. */
  caData?: pulumi.Input<string>;
  /**
   * Manage the sovereign.ai CRDs (default true). Set false where another tool owns them:
   * Pulumi would otherwise take them over and delete them (and every custom object) on destroy.
   */
  manageCrds?: boolean;
  /** Manage the cluster-wide member admission policy (default true); same caveat as manageCrds. */
  manageAdmissionPolicy?: boolean;
  /** AttestationPolicy manifests created at the hub (cluster-scoped). */
  attestationPolicies?: Obj[];
  nats?: NatsConnection;
  chart?: ChartOptions;
}

function childOpts(
  parent: pulumi.Resource,
  provider: k8s.Provider,
  dependsOn: pulumi.Input<pulumi.Resource>[] = [],
) {
  return { parent, provider, dependsOn };
}

/** A typed @pulumi/kubernetes resource for one of region-access.ts's plain objects. */
function resourceFor(name: string, obj: Obj, opts: pulumi.CustomResourceOptions): pulumi.CustomResource {
  const kind = obj.kind as string;
  // biome-ignore lint/suspicious/noExplicitAny: the plain objects match these resources' args shape
  const args = { ...obj } as any;
  switch (`${obj.apiVersion as string}/${kind}`) {
    case "v1/Namespace":
      return new k8s.core.v1.Namespace(name, args, opts);
    case "v1/ServiceAccount":
      return new k8s.core.v1.ServiceAccount(name, args, opts);
    case "rbac.authorization.k8s.io/v1/Role":
      return new k8s.rbac.v1.Role(name, args, opts);
    case "rbac.authorization.k8s.io/v1/RoleBinding":
      return new k8s.rbac.v1.RoleBinding(name, args, opts);
    case "rbac.authorization.k8s.io/v1/ClusterRole":
      return new k8s.rbac.v1.ClusterRole(name, args, opts);
    case "rbac.authorization.k8s.io/v1/ClusterRoleBinding":
      return new k8s.rbac.v1.ClusterRoleBinding(name, args, opts);
    case "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy":
      return new k8s.admissionregistration.v1.ValidatingAdmissionPolicy(name, args, opts);
    case "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicyBinding":
      return new k8s.admissionregistration.v1.ValidatingAdmissionPolicyBinding(name, args, opts);
    default:
      // A new kind in region-access.ts must be mapped here, not silently skipped.
      throw new InfraError(
        "UnmappedKind",
        `no Pulumi resource for ${obj.apiVersion as string} ${kind} (${name})`,
      );
  }
}

function crdResource(prefix: string, crd: CrdManifest, opts: pulumi.CustomResourceOptions) {
  return new k8s.apiextensions.v1.CustomResourceDefinition(
    `${prefix}-crd-${crd.metadata.name}`,
    // biome-ignore lint/suspicious/noExplicitAny: the generated manifest is a valid CRD spec
    { metadata: crd.metadata, spec: crd.spec as any },
    opts,
  );
}

function chartRelease(
  name: string,
  chart: ChartOptions | undefined,
  namespace: pulumi.Input<string>,
  values: pulumi.Input<Obj>,
  opts: pulumi.CustomResourceOptions,
): k8s.helm.v3.Release | undefined {
  if (chart?.enabled === false) return undefined;
  return new k8s.helm.v3.Release(
    name,
    {
      name: chart?.releaseName ?? "sovereign",
      chart: chart?.path ?? chartDir,
      namespace,
      // The components own the CRDs (see chartCrds): Helm must not install a second copy.
      skipCrds: true,
      values: pulumi.output(values).apply((v) => mergeValues(v, chart?.values)),
    },
    opts,
  );
}

function natsAuthSecret(
  name: string,
  namespace: pulumi.Input<string>,
  auth: NatsUser,
  opts: pulumi.CustomResourceOptions,
): k8s.core.v1.Secret {
  return new k8s.core.v1.Secret(
    name,
    {
      metadata: { name: NATS_AUTH_SECRET, namespace },
      stringData: { user: auth.user, password: pulumi.secret(auth.password) },
    },
    opts,
  );
}

export class SovereignHub extends pulumi.ComponentResource {
  readonly provider: k8s.Provider;
  readonly namespace: pulumi.Output<string>;
  readonly server: pulumi.Output<string>;
  readonly caData: pulumi.Output<string | undefined>;
  /** What a region's hub-side objects must wait for (CRDs, admission policy). */
  readonly regionPrerequisites: pulumi.Resource[];
  readonly crds: k8s.apiextensions.v1.CustomResourceDefinition[];
  readonly release: k8s.helm.v3.Release | undefined;

  constructor(name: string, args: SovereignHubArgs, opts?: pulumi.ComponentResourceOptions) {
    super("sovereign:index:SovereignHub", name, {}, opts);
    this.provider = args.provider;
    const nsName = args.namespace ?? DEFAULT_NAMESPACE;
    const ns = new k8s.core.v1.Namespace(
      `${name}-ns`,
      { metadata: { name: nsName } },
      childOpts(this, args.provider),
    );
    this.namespace = ns.metadata.name;
    this.server = pulumi.output(args.server);
    this.caData = pulumi.output(args.caData);

    this.crds =
      args.manageCrds === false
        ? []
        : chartCrds().map((c) => crdResource(name, c, childOpts(this, args.provider)));
    const admission: pulumi.CustomResource[] = [];
    if (args.manageAdmissionPolicy !== false) {
      for (const obj of memberAdmissionPolicy()) {
        // The binding names the policy, so each object waits for the ones before it.
        admission.push(
          resourceFor(
            `${name}-${(obj.kind as string).toLowerCase()}`,
            obj,
            childOpts(this, args.provider, [...admission]),
          ),
        );
      }
    }
    this.regionPrerequisites = [...this.crds, ...admission];

    for (const [i, policy] of (args.attestationPolicies ?? []).entries()) {
      const metadata = policy.metadata as { name?: string } | undefined;
      if (!metadata?.name) {
        throw new InfraError("InvalidAttestationPolicy", `attestationPolicies[${i}] has no metadata.name`);
      }
      new k8s.apiextensions.CustomResource(
        `${name}-attestationpolicy-${metadata.name}`,
        { ...policy, apiVersion: "sovereign.ai/v1alpha1", kind: "AttestationPolicy" },
        childOpts(this, args.provider, this.crds),
      );
    }

    const auth = args.nats?.auth
      ? natsAuthSecret(
          `${name}-nats-auth`,
          this.namespace,
          args.nats.auth,
          childOpts(this, args.provider, [ns]),
        )
      : undefined;
    const values: Obj = {
      mode: "hub",
      nats: {
        url: args.nats?.url ?? "",
        auth: { existingSecret: auth ? NATS_AUTH_SECRET : "" },
      },
    };
    this.release = chartRelease(
      `${name}-chart`,
      args.chart,
      this.namespace,
      values,
      childOpts(this, args.provider, [ns, ...this.crds, ...(auth ? [auth] : [])]),
    );
    this.registerOutputs({ namespace: this.namespace, server: this.server });
  }
}

/** A region's registration: a SovereignNode spec without `accepted` (accepting is the hub admin's act). */
export interface RegionRegistration {
  jurisdiction: string;
  attestationPolicyRef: { name: string };
  dataResidency: Obj;
  jetStreamDomain?: string;
  [field: string]: unknown;
}

export interface RegionNatsArgs extends Omit<LeafNatsOptions, "region" | "member"> {
  /** The region's NATS server as the member operator dials it. */
  url: string;
  /** The member operator's user on the region's server. */
  member: NatsUser;
}

export interface SovereignRegionArgs {
  region: string;
  hub: SovereignHub;
  /** Provider for the region's own cluster. */
  provider: k8s.Provider;
  namespace?: string;
  registration: RegionRegistration;
  registrationLabels?: Record<string, string>;
  /** The AttestationPolicy the region's gate verifies against (member.attestation.policy). */
  attestationPolicy?: Obj;
  nats?: RegionNatsArgs;
  chart?: ChartOptions;
}

function checkRegistration(region: string, reg: RegionRegistration, policy: Obj | undefined): void {
  if ("accepted" in reg) {
    throw new InfraError(
      "RegistrationSetsAccepted",
      `${region}'s registration sets spec.accepted; only a hub administrator accepts a region, and the hub's admission policy refuses it from a member`,
    );
  }
  const policyName = (policy?.metadata as { name?: string } | undefined)?.name;
  if (policy && policyName !== reg.attestationPolicyRef?.name) {
    throw new InfraError(
      "AttestationPolicyMismatch",
      `${region}'s attestation policy is named ${JSON.stringify(policyName)} but its registration names ${JSON.stringify(reg.attestationPolicyRef?.name)}; the chart requires them to match`,
    );
  }
}

export class SovereignRegion extends pulumi.ComponentResource {
  readonly region: string;
  readonly namespace: pulumi.Output<string>;
  /** The hub namespace the region's work lives in. */
  readonly hubNamespace: string;
  /** The region's scoped hub kubeconfig (secret). */
  readonly hubKubeconfig: pulumi.Output<string>;
  readonly release: k8s.helm.v3.Release | undefined;

  constructor(name: string, args: SovereignRegionArgs, opts?: pulumi.ComponentResourceOptions) {
    super("sovereign:index:SovereignRegion", name, {}, opts);
    const { region, hub } = args;
    checkRegionName(region);
    checkRegistration(region, args.registration, args.attestationPolicy);
    this.region = region;
    this.hubNamespace = regionNamespace(region);

    // Hub side: the region's scoped access, exactly the objects the operator's
    // `region-credential` command applies, as Pulumi resources so destroy revokes them.
    const access: pulumi.CustomResource[] = [];
    for (const obj of regionAccessObjects(region)) {
      const kind = (obj.kind as string).toLowerCase();
      // Namespace first; everything else waits for it (namespaced objects) or is independent.
      access.push(
        resourceFor(
          `${name}-hub-${kind}`,
          obj,
          childOpts(this, hub.provider, [...hub.regionPrerequisites, ...access.slice(0, 1)]),
        ),
      );
    }
    const serviceAccount = access[1] as k8s.core.v1.ServiceAccount;
    // A long-lived token Secret rather than a TokenRequest: Pulumi applies desired state, and a
    // token that silently expires between two `pulumi up`s would cut the region off. Deleting
    // the Secret (or the region) revokes it at once; re-create it to rotate.
    const token = new k8s.core.v1.Secret(
      `${name}-hub-token`,
      {
        metadata: {
          name: MEMBER_TOKEN_SECRET,
          namespace: this.hubNamespace,
          annotations: { "kubernetes.io/service-account.name": MEMBER_SERVICE_ACCOUNT },
        },
        type: "kubernetes.io/service-account-token",
      },
      // The provider waits until the token controller has filled data.token.
      { ...childOpts(this, hub.provider, [serviceAccount]), additionalSecretOutputs: ["data"] },
    );
    this.hubKubeconfig = pulumi.secret(
      pulumi.all([hub.server, hub.caData, token.data]).apply(([server, caData, data]) =>
        regionHubKubeconfig({
          region,
          server,
          caData,
          token: data?.token ? Buffer.from(data.token, "base64").toString("utf8") : "",
        }),
      ),
    );

    // Region side.
    const ns = new k8s.core.v1.Namespace(
      `${name}-ns`,
      { metadata: { name: args.namespace ?? DEFAULT_NAMESPACE } },
      childOpts(this, args.provider),
    );
    this.namespace = ns.metadata.name;
    const credential = new k8s.core.v1.Secret(
      `${name}-hub-credential`,
      {
        metadata: { name: HUB_CREDENTIAL_SECRET, namespace: this.namespace },
        stringData: { [HUB_CREDENTIAL_KEY]: this.hubKubeconfig },
      },
      childOpts(this, args.provider, [ns]),
    );
    const natsObjects: pulumi.Resource[] = [];
    if (args.nats) {
      natsObjects.push(
        natsAuthSecret(
          `${name}-nats-auth`,
          this.namespace,
          args.nats.member,
          childOpts(this, args.provider, [ns]),
        ),
        new k8s.core.v1.Secret(
          `${name}-nats-leaf`,
          {
            metadata: { name: NATS_LEAF_SECRET, namespace: this.namespace },
            // Secret, not ConfigMap: the leaf remote carries the region's hub NATS password.
            stringData: {
              "nats.conf": pulumi.secret(
                leafNatsConfig({
                  region,
                  hubLeafUrl: args.nats.hubLeafUrl,
                  account: args.nats.account,
                  leafUser: args.nats.leafUser,
                  member: args.nats.member,
                  ...(args.nats.clientPort ? { clientPort: args.nats.clientPort } : {}),
                  ...(args.nats.storeDir ? { storeDir: args.nats.storeDir } : {}),
                }),
              ),
            },
          },
          childOpts(this, args.provider, [ns]),
        ),
      );
    }

    const values: Obj = {
      mode: "member",
      member: {
        region,
        hubKubeconfigSecret: { name: HUB_CREDENTIAL_SECRET, key: HUB_CREDENTIAL_KEY },
        registration: { jetStreamDomain: region, ...args.registration },
        registrationLabels: args.registrationLabels ?? {},
        attestation: { policy: args.attestationPolicy ?? {} },
      },
      nats: {
        url: args.nats?.url ?? "",
        auth: { existingSecret: args.nats ? NATS_AUTH_SECRET : "" },
      },
    };
    this.release = chartRelease(
      `${name}-chart`,
      args.chart,
      this.namespace,
      values,
      childOpts(this, args.provider, [ns, credential, ...natsObjects]),
    );
    this.registerOutputs({ namespace: this.namespace, hubNamespace: this.hubNamespace });
  }
}
