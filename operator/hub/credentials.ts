// Issuing a region its scoped hub credential: apply the region's access objects, ask the
// API server for a bound ServiceAccount token (TokenRequest), and write the kubeconfig the
// region's member operator uses. The hub keeps no copy; a hub admin hands the file to
// the region out of band (or the region's Pulumi stack fetches it).
import { readFileSync } from "node:fs";
import {
  CoreV1Api,
  CustomObjectsApi,
  KubeConfig,
  type KubernetesObject,
  KubernetesObjectApi,
  PatchStrategy,
  RbacAuthorizationV1Api,
} from "@kubernetes/client-node";
import { stringify } from "yaml";
import { HUB_FIELD_MANAGER, SOVEREIGN_API } from "../names.ts";
import {
  MEMBER_SERVICE_ACCOUNT,
  memberAdmissionPolicy,
  memberClusterRoleName,
  regionAccessObjects,
  regionNamespace,
} from "./region-access.ts";

export const FIELD_MANAGER = HUB_FIELD_MANAGER;

export async function serverSideApply(kc: KubeConfig, objects: Record<string, unknown>[]): Promise<void> {
  const client = KubernetesObjectApi.makeApiClient(kc);
  for (const obj of objects) {
    await client.patch(
      obj as KubernetesObject,
      undefined,
      undefined,
      FIELD_MANAGER,
      true,
      PatchStrategy.ServerSideApply,
    );
  }
}

/** Installs what every region's access relies on; idempotent. */
export async function ensureHubAccessPolicy(kc: KubeConfig): Promise<void> {
  await serverSideApply(kc, memberAdmissionPolicy());
}

export async function ensureRegionAccess(kc: KubeConfig, region: string): Promise<void> {
  await ensureHubAccessPolicy(kc);
  await serverSideApply(kc, regionAccessObjects(region));
}

/**
 * Withdraws a region's access: its cluster-wide grants at once, and its namespace, which
 * takes the ServiceAccount (so every token issued to it stops working), its Role and its
 * RegionWorks with it. The region's SovereignNode stays as the record of its registration.
 */
export async function revokeRegionAccess(kc: KubeConfig, region: string): Promise<void> {
  const rbac = kc.makeApiClient(RbacAuthorizationV1Api);
  const ignoreMissing = (err: { code?: number }) => {
    if (err.code !== 404) throw err;
  };
  await rbac.deleteClusterRoleBinding({ name: memberClusterRoleName(region) }).catch(ignoreMissing);
  await rbac.deleteClusterRole({ name: memberClusterRoleName(region) }).catch(ignoreMissing);
  await kc
    .makeApiClient(CoreV1Api)
    .deleteNamespace({ name: regionNamespace(region) })
    .catch(ignoreMissing);
}

export interface RegionCredential {
  region: string;
  token: string;
  expiresAt: string;
  kubeconfig: string;
}

/**
 * A time-bound token for the region's member ServiceAccount and a kubeconfig around it.
 * `hubServer`/`hubCaData` are what the region will dial, which may differ from the
 * address the admin uses (e.g. a public endpoint in front of the hub).
 */
export async function issueRegionCredential(
  kc: KubeConfig,
  region: string,
  opts: { ttlSeconds?: number; hubServer?: string; hubCaData?: string; enforcementTimeoutMs?: number } = {},
): Promise<RegionCredential> {
  await ensureRegionAccess(kc, region);
  const core = kc.makeApiClient(CoreV1Api);
  const res = await core.createNamespacedServiceAccountToken({
    name: MEMBER_SERVICE_ACCOUNT,
    namespace: regionNamespace(region),
    body: { spec: { audiences: [], expirationSeconds: opts.ttlSeconds ?? 7 * 24 * 3600 } },
  });
  const token = res.status?.token;
  if (!token)
    throw new Error(`TokenRequestFailed: the hub API server returned no token for ${region}'s member`);
  const cluster = kc.getCurrentCluster();
  const server = opts.hubServer ?? cluster?.server;
  if (!server) throw new Error("the hub kubeconfig has no server address; pass hubServer");
  const caData =
    opts.hubCaData ??
    cluster?.caData ??
    (cluster?.caFile ? readFileSync(cluster.caFile).toString("base64") : undefined);
  const user = `sovereign-member-${region}`;
  const kubeconfig = stringify({
    apiVersion: "v1",
    kind: "Config",
    clusters: [
      {
        name: "sovereign-hub",
        cluster: { server, ...(caData ? { "certificate-authority-data": caData } : {}) },
      },
    ],
    users: [{ name: user, user: { token } }],
    contexts: [
      {
        name: "sovereign-hub",
        context: { cluster: "sovereign-hub", user, namespace: regionNamespace(region) },
      },
    ],
    "current-context": "sovereign-hub",
  });
  const member = new KubeConfig();
  member.loadFromString(kubeconfig);
  await waitUntilEnforced(member, region, opts.enforcementTimeoutMs ?? 30_000);
  return { region, token, expiresAt: String(res.status?.expirationTimestamp ?? ""), kubeconfig };
}

/**
 * RBAC bindings and admission policies take effect a moment after they are written (the
 * API server learns them through its own caches). A credential is handed out only once
 * both hold: registering its own SovereignNode is allowed, squatting another name is
 * refused. Probed with dry-run creates, so nothing is stored.
 */
async function waitUntilEnforced(member: KubeConfig, region: string, timeoutMs: number): Promise<void> {
  const api = member.makeApiClient(CustomObjectsApi);
  const probe = async (name: string) => {
    try {
      await api.createClusterCustomObject({
        ...SOVEREIGN_API,
        plural: "sovereignnodes",
        dryRun: "All",
        body: {
          apiVersion: "sovereign.ai/v1alpha1",
          kind: "SovereignNode",
          metadata: { name },
          spec: {
            jurisdiction: "ZZ",
            accepted: false,
            attestationPolicyRef: { name: "probe" },
            dataResidency: {
              allowedEgress: ["ModelDeltas"],
              acceptAggregates: false,
              checkpointLocation: "InRegion",
            },
            jetStreamDomain: name,
          },
        },
      });
      return 201;
    } catch (err) {
      const code = (err as { code?: number }).code ?? 0;
      if (code === 404) {
        throw new Error(
          "CrdsNotInstalled: the hub has no SovereignNode resource; install the CRDs (crds/generated) first",
        );
      }
      return code;
    }
  };
  const deadline = Date.now() + timeoutMs;
  let last = "";
  while (Date.now() < deadline) {
    // 409: our own SovereignNode already exists, which also proves create is allowed.
    const own = await probe(region);
    const squat = await probe(`${region}-enforcement-probe`);
    if ((own === 201 || own === 409) && squat === 403) return;
    last = `own name → ${own}, another name → ${squat}`;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(
    `AccessNotEnforced: the region's limits did not take effect within ${timeoutMs / 1000}s (${last}); is the ValidatingAdmissionPolicy API enabled on the hub?`,
  );
}
