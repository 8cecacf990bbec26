/**
 * SovereignNode: one participating region (one sovereign cluster), cluster-scoped on the hub.
 * The region's member operator registers it; a hub administrator accepts it (the Open Cluster
 * Management pattern: the region asks, the hub decides).
 */
import {
  bool,
  conditions,
  immutable,
  int,
  jurisdiction,
  list,
  nameRef,
  obj,
  observedGeneration,
  str,
  time,
} from "./common.ts";
import { sovereignNodeConditions } from "./conditions.ts";
import type { ResourceDefinition, Schema } from "./types.ts";

/** The hub's own JetStream domain; a region using it would shadow the hub's streams. */
export const HUB_JETSTREAM_DOMAIN = "hub";

const EGRESS_KINDS = ["ModelDeltas", "TrainingMetrics", "Checkpoints"] as const;

const dataResidency = obj(
  "What may cross this region's border. Training data never leaves, whatever is set here; these rules cover derived artifacts.",
  {
    allowedEgress: list(
      "Artifacts that may leave the region: ModelDeltas (encoded weight deltas, needed to contribute to a run), TrainingMetrics (loss and throughput numbers), Checkpoints (learner state).",
      str("One kind of artifact.", { enum: EGRESS_KINDS }),
      {
        maxItems: EGRESS_KINDS.length,
        "x-kubernetes-list-type": "set",
        default: ["ModelDeltas", "TrainingMetrics"],
      },
    ),
    acceptAggregates: bool(
      "Whether global models aggregated from other regions' contributions may be brought into the region. Without them the region cannot train beyond round 1.",
      { default: true },
    ),
    checkpointLocation: str(
      "Where region-local learner checkpoints (inner optimiser state, data position) are kept: InRegion (a PVC in the region) or Hub (requires Checkpoints in allowedEgress).",
      { enum: ["InRegion", "Hub"], default: "InRegion" },
    ),
  },
  {
    default: {},
    tsName: "DataResidency",
    rules: [
      {
        cel: "!has(self.checkpointLocation) || self.checkpointLocation != 'Hub' || (has(self.allowedEgress) && 'Checkpoints' in self.allowedEgress)",
        message:
          "checkpointLocation Hub moves learner checkpoints out of the region; add Checkpoints to allowedEgress or set checkpointLocation: InRegion",
        reason: "CheckpointEgressNotAllowed",
        fieldPath: ".checkpointLocation",
        holds: (self) => self.checkpointLocation !== "Hub" || self.allowedEgress.includes("Checkpoints"),
      },
    ],
  },
);

const capacity = obj(
  "Limits the region offers to federations; the hub never places more than this. Unset fields mean no limit.",
  {
    maxGpus: int("GPUs all runs together may use in this region. Count of GPUs. Unset means no limit.", {
      minimum: 0,
      maximum: 1000000,
    }),
    maxLearners: int("Learner pods all runs together may run in this region. Count. Unset means no limit.", {
      minimum: 0,
      maximum: 1000000,
    }),
    maxConcurrentRuns: int("FederatedRuns placed here at the same time. Count. Unset means no limit.", {
      minimum: 0,
      maximum: 10000,
    }),
    maxEgressMiBPerRound: int(
      "Encoded delta bytes the region will publish per run per round; runs whose deltaEncoding.maxSizeMiB exceeds this are not placed here. MiB. Unset means no limit.",
      { minimum: 1, maximum: 1048576 },
    ),
  },
  { tsName: "RegionCapacity" },
);

