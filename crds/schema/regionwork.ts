/**
 * RegionWork: the work the hub hands to one region for one FederatedRun (the Open Cluster
 * Management ManifestWork pattern), namespaced on the hub.
 *
 * The hub operator writes one RegionWork per placed region into that region's hub namespace
 * `sovereign-region-<region>`. The region's member operator may only read RegionWorks in its own
 * namespace and write their status: it creates the learner pods in its own cluster from the spec
 * and reports back through status. The spec reuses the FederatedRun's sub-schemas, so the work a
 * region receives has exactly the shape the user wrote.
 *
 * Not checked by the API server: that spec.region equals the namespace suffix after
 * `sovereign-region-`. CEL rules of a CRD can read only metadata.name and metadata.generateName,
 * not metadata.namespace, so the member operator checks it and reports Applied=False with reason
 * InvalidWork.
 */
import {
  bool,
  conditions,
  immutable,
  int,
  int64,
  list,
  obj,
  objectName,
  observedGeneration,
  str,
  time,
} from "./common.ts";
import { regionWorkConditions } from "./conditions.ts";
import { attestation, deltaEncoding, workload } from "./federatedrun.ts";
import type { ResourceDefinition, Schema } from "./types.ts";

/** The hub namespace of a region's work is this prefix followed by the region's name. */
export const REGION_WORK_NAMESPACE_PREFIX = "sovereign-region-";

const DNS_LABEL_PATTERN = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/** A namespace name is a DNS label of at most 63 characters, prefix included. */
const MAX_REGION_LENGTH = 63 - REGION_WORK_NAMESPACE_PREFIX.length;
const UID_PATTERN = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$";
/** NATS subject tokens separated by dots; no wildcards (* and >) and no whitespace. */
const SUBJECT_PATTERN = "^[A-Za-z0-9_-]+(\\.[A-Za-z0-9_-]+)*$";

const RECREATE = "the hub deletes this RegionWork and writes a new one to change it";

const run = obj(
  "The FederatedRun this work belongs to; the member labels its learner pods with it and the hub matches status reports to the run by uid. Required. Immutable.",
  {
    namespace: str("Namespace of the FederatedRun on the hub.", {
      minLength: 1,
      maxLength: 63,
      pattern: DNS_LABEL_PATTERN,
    }),
    name: objectName("Name of the FederatedRun."),
    uid: str(
      "metadata.uid of the FederatedRun, so that work left over from a deleted run of the same name is recognised as stale.",
      { maxLength: 36, pattern: UID_PATTERN },
    ),
  },
  {
    required: ["namespace", "name", "uid"],
    "x-kubernetes-map-type": "atomic",
    tsName: "RunReference",
    rules: [immutable("run", "RunImmutable", `a RegionWork belongs to one FederatedRun; ${RECREATE}`)],
  },
);

const nats = obj(
  "Where the region's learners publish their deltas and read the global model. Required. Immutable.",
  {
    subjectPrefix: str(
      "NATS subject prefix for this run in this region, e.g. sovereign.<region>.<run namespace>.<run name>; learners publish deltas and read aggregates under it. Must start with sovereign.<region>. so a region only ever uses its own subjects. Required.",
      { minLength: 1, maxLength: 255, pattern: SUBJECT_PATTERN },
    ),
    jetStreamDomain: str(
      "JetStream domain of the region's NATS leaf node (its SovereignNode's spec.jetStreamDomain), where the learners' streams live. Required.",
      { minLength: 1, maxLength: 63, pattern: "^[A-Za-z0-9_-]+$" },
    ),
  },
  {
    required: ["subjectPrefix", "jetStreamDomain"],
    tsName: "RegionWorkNats",
    rules: [immutable("nats", "NatsImmutable", `streams already exist under these names; ${RECREATE}`)],
  },
);

