/**
 * FederatedRun: one federated training job, namespaced, on the hub.
 *
 * CEL rules guard defaulted fields with `has()` although defaults are applied before
 * validation: the API server also checks each `default: {}` against the rules of its node,
 * before nested defaults fill it in, and rejects the CRD if a rule then reads a missing key.
 */
import {
  bool,
  conditions,
  immutable,
  int,
  int64,
  jurisdiction,
  jurisdictionSet,
  labelSelector,
  list,
  nameRef,
  num,
  obj,
  objectName,
  observedGeneration,
  resourceRequirements,
  str,
  time,
} from "./common.ts";
import { federatedRunConditions } from "./conditions.ts";
import type { ResourceDefinition, Schema } from "./types.ts";

const MAX_REGIONS = 256;

const envVar = obj(
  "One environment variable for the learner container.",
  {
    name: str("Variable name.", { minLength: 1, maxLength: 256, pattern: "^[-._a-zA-Z][-._a-zA-Z0-9]*$" }),
    value: str("Literal value. Unset (with valueFrom unset too) means the empty string.", {
      maxLength: 32768,
    }),
    valueFrom: obj(
      "Reads the value from a Secret in the region's work namespace instead of inlining it. Unset means use value.",
      {
        secretKeyRef: obj(
          "Key of a Secret that the member operator copies into each learner's environment.",
          {
            name: objectName("Secret name."),
            key: str("Key within the Secret.", { minLength: 1, maxLength: 253 }),
          },
          { required: ["name", "key"] },
        ),
      },
      { required: ["secretKeyRef"] },
    ),
  },
  {
    required: ["name"],
    rules: [
      {
        cel: "!(has(self.value) && has(self.valueFrom))",
        message: "set either value or valueFrom, not both",
        reason: "EnvValueAndValueFrom",
        k8sReason: "FieldValueForbidden",
        holds: (self) => !(self.value !== undefined && self.valueFrom !== undefined),
      },
    ],
  },
);

export const workload = obj(
  "What each learner runs. The member operator in every placed region creates learnersPerRegion pods from this template, gated until their GPU node is attested.",
  {
    image: str(
      "Container image of the learner, preferably pinned by digest (registry/name@sha256:...) so every region trains the same code. Required.",
      { minLength: 1, maxLength: 512 },
    ),
    command: list(
      "Entrypoint override, as in a Pod's container command. Empty means the image's ENTRYPOINT.",
      str("One argument.", { maxLength: 4096 }),
      { maxItems: 64 },
    ),
    args: list(
      "Arguments to the entrypoint, as in a Pod's container args. Empty means the image's CMD.",
      str("One argument.", { maxLength: 4096 }),
      { maxItems: 256 },
    ),
    env: list(
      "Environment variables for every learner. Empty means none beyond those the operator injects.",
      envVar,
      {
        maxItems: 128,
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["name"],
      },
    ),
    resources: resourceRequirements(
      "CPU, memory and GPU requests and limits for one learner pod. Unset means no requests or limits.",
    ),
    learnersPerRegion: int(
      "Learner pods started in each placed region; they train data-parallel within the region and submit one delta per round together.",
      { minimum: 1, maximum: 1024, default: 1 },
    ),
  },
  { required: ["image"], tsName: "Workload" },
);

