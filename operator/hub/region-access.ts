// What a region may do at the hub, as Kubernetes objects. The hub never holds a
// credential to a region; instead each region's member operator gets a hub credential
// that RBAC and an admission policy limit to that region's own objects:
//
// - namespace `sovereign-region-<region>`: the region's work lives here (RegionWork
//   objects, the OCM ManifestWork pattern), and its ServiceAccount `member` may read them
//   and report on them through their status (Role);
// - its own SovereignNode, by name: read, watch, update and report status (ClusterRole
//   with resourceNames); creating one needs a cluster-wide `create`, which RBAC cannot
//   narrow by name, so the ValidatingAdmissionPolicy below makes sure a member creates
//   and updates only the SovereignNode named after its own namespace and never sets
//   spec.accepted: accepting a region stays a hub administrator's act.
//
// Nothing grants a member FederatedRuns, other namespaces or other SovereignNodes.

import { SOVEREIGN_API } from "../names.ts";

export const REGION_NAMESPACE_PREFIX = "sovereign-region-";
export const MEMBER_SERVICE_ACCOUNT = "member";
const { group: GROUP } = SOVEREIGN_API;

export function regionNamespace(region: string): string {
  return `${REGION_NAMESPACE_PREFIX}${region}`;
}

export function memberUsername(region: string): string {
  return `system:serviceaccount:${regionNamespace(region)}:${MEMBER_SERVICE_ACCOUNT}`;
}

export function memberClusterRoleName(region: string): string {
  return `sovereign:member:${region}`;
}

const labels = (region: string) => ({
  "app.kubernetes.io/managed-by": "sovereign-operator",
  "sovereign.ai/region": region,
});

/** The per-region objects, in apply order. */
export function regionAccessObjects(region: string): Record<string, unknown>[] {
  const ns = regionNamespace(region);
  const clusterRole = memberClusterRoleName(region);
  return [
    { apiVersion: "v1", kind: "Namespace", metadata: { name: ns, labels: labels(region) } },
    {
      apiVersion: "v1",
      kind: "ServiceAccount",
      metadata: { name: MEMBER_SERVICE_ACCOUNT, namespace: ns, labels: labels(region) },
    },
    {
      apiVersion: "rbac.authorization.k8s.io/v1",
      kind: "Role",
      metadata: { name: "sovereign-member", namespace: ns, labels: labels(region) },
      rules: [
        // The region's work items (RegionWork, written by the hub; the member reports on
        // them through their status) and the Events it records about them.
        { apiGroups: [GROUP], resources: ["regionworks"], verbs: ["get", "list", "watch"] },
        { apiGroups: [GROUP], resources: ["regionworks/status"], verbs: ["get", "update", "patch"] },
        { apiGroups: [""], resources: ["events"], verbs: ["create", "patch"] },
        { apiGroups: ["coordination.k8s.io"], resources: ["leases"], verbs: ["get", "create", "update"] },
      ],
    },
    {
      apiVersion: "rbac.authorization.k8s.io/v1",
      kind: "RoleBinding",
      metadata: { name: "sovereign-member", namespace: ns, labels: labels(region) },
      roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: "sovereign-member" },
      subjects: [{ kind: "ServiceAccount", name: MEMBER_SERVICE_ACCOUNT, namespace: ns }],
    },
    {
      apiVersion: "rbac.authorization.k8s.io/v1",
      kind: "ClusterRole",
      metadata: { name: clusterRole, labels: labels(region) },
      rules: [
        {
          apiGroups: [GROUP],
          resources: ["sovereignnodes", "sovereignnodes/status"],
          resourceNames: [region],
          verbs: ["get", "list", "watch", "update", "patch"],
        },
        // Registration: checked by the admission policy, since RBAC cannot name what is created.
        { apiGroups: [GROUP], resources: ["sovereignnodes"], verbs: ["create"] },
      ],
    },
    {
      apiVersion: "rbac.authorization.k8s.io/v1",
      kind: "ClusterRoleBinding",
      metadata: { name: clusterRole, labels: labels(region) },
      roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole", name: clusterRole },
      subjects: [{ kind: "ServiceAccount", name: MEMBER_SERVICE_ACCOUNT, namespace: ns }],
    },
  ];
}

/** Installed once per hub: what members may write into SovereignNodes. */
export function memberAdmissionPolicy(): Record<string, unknown>[] {
  const name = "sovereign-member-registration";
  return [
    {
      apiVersion: "admissionregistration.k8s.io/v1",
      kind: "ValidatingAdmissionPolicy",
      metadata: { name },
      spec: {
        failurePolicy: "Fail",
        matchConstraints: {
          resourceRules: [
            {
              apiGroups: [GROUP],
              apiVersions: ["*"],
              operations: ["CREATE", "UPDATE"],
              resources: ["sovereignnodes", "sovereignnodes/status"],
            },
          ],
        },
        matchConditions: [
          {
            name: "only-region-members",
            expression: `request.userInfo.username.startsWith("system:serviceaccount:${REGION_NAMESPACE_PREFIX}")`,
          },
        ],
        validations: [
          {
            expression: `request.userInfo.username == "system:serviceaccount:${REGION_NAMESPACE_PREFIX}" + object.metadata.name + ":${MEMBER_SERVICE_ACCOUNT}"`,
            messageExpression: `"a region's member may only register or update its own SovereignNode; " + request.userInfo.username + " tried " + object.metadata.name`,
            reason: "Forbidden",
          },
          {
            expression:
              'request.operation == "CREATE" ? !object.spec.accepted : object.spec.accepted == oldObject.spec.accepted',
            message:
              "only a hub administrator may accept a region (spec.accepted); a member registers with accepted: false",
            reason: "Forbidden",
          },
        ],
      },
    },
    {
      apiVersion: "admissionregistration.k8s.io/v1",
      kind: "ValidatingAdmissionPolicyBinding",
      metadata: { name },
      spec: { policyName: name, validationActions: ["Deny"] },
    },
  ];
}