export const regionWorkSpec: Schema = obj(
  "The work for one region, written by the hub. Everything is immutable once set except round and suspend, which the hub updates as the run advances or pauses.",
  {
    run,
    region: str(
      `Name of the SovereignNode (region) that does the work. Must equal the namespace suffix after "${REGION_WORK_NAMESPACE_PREFIX}"; the API server cannot check that (CEL cannot read metadata.namespace), so the member refuses a mismatch with Applied=False, reason InvalidWork. A DNS label of at most ${MAX_REGION_LENGTH} characters. Required. Immutable.`,
      {
        minLength: 1,
        maxLength: MAX_REGION_LENGTH,
        pattern: DNS_LABEL_PATTERN,
        rules: [immutable("region", "RegionImmutable", `work is never moved between regions; ${RECREATE}`)],
      },
    ),
    workload: {
      ...workload,
      rules: [
        immutable("workload", "WorkloadImmutable", `learner pods already run this template; ${RECREATE}`),
      ],
    },
    attestation: {
      ...attestation,
      rules: [
        immutable(
          "attestation",
          "AttestationImmutable",
          `learners were released under these guarantees; ${RECREATE}`,
        ),
      ],
    },
    deltaEncoding: {
      ...deltaEncoding,
      rules: [
        immutable(
          "deltaEncoding",
          "DeltaEncodingImmutable",
          `the hub decodes every delta of the run the same way; ${RECREATE}`,
        ),
      ],
    },
    round: int(
      "The round the region should work on; the hub raises it when a round closes. 0 means the run has not started its first round. Rounds. May only increase.",
      {
        minimum: 0,
        maximum: 1000000,
        default: 0,
        rules: [
          {
            cel: "self >= oldSelf",
            message: "round may only increase; a region never goes back to an earlier round",
            reason: "RoundDecreased",
            holds: (self, oldSelf) => oldSelf === undefined || self >= oldSelf,
          },
        ],
      },
    ),
    rounds: int(
      "Total outer rounds of the run (the FederatedRun's spec.rounds); after round rounds the region's work is done. Rounds. Required. Immutable.",
      {
        minimum: 1,
        maximum: 1000000,
        rules: [
          immutable(
            "rounds",
            "RoundsImmutable",
            `the member decides when its work is done by it; ${RECREATE}`,
          ),
        ],
      },
    ),
    nats,
    suspend: bool(
      "Pauses the region's part of the run: while true the member keeps no learner pods running (it deletes them); set back to false, it recreates them and resumes at round.",
      { default: false },
    ),
  },
  {
    required: ["run", "region", "workload", "attestation", "rounds", "nats"],
    tsName: "RegionWorkSpec",
    rules: [
      {
        cel: "!has(self.round) || self.round <= self.rounds",
        message: "round must not exceed rounds, the run's last round; lower round or check rounds",
        reason: "RoundBeyondRounds",
        fieldPath: ".round",
        holds: (self) => self.round <= self.rounds,
      },
      {
        cel: "self.nats.subjectPrefix.startsWith('sovereign.' + self.region + '.')",
        message:
          "nats.subjectPrefix must start with sovereign.<region>. (the spec's region), so that a region only publishes under its own subjects; e.g. sovereign.berlin-charite.research.fedavg-mnist",
        reason: "SubjectPrefixOutsideRegion",
        fieldPath: ".nats.subjectPrefix",
        holds: (self) => self.nats.subjectPrefix.startsWith(`sovereign.${self.region}.`),
      },
    ],
  },
);

const HEX_DIGEST = "^[0-9a-f]{64}$";

const learnerKey = obj(
  "One learner pod's key binding, recorded when its scheduling gate was released.",
  {
    learner: str("Name of the learner pod (its SOVEREIGN_LEARNER_NAME).", { minLength: 1, maxLength: 253 }),
    publicKey: str("The learner's Ed25519 public key: ed25519: followed by base64url of the 32 raw bytes.", {
      pattern: "^ed25519:[A-Za-z0-9_-]{43}$",
    }),
    node: str("The GPU node the learner was pinned to.", { minLength: 1, maxLength: 253 }),
    verdictDigest: str(
      "SHA-256 (hex) of the canonical JSON of the passing verdict that released the learner; the region's audit log holds the verdict under this digest.",
      { pattern: HEX_DIGEST },
    ),
    policyDigest: str(
      "SHA-256 (hex) of the canonical JSON of the AttestationPolicy spec the verdict was judged against, so the hub can check it is the policy it holds.",
      { pattern: HEX_DIGEST },
    ),
    attestedAt: time("When the verdict was reached."),
    nonce: str(
      "The attestation nonce (hex) the GPUs signed: SHA-256 over challenge, spec.run.uid, round and the raw public key (docs/attestation.md).",
      { pattern: HEX_DIGEST },
    ),
    challenge: str("The random challenge (base64url, 32 bytes) the nonce was derived from.", {
      pattern: "^[A-Za-z0-9_-]{22,88}$",
    }),
    round: int("spec.round when the learner was admitted; the nonce commits to it. Rounds.", { minimum: 0 }),
    revokedAt: time(
      "Set when the key stops counting: its node was quarantined (the failing verdict's time) or the learner pod is gone. Deltas the hub receives after it are refused. Unset while the key is valid.",
    ),
    revokedReason: str(
      "Why the key was revoked: NodeQuarantined or LearnerDeleted, then a colon and the attestation reason codes (e.g. NodeQuarantined:MeasurementMismatch). Empty while valid.",
      { maxLength: 1024 },
    ),
  },
  {
    required: ["learner", "publicKey", "node", "verdictDigest", "attestedAt", "nonce", "challenge", "round"],
    tsName: "LearnerKey",
  },
);

