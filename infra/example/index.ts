// Pulumi program: the hub and the three regions of the local testbed (`make testbed-up`).
//
// Stack config (all optional):
//   sovereign:testbed       path of testbed.json (default: <repo>/.testbed/testbed.json)
//   sovereign:suffix        appended to namespaces and region names, so a test's stack
//                           never touches what the demo or another test made
//   sovereign:manageShared  "false": leave the CRDs and the member admission policy to whoever
//                           installed them already (they are cluster-wide and shared)
//   sovereign:chart         "false": skip the operator chart (the testbed runs operators as processes)
import { join } from "node:path";
import * as pulumi from "@pulumi/pulumi";
import { readTestbed, testbedFederation } from "./testbed-stack.ts";

const cfg = new pulumi.Config("sovereign");
const tb = readTestbed(
  cfg.get("testbed") ?? join(import.meta.dirname, "..", "..", ".testbed", "testbed.json"),
);
const fed = testbedFederation(tb, {
  suffix: cfg.get("suffix") ?? "",
  manageShared: cfg.getBoolean("manageShared") ?? true,
  chart: cfg.getBoolean("chart") ?? true,
});

export const hubNamespace = fed.hub.namespace;
export const regions = fed.regions.map((r) => ({
  region: r.region,
  namespace: r.namespace,
  hubNamespace: r.hubNamespace,
}));
// Secret outputs: `pulumi stack output --show-secrets hubKubeconfigs` hands them to a region admin.
export const hubKubeconfigs = pulumi.secret(
  pulumi.all(fed.regions.map((r) => pulumi.all([r.region, r.hubKubeconfig]))).apply(Object.fromEntries),
);