const placement = obj(
  "Which regions (SovereignNodes) take part. Immutable: a run's participants are fixed when it starts.",
  {
    regionSelector: labelSelector(
      "Selects candidate SovereignNodes by their labels. Unset selects every accepted, ready SovereignNode.",
    ),
    minRegions: int(
      "Fewest regions the run starts with; placement waits until this many eligible regions exist. Count of regions.",
      { minimum: 1, maximum: MAX_REGIONS, default: 2 },
    ),
    maxRegions: int("Most regions placed. Count of regions. Unset means every eligible region.", {
      minimum: 1,
      maximum: MAX_REGIONS,
    }),
    requiredJurisdictions: jurisdictionSet(
      "Jurisdictions that must each contribute at least one region (e.g. every member of a consortium). Empty means no requirement.",
    ),
    excludedJurisdictions: jurisdictionSet(
      "Jurisdictions whose regions are never placed, e.g. for export-control reasons. Empty excludes none.",
    ),
  },
  {
    tsName: "Placement",
    rules: [
      {
        cel: "!has(self.maxRegions) || self.minRegions <= self.maxRegions",
        message: "minRegions must be less than or equal to maxRegions; lower minRegions or raise maxRegions",
        reason: "MinRegionsAboveMaxRegions",
        fieldPath: ".minRegions",
        holds: (self) => self.maxRegions === undefined || self.minRegions <= self.maxRegions,
      },
      {
        cel: "!has(self.requiredJurisdictions) || !has(self.excludedJurisdictions) || self.requiredJurisdictions.all(j, !(j in self.excludedJurisdictions))",
        message:
          "a jurisdiction cannot be both required and excluded; remove it from requiredJurisdictions or from excludedJurisdictions",
        reason: "JurisdictionRequiredAndExcluded",
        fieldPath: ".excludedJurisdictions",
        holds: (self) =>
          (self.requiredJurisdictions ?? []).every(
            (j: string) => !(self.excludedJurisdictions ?? []).includes(j),
          ),
      },
      {
        cel: "!has(self.requiredJurisdictions) || !has(self.maxRegions) || size(self.requiredJurisdictions) <= self.maxRegions",
        message:
          "every required jurisdiction needs a region of its own; raise maxRegions to at least the number of requiredJurisdictions",
        reason: "MaxRegionsBelowRequiredJurisdictions",
        fieldPath: ".maxRegions",
        holds: (self) =>
          self.requiredJurisdictions === undefined ||
          self.maxRegions === undefined ||
          self.requiredJurisdictions.length <= self.maxRegions,
      },
      immutable(
        "placement",
        "PlacementImmutable",
        "delete and recreate the FederatedRun to place it differently",
      ),
    ],
  },
);

const robustAggregator = obj(
  "Replaces the plain mean of region deltas with a Byzantine-robust rule, so a few faulty or malicious regions cannot steer the model. Unset means the (sample-weighted) mean.",
  {
    type: str(
      "TrimmedMean drops the largest and smallest values per coordinate; CoordinateMedian takes the per-coordinate median; Krum keeps the delta(s) closest to their neighbours. Required.",
      { enum: ["TrimmedMean", "CoordinateMedian", "Krum"] },
    ),
    trimFraction: num(
      "TrimmedMean only: fraction of region deltas dropped at each end per coordinate, in [0, 0.5). Required for TrimmedMean.",
      {
        minimum: 0,
        rules: [
          {
            cel: "self < 0.5",
            message:
              "trimFraction must be below 0.5, because trimming that fraction from both ends leaves nothing to average; use e.g. 0.1 or 0.2",
            reason: "TrimFractionTooLarge",
            holds: (self) => self < 0.5,
          },
        ],
      },
    ),
    byzantineRegions: int(
      "Krum only: the number f of faulty regions to tolerate. Each round must aggregate at least 2f+3 regions. Required for Krum.",
      { minimum: 0, maximum: 64 },
    ),
    krumSelection: int(
      "Krum only: how many best-scored deltas are averaged (Multi-Krum m). Unset means 1 (classic Krum).",
      { minimum: 1, maximum: MAX_REGIONS },
    ),
  },
  {
    required: ["type"],
    tsName: "RobustAggregator",
    rules: [
      {
        cel: "self.type != 'TrimmedMean' || has(self.trimFraction)",
        message: "TrimmedMean needs trimFraction, the fraction dropped at each end per coordinate, e.g. 0.1",
        reason: "TrimFractionRequired",
        fieldPath: ".trimFraction",
        k8sReason: "FieldValueRequired",
        holds: (self) => self.type !== "TrimmedMean" || self.trimFraction !== undefined,
      },
      {
        cel: "self.type == 'TrimmedMean' || !has(self.trimFraction)",
        message: "trimFraction applies only to type TrimmedMean; remove it or set type: TrimmedMean",
        reason: "TrimFractionWithoutTrimmedMean",
        fieldPath: ".trimFraction",
        k8sReason: "FieldValueForbidden",
        holds: (self) => self.type === "TrimmedMean" || self.trimFraction === undefined,
      },
      {
        cel: "self.type != 'Krum' || has(self.byzantineRegions)",
        message: "Krum needs byzantineRegions, the number of faulty regions to tolerate, e.g. 1",
        reason: "ByzantineRegionsRequired",
        fieldPath: ".byzantineRegions",
        k8sReason: "FieldValueRequired",
        holds: (self) => self.type !== "Krum" || self.byzantineRegions !== undefined,
      },
      {
        cel: "self.type == 'Krum' || (!has(self.byzantineRegions) && !has(self.krumSelection))",
        message: "byzantineRegions and krumSelection apply only to type Krum; remove them or set type: Krum",
        reason: "KrumSettingsWithoutKrum",
        k8sReason: "FieldValueForbidden",
        holds: (self) =>
          self.type === "Krum" || (self.byzantineRegions === undefined && self.krumSelection === undefined),
      },
    ],
  },
);

