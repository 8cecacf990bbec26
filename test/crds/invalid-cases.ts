/**
 * Invalid CRs shared by the parser tests (no server) and the API server tests, so both
 * implementations of every rule are held to the same expectations.
 *
 * Each case starts from a valid example, breaks one thing, and states where the error points
 * (`path`), the parser's reason code, and a substring of the API server's message.
 */
import type { Kind } from "../../crds/resources.ts";
import { type ExampleObject, loadExample } from "./fixtures.ts";

export interface InvalidCase {
  name: string;
  example: string;
  // biome-ignore lint/suspicious/noExplicitAny: specs are edited as plain JSON
  break: (spec: any) => void;
  /** True when the change is only invalid as an update of the stored example (transition rules). */
  update?: boolean;
  path: string;
  reason: string;
  serverMessage: string;
}

const FEDAVG = "federatedrun-fedavg.yaml";
const DILOCO = "federatedrun-diloco-int8-robust.yaml";
const REGION = "sovereignnode-region.yaml";
const STRICT = "attestationpolicy-strict.yaml";
const TESTBED = "attestationpolicy-testbed.yaml";
const WORK = "regionwork.yaml";

export const invalidCases: readonly InvalidCase[] = [
  // FederatedRun: placement
  {
    name: "minRegions above maxRegions",
    example: FEDAVG,
    break: (spec) => Object.assign(spec.placement, { minRegions: 5, maxRegions: 3 }),
    path: "spec.placement.minRegions",
    reason: "MinRegionsAboveMaxRegions",
    serverMessage: "minRegions must be less than or equal to maxRegions",
  },
  {
    name: "jurisdiction both required and excluded",
    example: DILOCO,
    break: (spec) => {
      spec.placement.excludedJurisdictions = ["US", "FR"];
    },
    path: "spec.placement.excludedJurisdictions",
    reason: "JurisdictionRequiredAndExcluded",
    serverMessage: "a jurisdiction cannot be both required and excluded",
  },
  {
    name: "more required jurisdictions than maxRegions",
    example: FEDAVG,
    break: (spec) =>
      Object.assign(spec.placement, { requiredJurisdictions: ["DE", "FR", "IT"], maxRegions: 2 }),
    path: "spec.placement.maxRegions",
    reason: "MaxRegionsBelowRequiredJurisdictions",
    serverMessage: "raise maxRegions to at least the number of requiredJurisdictions",
  },
  {
    name: "maxRegions above the hard limit",
    example: FEDAVG,
    break: (spec) => {
      spec.placement.maxRegions = 300;
    },
    path: "spec.placement.maxRegions",
    reason: "AboveMaximum",
    serverMessage: "should be less than or equal to 256",
  },
  {
    name: "lowercase jurisdiction",
    example: DILOCO,
    break: (spec) => {
      spec.placement.requiredJurisdictions = ["de"];
    },
    path: "spec.placement.requiredJurisdictions[0]",
    reason: "PatternMismatch",
    serverMessage: "should match",
  },
  {
    name: "duplicate jurisdiction in a set",
    example: DILOCO,
    break: (spec) => {
      spec.placement.requiredJurisdictions = ["DE", "DE"];
    },
    path: "spec.placement.requiredJurisdictions[1]",
    reason: "DuplicateItem",
    serverMessage: "Duplicate value",
  },
  {
    name: "In selector without values",
    example: DILOCO,
    break: (spec) => {
      spec.placement.regionSelector.matchExpressions[0].values = [];
    },
    path: "spec.placement.regionSelector.matchExpressions[0].values",
    reason: "SelectorValuesMismatch",
    serverMessage: "operators In and NotIn need at least one value",
  },
  {
    name: "placement changed after creation",
    example: FEDAVG,
    update: true,
    break: (spec) => {
      spec.placement.maxRegions = 3;
    },
    path: "spec.placement",
    reason: "PlacementImmutable",
    serverMessage: "placement is immutable",
  },
  // FederatedRun: algorithm
  {
    name: "DiLoCo without innerSteps",
    example: DILOCO,
    break: (spec) => {
      delete spec.algorithm.diloco.innerSteps;
    },
    path: "spec.algorithm.diloco.innerSteps",
    reason: "InnerStepsRequired",
    serverMessage: "DiLoCo needs diloco.innerSteps",
  },
  {
    name: "DiLoCo without a diloco block",
    example: DILOCO,
    break: (spec) => {
      delete spec.algorithm.diloco;
    },
    path: "spec.algorithm.diloco.innerSteps",
    reason: "InnerStepsRequired",
    serverMessage: "DiLoCo needs diloco.innerSteps",
  },
  {
    name: "diloco settings on a FedAvg run",
    example: FEDAVG,
    break: (spec) => {
      spec.algorithm.diloco = { innerSteps: 100 };
    },
    path: "spec.algorithm.diloco",
    reason: "DiLoCoSettingsWithoutDiLoCo",
    serverMessage: "diloco settings apply only to type DiLoCo",
  },
  {
    name: "fedAvg settings on a DiLoCo run",
    example: DILOCO,
    break: (spec) => {
      spec.algorithm.fedAvg = { localSteps: 10 };
    },
    path: "spec.algorithm.fedAvg",
    reason: "FedAvgSettingsWithoutFedAvg",
    serverMessage: "fedAvg settings apply only to type FedAvg",
  },
  {
    name: "unknown algorithm",
    example: FEDAVG,
    break: (spec) => {
      spec.algorithm.type = "FedProx";
    },
    path: "spec.algorithm.type",
    reason: "NotInEnum",
    serverMessage: 'Unsupported value: "FedProx"',
  },
  {
    name: "outer momentum of 1",
    example: DILOCO,
    break: (spec) => {
      spec.algorithm.diloco.outerMomentum = 1;
    },
    path: "spec.algorithm.diloco.outerMomentum",
    reason: "AboveMaximum",
    serverMessage: "should be less than 1",
  },
  {
    name: "algorithm changed after creation",
    example: DILOCO,
    update: true,
    break: (spec) => {
      spec.algorithm.diloco.innerSteps = 250;
    },
    path: "spec.algorithm",
    reason: "AlgorithmImmutable",
    serverMessage: "algorithm is immutable",
  },
  // FederatedRun: robust aggregation
  {
    name: "trimmed-mean fraction of one half",
    example: DILOCO,
    break: (spec) => {
      spec.algorithm.robustAggregator.trimFraction = 0.5;
    },
    path: "spec.algorithm.robustAggregator.trimFraction",
    reason: "TrimFractionTooLarge",
    serverMessage: "trimFraction must be below 0.5",
  },
  {
    name: "TrimmedMean without a fraction",
    example: DILOCO,
    break: (spec) => {
      delete spec.algorithm.robustAggregator.trimFraction;
    },
    path: "spec.algorithm.robustAggregator.trimFraction",
    reason: "TrimFractionRequired",
    serverMessage: "TrimmedMean needs trimFraction",
  },
  {
    name: "trimFraction with CoordinateMedian",
    example: DILOCO,
    break: (spec) => {
      spec.algorithm.robustAggregator.type = "CoordinateMedian";
    },
    path: "spec.algorithm.robustAggregator.trimFraction",
    reason: "TrimFractionWithoutTrimmedMean",
    serverMessage: "trimFraction applies only to type TrimmedMean",
  },
  {
    name: "Krum without byzantineRegions",
    example: DILOCO,
    break: (spec) => {
      spec.algorithm.robustAggregator = { type: "Krum" };
    },
    path: "spec.algorithm.robustAggregator.byzantineRegions",
    reason: "ByzantineRegionsRequired",
    serverMessage: "Krum needs byzantineRegions",
  },
  {
    name: "Krum settings on a trimmed mean",
    example: DILOCO,
    break: (spec) => {
      spec.algorithm.robustAggregator.byzantineRegions = 1;
    },
    path: "spec.algorithm.robustAggregator",
    reason: "KrumSettingsWithoutKrum",
    serverMessage: "byzantineRegions and krumSelection apply only to type Krum",
  },
  {
    name: "Krum f=2 with a quorum of 5 (needs 7)",
    example: DILOCO,
    break: (spec) => {
      spec.algorithm.robustAggregator = { type: "Krum", byzantineRegions: 2 };
    },
    path: "spec.algorithm.robustAggregator.byzantineRegions",
    reason: "KrumNeedsMoreRegions",
    serverMessage:
      "Krum tolerates byzantineRegions (f) faulty regions only if every round aggregates at least 2f+3",
  },
  {
    name: "Krum f=1 with no quorum set and 4 placed regions (needs 5)",
    example: FEDAVG,
    break: (spec) => {
      delete spec.quorum.minRegions;
      Object.assign(spec.placement, { minRegions: 4, maxRegions: 4 });
      spec.algorithm.robustAggregator = { type: "Krum", byzantineRegions: 1 };
    },
    path: "spec.algorithm.robustAggregator.byzantineRegions",
    reason: "KrumNeedsMoreRegions",
    serverMessage: "Krum tolerates byzantineRegions (f) faulty regions",
  },
  // FederatedRun: rounds, quorum, encoding, workload, attestation, checkpoint
  {
    name: "rounds missing",
    example: FEDAVG,
    break: (spec) => {
      delete spec.rounds;
    },
    path: "spec.rounds",
    reason: "Required",
    serverMessage: "Required value",
  },
  {
    name: "zero rounds",
    example: FEDAVG,
    break: (spec) => {
      spec.rounds = 0;
    },
    path: "spec.rounds",
    reason: "BelowMinimum",
    serverMessage: "should be greater than or equal to 1",
  },
  {
    name: "grace window longer than the round",
    example: FEDAVG,
    break: (spec) => {
      spec.quorum.graceWindowSeconds = 700;
    },
    path: "spec.quorum.graceWindowSeconds",
    reason: "GraceWindowExceedsMaxRoundTime",
    serverMessage: "graceWindowSeconds must not exceed maxRoundSeconds",
  },
  {
    name: "grace window longer than the default round time",
    example: FEDAVG,
    break: (spec) => {
      spec.quorum = { graceWindowSeconds: 4000 };
    },
    path: "spec.quorum.graceWindowSeconds",
    reason: "GraceWindowExceedsMaxRoundTime",
    serverMessage: "graceWindowSeconds must not exceed maxRoundSeconds",
  },
  {
    name: "quorum larger than the minimum placement",
    example: FEDAVG,
    break: (spec) => {
      spec.quorum.minRegions = 3;
    },
    path: "spec.quorum.minRegions",
    reason: "QuorumAbovePlacement",
    serverMessage: "quorum.minRegions must not exceed placement.minRegions",
  },
  {
    name: "unsupported delta dtype",
    example: DILOCO,
    break: (spec) => {
      spec.deltaEncoding.dtype = "fp8";
    },
    path: "spec.deltaEncoding.dtype",
    reason: "NotInEnum",
    serverMessage: 'Unsupported value: "fp8"',
  },
  {
    name: "empty image",
    example: FEDAVG,
    break: (spec) => {
      spec.workload.image = "";
    },
    path: "spec.workload.image",
    reason: "TooShort",
    serverMessage: "should be at least 1 chars long",
  },
  {
    name: "overlong image reference",
    example: FEDAVG,
    break: (spec) => {
      spec.workload.image = `registry.example.org/${"a".repeat(600)}`;
    },
    path: "spec.workload.image",
    reason: "TooLong",
    serverMessage: "may not be more than 512",
  },
  {
    name: "env var with both value and valueFrom",
    example: DILOCO,
    break: (spec) => {
      spec.workload.env[0].value = "inline-secret";
    },
    path: "spec.workload.env[0]",
    reason: "EnvValueAndValueFrom",
    serverMessage: "set either value or valueFrom, not both",
  },
  {
    name: "duplicate env var names",
    example: FEDAVG,
    break: (spec) => {
      spec.workload.env = [
        { name: "LOG_LEVEL", value: "info" },
        { name: "LOG_LEVEL", value: "debug" },
      ];
    },
    path: "spec.workload.env[1]",
    reason: "DuplicateItem",
    serverMessage: "Duplicate value",
  },
  {
    name: "learners per region of zero",
    example: FEDAVG,
    break: (spec) => {
      spec.workload.learnersPerRegion = 0;
    },
    path: "spec.workload.learnersPerRegion",
    reason: "BelowMinimum",
    serverMessage: "should be greater than or equal to 1",
  },
  {
    name: "checkpoint URI with an unsupported scheme",
    example: DILOCO,
    break: (spec) => {
      spec.checkpoint.uri = "ftp://checkpoints.example.org/run";
    },
    path: "spec.checkpoint.uri",
    reason: "PatternMismatch",
    serverMessage: "should match",
  },
  {
    name: "attestation policy reference changed after creation",
    example: FEDAVG,
    update: true,
    break: (spec) => {
      spec.attestation.policyRef.name = "testbed-permissive";
    },
    path: "spec.attestation.policyRef",
    reason: "PolicyRefImmutable",
    serverMessage: "attestation.policyRef is immutable",
  },
  {
    name: "rounds given as a string",
    example: FEDAVG,
    break: (spec) => {
      spec.rounds = "50";
    },
    path: "spec.rounds",
    reason: "WrongType",
    serverMessage: "must be of type integer",
  },
  // SovereignNode
  {
    name: "region using the hub's JetStream domain",
    example: REGION,
    break: (spec) => {
      spec.jetStreamDomain = "hub";
    },
    path: "spec.jetStreamDomain",
    reason: "JetStreamDomainReserved",
    serverMessage: 'jetStreamDomain "hub" is reserved for the hub',
  },
  {
    name: "checkpoints at the hub without checkpoint egress",
    example: REGION,
    break: (spec) => {
      spec.dataResidency.checkpointLocation = "Hub";
    },
    path: "spec.dataResidency.checkpointLocation",
    reason: "CheckpointEgressNotAllowed",
    serverMessage: "add Checkpoints to allowedEgress",
  },
  {
    name: "training data as an egress kind",
    example: REGION,
    break: (spec) => {
      spec.dataResidency.allowedEgress = ["ModelDeltas", "TrainingData"];
    },
    path: "spec.dataResidency.allowedEgress[1]",
    reason: "NotInEnum",
    serverMessage: 'Unsupported value: "TrainingData"',
  },
  {
    name: "jurisdiction spelled out",
    example: REGION,
    break: (spec) => {
      spec.jurisdiction = "Germany";
    },
    path: "spec.jurisdiction",
    reason: "PatternMismatch",
    serverMessage: "should match",
  },
  {
    name: "region without an attestation policy",
    example: REGION,
    break: (spec) => {
      delete spec.attestationPolicyRef;
    },
    path: "spec.attestationPolicyRef",
    reason: "Required",
    serverMessage: "Required value",
  },
  {
    name: "jurisdiction changed after registration",
    example: REGION,
    update: true,
    break: (spec) => {
      spec.jurisdiction = "FR";
    },
    path: "spec.jurisdiction",
    reason: "JurisdictionImmutable",
    serverMessage: "jurisdiction is immutable",
  },
  {
    name: "JetStream domain changed after registration",
    example: REGION,
    update: true,
    break: (spec) => {
      spec.jetStreamDomain = "berlin-2";
    },
    path: "spec.jetStreamDomain",
    reason: "JetStreamDomainImmutable",
    serverMessage: "jetStreamDomain is immutable",
  },
  // AttestationPolicy
  {
    name: "NRAS mode without NRAS settings",
    example: STRICT,
    break: (spec) => {
      delete spec.verification.nras;
    },
    path: "spec.verification.nras",
    reason: "NrasSettingsRequired",
    serverMessage: "mode NRAS needs verification.nras",
  },
  {
    name: "NRAS settings in Local mode",
    example: STRICT,
    break: (spec) => {
      spec.verification.mode = "Local";
    },
    path: "spec.verification.nras",
    reason: "NrasSettingsWithoutNras",
    serverMessage: "verification.nras applies only to mode NRAS",
  },
  {
    name: "Local reference settings in NRAS mode",
    example: STRICT,
    break: (spec) => {
      spec.verification.local = { fetch: false };
    },
    path: "spec.verification.local",
    reason: "LocalSettingsWithoutLocal",
    serverMessage: "verification.local applies only to mode Local",
  },
  {
    name: "plain-HTTP JWKS URL",
    example: STRICT,
    break: (spec) => {
      spec.verification.nras.jwksUrl = "http://nras.attestation.nvidia.com/.well-known/jwks.json";
    },
    path: "spec.verification.nras.jwksUrl",
    reason: "PatternMismatch",
    serverMessage: "should match",
  },
  {
    name: "AllowUnknown without a grace period",
    example: TESTBED,
    break: (spec) => {
      delete spec.ocsp.unknownGraceHours;
    },
    path: "spec.ocsp.unknownGraceHours",
    reason: "UnknownGraceHoursRequired",
    serverMessage: "AllowUnknown needs unknownGraceHours",
  },
  {
    name: "grace period with RequireGood",
    example: STRICT,
    break: (spec) => {
      spec.ocsp.unknownGraceHours = 12;
    },
    path: "spec.ocsp.unknownGraceHours",
    reason: "UnknownGraceHoursWithoutAllowUnknown",
    serverMessage: "unknownGraceHours applies only to policy AllowUnknown",
  },
  {
    name: "jitter as long as the period",
    example: STRICT,
    break: (spec) => {
      spec.reattestation.jitterSeconds = 900;
      spec.maxEvidenceAgeSeconds = 3600;
    },
    path: "spec.reattestation.jitterSeconds",
    reason: "JitterNotBelowPeriod",
    serverMessage: "jitterSeconds must be smaller than periodSeconds",
  },
  {
    name: "evidence expiring before re-attestation",
    example: STRICT,
    break: (spec) => {
      spec.maxEvidenceAgeSeconds = 900;
    },
    path: "spec.maxEvidenceAgeSeconds",
    reason: "EvidenceExpiresBeforeReattestation",
    serverMessage:
      "maxEvidenceAgeSeconds must be at least reattestation.periodSeconds + reattestation.jitterSeconds",
  },
  {
    name: "ignored measurements while all must match",
    example: STRICT,
    break: (spec) => {
      spec.ignoredMeasurementIndices = [9];
    },
    path: "spec.ignoredMeasurementIndices",
    reason: "IgnoredMeasurementsWithStrictMatch",
    serverMessage: "ignoredMeasurementIndices has no effect while requireAllMeasurementsMatch is true",
  },
  {
    name: "CC mode off",
    example: STRICT,
    break: (spec) => {
      spec.ccMode = "Off";
    },
    path: "spec.ccMode",
    reason: "NotInEnum",
    serverMessage: 'Unsupported value: "Off"',
  },
  {
    name: "no GPU architecture",
    example: STRICT,
    break: (spec) => {
      spec.gpuArchitectures = [];
    },
    path: "spec.gpuArchitectures",
    reason: "TooFewItems",
    serverMessage: "should have at least 1 items",
  },
  {
    name: "pre-Hopper architecture",
    example: STRICT,
    break: (spec) => {
      spec.gpuArchitectures = ["Ampere"];
    },
    path: "spec.gpuArchitectures[0]",
    reason: "NotInEnum",
    serverMessage: 'Unsupported value: "Ampere"',
  },
  {
    name: "driver version that is not a version",
    example: STRICT,
    break: (spec) => {
      spec.allowedDriverVersions = ["latest"];
    },
    path: "spec.allowedDriverVersions[0]",
    reason: "PatternMismatch",
    serverMessage: "should match",
  },
  // RegionWork
  {
    name: "work without a run",
    example: WORK,
    break: (spec) => {
      delete spec.run;
    },
    path: "spec.run",
    reason: "Required",
    serverMessage: "Required value",
  },
  {
    name: "run uid that is not a UID",
    example: WORK,
    break: (spec) => {
      spec.run.uid = "fedavg-mnist-1";
    },
    path: "spec.run.uid",
    reason: "PatternMismatch",
    serverMessage: "should match",
  },
  {
    name: "region that is not a DNS label",
    example: WORK,
    break: (spec) => {
      spec.region = "berlin.charite";
      spec.nats.subjectPrefix = "sovereign.berlin.charite.research.fedavg-mnist";
    },
    path: "spec.region",
    reason: "PatternMismatch",
    serverMessage: "should match",
  },
  {
    name: "region too long for its namespace",
    example: WORK,
    break: (spec) => {
      spec.region = "r".repeat(47);
      spec.nats.subjectPrefix = `sovereign.${spec.region}.research.fedavg-mnist`;
    },
    path: "spec.region",
    reason: "TooLong",
    serverMessage: "may not be more than 46",
  },
  {
    name: "negative round",
    example: WORK,
    break: (spec) => {
      spec.round = -1;
    },
    path: "spec.round",
    reason: "BelowMinimum",
    serverMessage: "should be greater than or equal to 0",
  },
  {
    name: "round beyond the run's last round",
    example: WORK,
    break: (spec) => {
      spec.round = 51;
    },
    path: "spec.round",
    reason: "RoundBeyondRounds",
    serverMessage: "round must not exceed rounds",
  },
  {
    name: "work without NATS subjects",
    example: WORK,
    break: (spec) => {
      delete spec.nats;
    },
    path: "spec.nats",
    reason: "Required",
    serverMessage: "Required value",
  },
  {
    name: "NATS subject prefix with a wildcard",
    example: WORK,
    break: (spec) => {
      spec.nats.subjectPrefix = "sovereign.berlin-charite.>";
    },
    path: "spec.nats.subjectPrefix",
    reason: "PatternMismatch",
    serverMessage: "should match",
  },
  {
    name: "NATS subject prefix of another region",
    example: WORK,
    break: (spec) => {
      spec.nats.subjectPrefix = "sovereign.paris-aphp.research.fedavg-mnist";
    },
    path: "spec.nats.subjectPrefix",
    reason: "SubjectPrefixOutsideRegion",
    serverMessage: "nats.subjectPrefix must start with sovereign.<region>.",
  },
  {
    name: "suspend given as a string",
    example: WORK,
    break: (spec) => {
      spec.suspend = "yes";
    },
    path: "spec.suspend",
    reason: "WrongType",
    serverMessage: "must be of type boolean",
  },
  {
    name: "work workload changed after creation",
    example: WORK,
    update: true,
    break: (spec) => {
      spec.workload.learnersPerRegion = 2;
    },
    path: "spec.workload",
    reason: "WorkloadImmutable",
    serverMessage: "workload is immutable",
  },
  {
    name: "work moved to another run",
    example: WORK,
    update: true,
    break: (spec) => {
      spec.run.uid = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
    },
    path: "spec.run",
    reason: "RunImmutable",
    serverMessage: "run is immutable",
  },
  {
    name: "work moved to another region",
    example: WORK,
    update: true,
    break: (spec) => {
      spec.region = "paris-aphp";
      spec.nats.subjectPrefix = "sovereign.paris-aphp.research.fedavg-mnist";
    },
    path: "spec.region",
    reason: "RegionImmutable",
    serverMessage: "region is immutable",
  },
  {
    name: "work attestation loosened after creation",
    example: WORK,
    update: true,
    break: (spec) => {
      spec.attestation.maxEvidenceAgeSeconds = 86400;
    },
    path: "spec.attestation",
    reason: "AttestationImmutable",
    serverMessage: "attestation is immutable",
  },
  {
    name: "work delta encoding changed after creation",
    example: WORK,
    update: true,
    break: (spec) => {
      spec.deltaEncoding.dtype = "int8";
    },
    path: "spec.deltaEncoding",
    reason: "DeltaEncodingImmutable",
    serverMessage: "deltaEncoding is immutable",
  },
  {
    name: "work rounds changed after creation",
    example: WORK,
    update: true,
    break: (spec) => {
      spec.rounds = 60;
    },
    path: "spec.rounds",
    reason: "RoundsImmutable",
    serverMessage: "rounds is immutable",
  },
  {
    name: "work NATS subjects changed after creation",
    example: WORK,
    update: true,
    break: (spec) => {
      spec.nats.jetStreamDomain = "berlin-2";
    },
    path: "spec.nats",
    reason: "NatsImmutable",
    serverMessage: "nats is immutable",
  },
  {
    name: "work round lowered",
    example: WORK,
    update: true,
    break: (spec) => {
      spec.round = 11;
    },
    path: "spec.round",
    reason: "RoundDecreased",
    serverMessage: "round may only increase",
  },
];

/** The example with the case applied, and the untouched example as the stored object for updates. */
export function buildCase(testCase: InvalidCase): {
  kind: Kind;
  original: ExampleObject;
  broken: ExampleObject;
} {
  const original = loadExample(testCase.example);
  const broken = structuredClone(original);
  testCase.break(broken.spec);
  return { kind: original.kind, original, broken };
}