export const regionWorkStatus: Schema = obj(
  "Observed state, written by the region's member operator through the status subresource.",
  {
    phase: str(
      "Pending: learners are being created or wait for scheduling or attestation; Running: learners are training; Suspended: spec.suspend is true and the member keeps no learners; Succeeded: the region finished spec.rounds rounds; Failed: the work cannot proceed, see conditions and message.",
      { enum: ["Pending", "Running", "Suspended", "Succeeded", "Failed"] },
    ),
    learnersDesired: int(
      "Learner pods the region should run (spec.workload.learnersPerRegion, or 0 while suspended).",
      { minimum: 0 },
    ),
    learnersScheduled: int("Learner pods that exist and are bound to a node.", { minimum: 0 }),
    learnersReady: int("Learner pods running and ready on attested GPU nodes.", { minimum: 0 }),
    learnersWaitingForAttestation: int(
      "Learner pods still held by the sovereign.ai/attestation scheduling gate until their GPU node is attested.",
      { minimum: 0 },
    ),
    unattested: bool(
      "True when learners were released without attestation because the member operator runs with attestation disabled (development only); the hub should treat such deltas as unattested.",
    ),
    learnerKeys: list(
      "The delta-signing keys of the region's learners, each bound by its attestation nonce to a passing verdict of the GPU node the learner was admitted to. The hub accepts a learner's delta only when it is signed with the key listed here for that learner and arrived before the entry's revokedAt. Written by the member; empty while attestation is disabled.",
      learnerKey,
      { maxItems: 1024, "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["publicKey"] },
    ),
    lastDeltaRound: int(
      "Latest round for which the region published its delta. Unset before the first delta.",
      { minimum: 0 },
    ),
    bytesSent: int64("Total encoded delta bytes the region published for this work. Bytes.", {
      minimum: 0,
    }),
    observedGeneration: observedGeneration("RegionWork"),
    conditions: conditions("RegionWork", regionWorkConditions),
    message: str("Human-readable summary of the phase, e.g. why the work failed. May be empty.", {
      maxLength: 4096,
    }),
  },
  { tsName: "RegionWorkStatus" },
);

export const regionWork: ResourceDefinition = {
  kind: "RegionWork",
  plural: "regionworks",
  singular: "regionwork",
  shortNames: ["rw"],
  scope: "Namespaced",
  description: `RegionWork is the work the hub hands to one region for one FederatedRun (the Open Cluster Management ManifestWork pattern). The hub operator writes it into the region's hub namespace ${REGION_WORK_NAMESPACE_PREFIX}<region>; the region's member operator, which may only read it and write its status, creates the learner pods in its own cluster and reports back through status. Not written by users.`,
  spec: regionWorkSpec,
  status: regionWorkStatus,
  printerColumns: [
    {
      name: "Run",
      type: "string",
      jsonPath: ".spec.run.name",
      description: "FederatedRun the work belongs to.",
    },
    { name: "Region", type: "string", jsonPath: ".spec.region", description: "Region doing the work." },
    { name: "Round", type: "integer", jsonPath: ".spec.round", description: "Round the region works on." },
    {
      name: "Ready",
      type: "integer",
      jsonPath: ".status.learnersReady",
      description: "Learner pods ready on attested GPUs.",
    },
    {
      name: "Desired",
      type: "integer",
      jsonPath: ".status.learnersDesired",
      description: "Learner pods the region should run.",
    },
    { name: "Phase", type: "string", jsonPath: ".status.phase", description: "Lifecycle phase." },
    {
      name: "Age",
      type: "date",
      jsonPath: ".metadata.creationTimestamp",
      description: "Time since creation.",
    },
  ],
};