const algorithm = obj(
  "How region deltas become the next global model. Immutable: the outer optimiser state depends on it.",
  {
    type: str(
      "FedAvg averages the regions' updated models (outer SGD); DiLoCo treats the averaged delta as an outer gradient for Nesterov momentum after H inner steps. Required.",
      { enum: ["FedAvg", "DiLoCo"] },
    ),
    fedAvg: obj(
      "FedAvg settings. Only with type FedAvg; unset uses the defaults below.",
      {
        localSteps: int(
          "Optimiser steps each learner takes on local data per round. Unset lets the learner decide (typically one epoch).",
          { minimum: 1, maximum: 1000000 },
        ),
        serverLearningRate: num(
          "Scale applied to the averaged delta on the hub; 1.0 is classic FedAvg. Dimensionless.",
          { minimum: 0, exclusiveMinimum: true, maximum: 10, default: 1 },
        ),
      },
      { tsName: "FedAvgSettings" },
    ),
    diloco: obj(
      "DiLoCo settings. Required with type DiLoCo (at least innerSteps).",
      {
        innerSteps: int(
          "H: inner optimiser steps each learner takes between synchronisations; the main knob trading communication for convergence. Steps. Required for DiLoCo.",
          { minimum: 1, maximum: 1000000 },
        ),
        outerLearningRate: num(
          "Outer optimiser learning rate applied to the averaged delta. Dimensionless.",
          {
            minimum: 0,
            exclusiveMinimum: true,
            maximum: 10,
            default: 0.7,
          },
        ),
        outerMomentum: num("Outer optimiser momentum, in [0, 1). Dimensionless.", {
          minimum: 0,
          maximum: 1,
          exclusiveMaximum: true,
          default: 0.9,
        }),
        nesterov: bool("Use Nesterov momentum in the outer step (as in the DiLoCo paper).", {
          default: true,
        }),
      },
      { tsName: "DiLoCoSettings" },
    ),
    robustAggregator,
  },
  {
    required: ["type"],
    tsName: "Algorithm",
    rules: [
      {
        cel: "self.type != 'DiLoCo' || (has(self.diloco) && has(self.diloco.innerSteps))",
        message:
          "DiLoCo needs diloco.innerSteps, the number H of local steps between synchronisations, e.g. 500",
        reason: "InnerStepsRequired",
        fieldPath: ".diloco.innerSteps",
        k8sReason: "FieldValueRequired",
        holds: (self) => self.type !== "DiLoCo" || self.diloco?.innerSteps !== undefined,
      },
      {
        cel: "self.type == 'DiLoCo' || !has(self.diloco)",
        message: "diloco settings apply only to type DiLoCo; remove algorithm.diloco or set type: DiLoCo",
        reason: "DiLoCoSettingsWithoutDiLoCo",
        fieldPath: ".diloco",
        k8sReason: "FieldValueForbidden",
        holds: (self) => self.type === "DiLoCo" || self.diloco === undefined,
      },
      {
        cel: "self.type == 'FedAvg' || !has(self.fedAvg)",
        message: "fedAvg settings apply only to type FedAvg; remove algorithm.fedAvg or set type: FedAvg",
        reason: "FedAvgSettingsWithoutFedAvg",
        fieldPath: ".fedAvg",
        k8sReason: "FieldValueForbidden",
        holds: (self) => self.type === "FedAvg" || self.fedAvg === undefined,
      },
      immutable(
        "algorithm",
        "AlgorithmImmutable",
        "create a new FederatedRun (it may start from this run's checkpoint) to change it",
      ),
    ],
  },
);