export const sovereignNodeSpec: Schema = obj(
  "Desired state of the region's membership.",
  {
    displayName: str("Human-friendly name, e.g. 'Charité Berlin GPU cluster'. Unset shows the object name.", {
      maxLength: 128,
    }),
    jurisdiction: {
      ...jurisdiction(
        "Legal jurisdiction the region's data falls under; placement rules match on it. Required. Immutable.",
      ),
      rules: [
        immutable(
          "jurisdiction",
          "JurisdictionImmutable",
          "register the cluster as a new SovereignNode if its jurisdiction really changed",
        ),
      ],
    },
    topology: obj(
      "Where the region is, for placement and display. The operator mirrors these into the labels topology.sovereign.ai/region and topology.sovereign.ai/zone. Unset fields are not labelled.",
      {
        region: str("Cloud or site region, e.g. eu-central-1 or berlin-1. Unset means no region label.", {
          maxLength: 63,
          pattern: "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        }),
        zone: str("Zone within the region, e.g. eu-central-1a. Unset means no zone label.", {
          maxLength: 63,
          pattern: "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        }),
      },
      { tsName: "Topology" },
    ),
    accepted: bool(
      "Set by a hub administrator to admit the region; until then the hub places no work there. The region's own member operator cannot set it.",
      { default: false },
    ),
    attestationPolicyRef: nameRef(
      "The AttestationPolicy this region's GPU nodes must satisfy to be counted as attested. Required.",
      "AttestationPolicy",
    ),
    dataResidency,
    capacity,
    jetStreamDomain: str(
      `JetStream domain of the region's NATS leaf node, where its deltas are published and the global model is mirrored. Must differ from the hub's domain "${HUB_JETSTREAM_DOMAIN}". Required. Immutable.`,
      {
        minLength: 1,
        maxLength: 63,
        pattern: "^[A-Za-z0-9_-]+$",
        rules: [
          immutable(
            "jetStreamDomain",
            "JetStreamDomainImmutable",
            "streams already live in this domain; register a new SovereignNode to move them",
          ),
          {
            cel: `self != '${HUB_JETSTREAM_DOMAIN}'`,
            message: `jetStreamDomain "${HUB_JETSTREAM_DOMAIN}" is reserved for the hub; use the region's own domain, e.g. its name`,
            reason: "JetStreamDomainReserved",
            holds: (self) => self !== HUB_JETSTREAM_DOMAIN,
          },
        ],
      },
    ),
  },
  { required: ["jurisdiction", "attestationPolicyRef", "jetStreamDomain"], tsName: "SovereignNodeSpec" },
);

export const sovereignNodeStatus: Schema = obj(
  "Observed state, written by the hub operator from the member operator's heartbeats and attestation verdicts.",
  {
    gpuNodes: obj(
      "GPU node counts in the region.",
      {
        total: int("GPU nodes the member operator sees.", { minimum: 0 }),
        attested: int(
          "GPU nodes whose latest verdict passed the policy and is younger than its evidence age limit.",
          {
            minimum: 0,
          },
        ),
        failing: int("GPU nodes whose latest verdict failed.", { minimum: 0 }),
        totalGpus: int("GPUs (allocatable nvidia.com/gpu) on all GPU nodes. Count of GPUs.", { minimum: 0 }),
        attestedGpus: int(
          "GPUs (allocatable nvidia.com/gpu) on attested GPU nodes: what placement can use. Count of GPUs.",
          { minimum: 0 },
        ),
      },
      { tsName: "GpuNodeCounts" },
    ),
    lastHeartbeatTime: time("When the member operator last reported in."),
    attestation: obj(
      "Summary of the region's latest attestation verdicts.",
      {
        policy: str("AttestationPolicy the verdicts were checked against.", { maxLength: 253 }),
        lastVerifiedTime: time("When the most recent verdict was produced."),
        oldestEvidenceAgeSeconds: int(
          "Age of the oldest evidence among attested nodes when status was written. Seconds.",
          { minimum: 0 },
        ),
        lastFailureReason: str("PascalCase reason of the most recent failed verdict. Empty if none failed.", {
          maxLength: 128,
        }),
      },
      { tsName: "AttestationSummary" },
    ),
    memberOperatorVersion: str("Version of the sovereign-operator running in the region.", { maxLength: 64 }),
    conditions: conditions("SovereignNode", sovereignNodeConditions),
    observedGeneration: observedGeneration("SovereignNode"),
  },
  { tsName: "SovereignNodeStatus" },
);

export const sovereignNode: ResourceDefinition = {
  kind: "SovereignNode",
  plural: "sovereignnodes",
  singular: "sovereignnode",
  shortNames: ["sn", "snode"],
  scope: "Cluster",
  description:
    "SovereignNode is one participating region: a sovereign cluster whose GPUs may train for federations while its data stays inside its jurisdiction. Registered by the region, accepted by the hub.",
  spec: sovereignNodeSpec,
  status: sovereignNodeStatus,
  printerColumns: [
    {
      name: "Jurisdiction",
      type: "string",
      jsonPath: ".spec.jurisdiction",
      description: "Legal jurisdiction.",
    },
    { name: "Accepted", type: "boolean", jsonPath: ".spec.accepted", description: "Admitted by the hub." },
    {
      name: "Attested",
      type: "integer",
      jsonPath: ".status.gpuNodes.attestedGpus",
      description: "GPUs on attested nodes.",
    },
    { name: "GPUs", type: "integer", jsonPath: ".status.gpuNodes.totalGpus", description: "GPUs seen." },
    {
      name: "Ready",
      type: "string",
      jsonPath: '.status.conditions[?(@.type=="Ready")].status',
      description: "Whether the region can receive work.",
    },
    {
      name: "Version",
      type: "string",
      jsonPath: ".status.memberOperatorVersion",
      description: "Member operator version.",
      priority: 1,
    },
    {
      name: "Age",
      type: "date",
      jsonPath: ".metadata.creationTimestamp",
      description: "Time since creation.",
    },
  ],
};
