// The testbed federation as a function, so the example program (index.ts) and the tests
// build exactly the same resource graph.
import { readFileSync } from "node:fs";
import * as k8s from "@pulumi/kubernetes";
import { testbedAttestationPolicy } from "../../attestation/testbed/mod.ts";
import { InfraError } from "../manifests.ts";
import { SovereignHub, SovereignRegion } from "../sovereign.ts";

interface Credentials {
  user: string;
  password: string;
}

/** The part of .testbed/testbed.json the program reads. */
export interface TestbedFile {
  clusters: { name: string; role: "hub" | "region"; server: string; kubeconfig: string; caFile: string }[];
  nats: {
    hub: { url: string; leafUrl: string; admin: Credentials };
    regions: Record<string, { url: string; member: Credentials; leaf: Credentials }>;
  };
}

export function readTestbed(path: string): TestbedFile {
  try {
    return JSON.parse(readFileSync(path, "utf8")) as TestbedFile;
  } catch (err) {
    throw new InfraError(
      "TestbedNotFound",
      `cannot read ${path} (${String(err)}); start the testbed with 'make testbed-up' or set sovereign:testbed`,
      { cause: err },
    );
  }
}

const JURISDICTIONS = ["DE", "FR", "NL"];

export function testbedFederation(
  tb: TestbedFile,
  opts: { suffix: string; manageShared: boolean; chart: boolean },
): { hub: SovereignHub; regions: SovereignRegion[] } {
  const hubCluster = tb.clusters.find((c) => c.role === "hub");
  if (!hubCluster) throw new InfraError("TestbedNotFound", "testbed.json names no hub cluster");
  const provider = (name: string, kubeconfigFile: string) =>
    new k8s.Provider(name, { kubeconfig: readFileSync(kubeconfigFile, "utf8") });
  // One policy for the whole federation; the testbed's, which trusts the testbed's own roots.
  const policy = testbedAttestationPolicy(`testbed-pulumi${opts.suffix}`) as unknown as Record<
    string,
    unknown
  >;
  const hub = new SovereignHub("hub", {
    provider: provider("hub", hubCluster.kubeconfig),
    namespace: `sovereign-system${opts.suffix}`,
    server: hubCluster.server,
    caData: readFileSync(hubCluster.caFile).toString("base64"),
    manageCrds: opts.manageShared,
    manageAdmissionPolicy: opts.manageShared,
    attestationPolicies: [policy],
    nats: { url: tb.nats.hub.url, auth: tb.nats.hub.admin },
    chart: { enabled: opts.chart, releaseName: `sovereign${opts.suffix}` },
  });
  const regions = tb.clusters
    .filter((c) => c.role === "region")
    .map((c, i) => {
      const nats = tb.nats.regions[c.name];
      if (!nats) throw new InfraError("TestbedNotFound", `testbed.json has no NATS settings for ${c.name}`);
      return new SovereignRegion(c.name, {
        region: `${c.name}${opts.suffix}`,
        hub,
        provider: provider(c.name, c.kubeconfig),
        namespace: `sovereign-system${opts.suffix}`,
        registration: {
          displayName: `${c.name} (testbed, Pulumi)`,
          jurisdiction: JURISDICTIONS[i % JURISDICTIONS.length] as string,
          attestationPolicyRef: { name: (policy.metadata as { name: string }).name },
          dataResidency: {
            allowedEgress: ["ModelDeltas", "TrainingMetrics"],
            acceptAggregates: true,
            checkpointLocation: "InRegion",
          },
        },
        registrationLabels: { "sovereign.ai/consortium": `pulumi${opts.suffix}` },
        attestationPolicy: policy,
        nats: {
          url: nats.url,
          hubLeafUrl: tb.nats.hub.leafUrl,
          account: "SOVEREIGN",
          leafUser: nats.leaf,
          member: nats.member,
        },
        chart: {
          enabled: opts.chart,
          releaseName: `sovereign${opts.suffix}`,
          values: { member: { attestation: { trustAnchors: { testbed: true }, evidenceSource: "testbed" } } },
        },
      });
    });
  return { hub, regions };
}