const quorum = obj(
  "When a round may close. A round aggregates once quorum regions delivered a delta and the grace window passed (or all placed regions delivered), and gives up at maxRoundSeconds.",
  {
    minRegions: int(
      "Fewest regions whose deltas a round needs before it can be aggregated. Count of regions. Unset means placement.minRegions.",
      { minimum: 1, maximum: MAX_REGIONS },
    ),
    graceWindowSeconds: int(
      "How long to keep waiting for slower regions after quorum is reached, so that one fast region does not always decide the round alone. A region the hub has lost touch with (its SovereignNode not Ready, or its delta mirror silent for 5 s) is not waited for; its delta still counts if it arrives. Seconds.",
      { minimum: 0, maximum: 86400, default: 60 },
    ),
    maxRoundSeconds: int(
      "Upper bound on a round's duration from its start; a round without quorum by then is recorded as QuorumMissed and retried. Seconds.",
      { minimum: 10, maximum: 604800, default: 3600 },
    ),
    lateDeltas: str(
      "What happens to a delta that arrives after its round closed: Discard drops it; NextRound folds it into the next round's aggregate, down-weighted by its staleness.",
      { enum: ["Discard", "NextRound"], default: "Discard" },
    ),
  },
  {
    default: {},
    tsName: "Quorum",
    rules: [
      {
        cel: "!has(self.graceWindowSeconds) || !has(self.maxRoundSeconds) || self.graceWindowSeconds <= self.maxRoundSeconds",
        message:
          "graceWindowSeconds must not exceed maxRoundSeconds, because the round ends at maxRoundSeconds regardless; shorten the grace window or raise maxRoundSeconds",
        reason: "GraceWindowExceedsMaxRoundTime",
        fieldPath: ".graceWindowSeconds",
        holds: (self) => self.graceWindowSeconds <= self.maxRoundSeconds,
      },
    ],
  },
);

export const deltaEncoding = obj(
  "How learners encode the model delta they publish each round. Smaller encodings cut cross-border traffic at some precision cost.",
  {
    dtype: str(
      "Element type of the transmitted delta: fp32 (lossless), bf16 or fp16 (half size), int8 (block-scaled 8-bit, about 26% of fp32 with blocks of 128), int4 (block-scaled 4-bit, about 14% of fp32 with blocks of 64).",
      { enum: ["fp32", "bf16", "fp16", "int8", "int4"], default: "bf16" },
    ),
    maxSizeMiB: int(
      "Largest encoded delta a region may publish per round; larger deltas are refused unread (DeltaTooLarge), audited, and the region's status in the run shows the refusal. MiB (2^20 bytes).",
      { minimum: 1, maximum: 1048576, default: 4096 },
    ),
  },
  { default: {}, tsName: "DeltaEncoding" },
);

