// Fluent builders for test objects, as Kueue's tests use: start from a valid object and
// change only what the test is about.
import type { Condition, FederatedRun, SovereignNode } from "../../crds/types.generated.ts";

const now = "2026-11-24T00:00:00Z";

export class NodeBuilder {
  private readonly node: SovereignNode;

  constructor(name: string) {
    this.node = {
      apiVersion: "sovereign.ai/v1alpha1",
      kind: "SovereignNode",
      metadata: { name, labels: {} },
      spec: {
        jurisdiction: "DE",
        accepted: true,
        attestationPolicyRef: { name: "strict" },
        dataResidency: {
          allowedEgress: ["ModelDeltas"],
          acceptAggregates: true,
          checkpointLocation: "InRegion",
        },
        jetStreamDomain: name,
      },
      status: {
        gpuNodes: { total: 2, attested: 2, failing: 0, totalGpus: 16, attestedGpus: 16 },
        conditions: [],
      },
    };
    this.condition("Ready", "True", "RegionReady");
  }

  jurisdiction(j: string): this {
    this.node.spec.jurisdiction = j;
    return this;
  }

  labels(l: Record<string, string>): this {
    this.node.metadata.labels = { ...this.node.metadata.labels, ...l };
    return this;
  }

  accepted(a: boolean): this {
    this.node.spec.accepted = a;
    return this;
  }

  attestedGpus(n: number): this {
    this.node.status = {
      ...this.node.status,
      gpuNodes: { total: 1, attested: 1, failing: 0, totalGpus: n, attestedGpus: n },
    };
    return this;
  }

  capacity(c: NonNullable<SovereignNode["spec"]["capacity"]>): this {
    this.node.spec.capacity = c;
    return this;
  }

  condition(type: string, status: Condition["status"], reason: string, message = ""): this {
    const conditions = (this.node.status?.conditions ?? []).filter((c) => c.type !== type);
    conditions.push({ type, status, reason, message, lastTransitionTime: now });
    this.node.status = { ...this.node.status, conditions };
    return this;
  }

  obj(): SovereignNode {
    return structuredClone(this.node);
  }
}

export class RunBuilder {
  private readonly run: FederatedRun;

  constructor(name: string, namespace = "default") {
    this.run = {
      apiVersion: "sovereign.ai/v1alpha1",
      kind: "FederatedRun",
      metadata: { name, namespace, generation: 1 },
      spec: {
        workload: {
          image: "example.invalid/learner:1",
          learnersPerRegion: 1,
          resources: { limits: { "nvidia.com/gpu": "1" } },
        },
        placement: { minRegions: 1 },
        algorithm: { type: "FedAvg", fedAvg: { serverLearningRate: 1 } },
        rounds: 3,
        quorum: { graceWindowSeconds: 60, maxRoundSeconds: 3600, lateDeltas: "Discard" },
        deltaEncoding: { dtype: "fp32", maxSizeMiB: 1024 },
        attestation: { policyRef: { name: "strict" } },
        checkpoint: { everyRounds: 1, keep: 3 },
        suspend: false,
      },
    };
  }

  placement(p: Partial<FederatedRun["spec"]["placement"]>): this {
    this.run.spec.placement = { ...this.run.spec.placement, ...p };
    return this;
  }

  learners(n: number, gpusEach = 1): this {
    this.run.spec.workload.learnersPerRegion = n;
    this.run.spec.workload.resources = { limits: { "nvidia.com/gpu": String(gpusEach) } };
    return this;
  }

  obj(): FederatedRun {
    return structuredClone(this.run);
  }
}

export const makeNode = (name: string) => new NodeBuilder(name);
export const makeRun = (name: string, namespace?: string) => new RunBuilder(name, namespace);