export const attestation = obj(
  "Which GPU attestation every learner's node must pass before its pod is released.",
  {
    policyRef: {
      ...nameRef(
        "The AttestationPolicy learner nodes must satisfy. Required. Immutable.",
        "AttestationPolicy",
      ),
      rules: [
        immutable(
          "attestation.policyRef",
          "PolicyRefImmutable",
          "a running federation's guarantees must not change; create a new FederatedRun to use another policy",
        ),
      ],
    },
    maxEvidenceAgeSeconds: int(
      "Tighter evidence age limit for this run; a value above the policy's own maxEvidenceAgeSeconds has no effect. Seconds. Unset means the policy's limit.",
      { minimum: 1, maximum: 86400 },
    ),
  },
  { required: ["policyRef"], tsName: "RunAttestation" },
);

const checkpoint = obj(
  "Where the global model and outer optimiser state are saved, so a run can resume or a new run can start from it. Region-local learner state stays in the region (see SovereignNode dataResidency).",
  {
    uri: str(
      "Destination, e.g. s3://bucket/prefix, gs://bucket/prefix or nats://bucket (JetStream object store in the hub domain). Unset means the hub object store bucket sovereign-<namespace>-<run>.",
      { maxLength: 1024, pattern: "^(s3|gs|nats)://[^\\s]+$" },
    ),
    everyRounds: int("Save a checkpoint after every this many rounds. Rounds.", {
      minimum: 1,
      maximum: 100000,
      default: 10,
    }),
    keep: int("Newest checkpoints to retain; older ones are deleted. Count.", {
      minimum: 1,
      maximum: 1000,
      default: 3,
    }),
  },
  { default: {}, tsName: "Checkpoint" },
);

export const federatedRunSpec: Schema = obj(
  "Desired state of the federated training job.",
  {
    workload,
    placement,
    algorithm,
    rounds: int("Outer rounds to run before the run succeeds. Rounds. Required.", {
      minimum: 1,
      maximum: 1000000,
    }),
    quorum,
    deltaEncoding,
    attestation,
    checkpoint,
    suspend: bool(
      "Pauses the run: every region's learners are stopped and the open round's deadlines stop counting; set back to false to resume at the same round.",
      { default: false },
    ),
  },
  {
    required: ["workload", "placement", "algorithm", "rounds", "attestation"],
    tsName: "FederatedRunSpec",
    rules: [
      {
        cel: "!has(self.quorum) || !has(self.quorum.minRegions) || self.quorum.minRegions <= self.placement.minRegions",
        message:
          "quorum.minRegions must not exceed placement.minRegions, or a run placed on the minimum number of regions could never reach quorum; lower quorum.minRegions or raise placement.minRegions",
        reason: "QuorumAbovePlacement",
        fieldPath: ".quorum.minRegions",
        holds: (self) =>
          self.quorum?.minRegions === undefined || self.quorum.minRegions <= self.placement.minRegions,
      },
      {
        cel: "!has(self.algorithm.robustAggregator) || self.algorithm.robustAggregator.type != 'Krum' || !has(self.algorithm.robustAggregator.byzantineRegions) || (has(self.quorum) && has(self.quorum.minRegions) ? self.quorum.minRegions : self.placement.minRegions) >= 2 * self.algorithm.robustAggregator.byzantineRegions + 3",
        message:
          "Krum tolerates byzantineRegions (f) faulty regions only if every round aggregates at least 2f+3 regions; raise quorum.minRegions (or placement.minRegions when quorum.minRegions is unset) to at least 2f+3, or lower byzantineRegions",
        reason: "KrumNeedsMoreRegions",
        fieldPath: ".algorithm.robustAggregator.byzantineRegions",
        holds: (self) => {
          const aggregator = self.algorithm.robustAggregator;
          if (aggregator?.type !== "Krum" || aggregator.byzantineRegions === undefined) return true;
          const regionsPerRound = self.quorum?.minRegions ?? self.placement.minRegions;
          return regionsPerRound >= 2 * aggregator.byzantineRegions + 3;
        },
      },
    ],
  },
);

const regionStatus = obj(
  "The run's state in one region.",
  {
    name: objectName("Name of the SovereignNode."),
    jurisdiction: jurisdiction("The region's jurisdiction at placement time."),
    placed: bool("Whether the region is part of the run (false once it was removed from placement)."),
    learnersDesired: int("Learner pods the region should run (spec.workload.learnersPerRegion).", {
      minimum: 0,
    }),
    learnersReady: int("Learner pods running on attested GPU nodes.", { minimum: 0 }),
    lastDeltaRound: int(
      "Latest round for which the hub accepted this region's delta. Unset before the first delta.",
      {
        minimum: 0,
      },
    ),
    bytesSent: int64("Total encoded delta bytes the region published for this run. Bytes.", { minimum: 0 }),
    quarantined: bool("Whether the hub currently excludes this region's deltas."),
    reason: str("PascalCase reason for the region's state, e.g. RegionQuarantined. Empty when healthy.", {
      maxLength: 128,
    }),
    message: str("Human-readable detail for reason.", { maxLength: 4096 }),
  },
  { required: ["name"], tsName: "RegionRunStatus" },
);

const foldedLateDeltas = list(
  "Late deltas (quorum.lateDeltas: NextRound) folded into this round's aggregate: each one a region's delta for an earlier round that closed without it, weighted by its tokens × 1/(1 + rounds late). Each late delta is folded into one round at most. Unset when none.",
  obj(
    "One late delta folded in.",
    {
      region: objectName("SovereignNode name."),
      round: int("The round the delta was trained for (and closed without it).", { minimum: 1 }),
    },
    { required: ["region", "round"], tsName: "FoldedLateDelta" },
  ),
  { maxItems: MAX_REGIONS, "x-kubernetes-list-type": "atomic" },
);

const roundStatus = obj(
  "Outcome of one closed round.",
  {
    round: int("Round number, starting at 1.", { minimum: 0 }),
    outcome: str(
      "QuorumReached: aggregated after quorum and the grace window; AllRegionsReported: every placed region delivered before the grace window ended; QuorumMissed: maxRoundSeconds passed without quorum, nothing aggregated; Aborted: the run was stopped during the round.",
      { enum: ["QuorumReached", "AllRegionsReported", "QuorumMissed", "Aborted"] },
    ),
    contributingRegions: list(
      "SovereignNodes whose deltas were aggregated.",
      objectName("SovereignNode name."),
      {
        maxItems: MAX_REGIONS,
        "x-kubernetes-list-type": "set",
      },
    ),
    lateRegions: list(
      "Placed SovereignNodes whose deltas missed the round (handled per quorum.lateDeltas).",
      objectName("SovereignNode name."),
      { maxItems: MAX_REGIONS, "x-kubernetes-list-type": "set" },
    ),
    foldedLateDeltas,
    aggregateDigest: str(
      "sha256:<hex> digest of the global model published by this round. Unset if nothing was aggregated.",
      {
        pattern: "^sha256:[0-9a-f]{64}$",
        maxLength: 71,
      },
    ),
    startTime: time("When the round opened."),
    completionTime: time("When the round closed."),
  },
  { required: ["round", "outcome"], tsName: "RoundOutcome" },
);

const roundProgress = obj(
  "The open round, as the hub records it so that a restarted hub resumes exactly where it was. Unset between rounds and once the run finished.",
  {
    round: int("Round number, starting at 1.", { minimum: 1 }),
    phase: str(
      "WaitingForDeltas: collecting deltas below quorum; GraceWindow: quorum reached, waiting for slower regions; Aggregating: the set of deltas is fixed and being combined; Publishing: the new global model is being published.",
      { enum: ["WaitingForDeltas", "GraceWindow", "Aggregating", "Publishing"] },
    ),
    startTime: time("When this attempt at the round opened."),
    quorumTime: time(
      "When quorum.minRegions regions had delivered; the grace window runs from here. Unset below quorum.",
    ),
    deliveredRegions: list(
      "SovereignNodes whose delta for this round the hub accepted. Fixed once phase is Aggregating: exactly these are aggregated, even after a hub restart.",
      objectName("SovereignNode name."),
      { maxItems: MAX_REGIONS, "x-kubernetes-list-type": "set" },
    ),
    retries: int("Times this round restarted after QuorumMissed. Count.", { minimum: 0 }),
    foldedLateDeltas,
    suspendTime: time(
      "When spec.suspend stopped this round's clock. On resume, startTime and quorumTime move forward by the pause, so a suspension never eats into the round's grace window or maxRoundSeconds. Unset while the run is not suspended.",
    ),
  },
  { required: ["round", "phase", "startTime"], tsName: "RoundProgress" },
);

export const federatedRunStatus: Schema = obj(
  "Observed state, written by the hub operator.",
  {
    phase: str(
      "Pending: waiting for placement; Placing: regions chosen, learners starting; Running: rounds in progress; Suspended: spec.suspend is true, no learners run and the open round's clock is stopped; Succeeded: all rounds done; Failed: stopped, see conditions.",
      { enum: ["Pending", "Placing", "Running", "Suspended", "Succeeded", "Failed"] },
    ),
    currentRound: int("Round now in progress (or last round, once finished). 0 before the first round.", {
      minimum: 0,
    }),
    roundProgress,
    regionsPlaced: int("Regions currently placed.", { minimum: 0 }),
    regionsReady: int("Placed regions whose learners are all ready.", { minimum: 0 }),
    startTime: time("When the first round opened."),
    completionTime: time("When the run reached Succeeded or Failed."),
    regions: list("Per-region state, one entry per region ever placed.", regionStatus, {
      maxItems: MAX_REGIONS,
      "x-kubernetes-list-type": "map",
      "x-kubernetes-list-map-keys": ["name"],
    }),
    rounds: list(
      "Quorum outcome and aggregate digest of the most recent closed rounds (up to 100).",
      roundStatus,
      {
        maxItems: 100,
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["round"],
      },
    ),
    conditions: conditions("FederatedRun", federatedRunConditions),
    observedGeneration: observedGeneration("FederatedRun"),
  },
  { tsName: "FederatedRunStatus" },
);

export const federatedRun: ResourceDefinition = {
  kind: "FederatedRun",
  plural: "federatedruns",
  singular: "federatedrun",
  shortNames: ["fr", "fedrun"],
  scope: "Namespaced",
  description:
    "FederatedRun is one federated training job across sovereign regions: learners train on data that never leaves their region, and only (attested, signed) model deltas travel to the hub, which aggregates them round by round.",
  spec: federatedRunSpec,
  status: federatedRunStatus,
  printerColumns: [
    { name: "Phase", type: "string", jsonPath: ".status.phase", description: "Lifecycle phase." },
    { name: "Round", type: "integer", jsonPath: ".status.currentRound", description: "Round in progress." },
    {
      name: "Rounds",
      type: "integer",
      jsonPath: ".spec.rounds",
      description: "Rounds requested.",
      priority: 1,
    },
    {
      name: "Ready",
      type: "integer",
      jsonPath: ".status.regionsReady",
      description: "Regions with all learners ready.",
    },
    { name: "Placed", type: "integer", jsonPath: ".status.regionsPlaced", description: "Regions placed." },
    {
      name: "Algorithm",
      type: "string",
      jsonPath: ".spec.algorithm.type",
      description: "FedAvg or DiLoCo.",
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
