/**
 * Condition types and their reason codes, per kind. They live beside the schemas because the
 * CRD descriptions, docs/api.md and (later) the operator's status writers all draw on them;
 * a test keeps docs/api.md listing every one.
 */
export interface ConditionCatalog {
  readonly [type: string]: { readonly meaning: string; readonly reasons: Readonly<Record<string, string>> };
}

export const federatedRunConditions = {
  Placed: {
    meaning: "regions have been chosen for the run",
    reasons: {
      RegionsSelected: "At least placement.minRegions eligible regions were chosen; the message lists them.",
      NoMatchingRegions:
        "No accepted, ready SovereignNode matches regionSelector and the jurisdiction rules.",
      TooFewRegions:
        "Fewer eligible regions than placement.minRegions; placement is retried when regions change.",
      RequiredJurisdictionUnavailable: "A jurisdiction in requiredJurisdictions has no eligible region.",
      PolicyNotFound:
        "attestation.policyRef names an AttestationPolicy that does not exist; nothing is placed until it does.",
    },
  },
  Ready: {
    meaning: "every placed region has its learners running on attested GPUs",
    reasons: {
      LearnersReady: "All placed regions report learnersReady equal to learnersPerRegion.",
      LearnersPending: "Some learners are not yet scheduled or are waiting for attestation.",
      AttestationFailed:
        "A learner's GPU failed the AttestationPolicy; the message names the region and node.",
    },
  },
  Progressing: {
    meaning: "rounds are advancing",
    reasons: {
      RoundInProgress: "The current round is collecting deltas.",
      WaitingForModel:
        "The model the next round starts from is not published yet; for round 1, upload the initial model as round-0 of the run's model bucket.",
      RoundAggregated: "The last round reached quorum and its aggregate was published.",
      RunCompleted: "All spec.rounds rounds finished; phase is Succeeded.",
      RunFailed: "The run stopped; the message says why and phase is Failed.",
      Suspended:
        "spec.suspend is true: the regions' learners are stopped and the open round's clock is stopped until it is set back to false.",
    },
  },
  Degraded: {
    meaning: "the run continues with reduced participation or missed quorum",
    reasons: {
      AsExpected: "No region is quarantined and the last round reached quorum.",
      RegionQuarantined:
        "A region's deltas are excluded (bad signature, failed attestation or invalid values).",
      QuorumMissed: "The last round hit quorum.maxRoundSeconds before quorum.minRegions regions reported.",
      RegionsLate:
        "The last round closed after its grace window without some eligible regions; the message names them.",
    },
  },
} as const satisfies ConditionCatalog;

export const sovereignNodeConditions = {
  Joined: {
    meaning: "the region's member operator has registered with the hub",
    reasons: {
      RegistrationReceived: "The member operator created or updated this SovereignNode.",
      NeverConnected: "No heartbeat has been received since the object was created.",
    },
  },
  Accepted: {
    meaning: "a hub administrator accepted the region (spec.accepted is true)",
    reasons: {
      AcceptedByHub: "spec.accepted is true.",
      AwaitingAcceptance: "spec.accepted is false; a hub administrator must set it to true.",
    },
  },
  Attested: {
    meaning: "GPU nodes in the region satisfy the referenced AttestationPolicy",
    reasons: {
      AllNodesAttested: "Every GPU node passed attestation within the evidence age limit.",
      SomeNodesFailing: "Some GPU nodes failed; status.gpuNodes.failing counts them.",
      EvidenceExpired: "No GPU node has evidence younger than the policy's maxEvidenceAgeSeconds.",
      PolicyNotFound: "spec.attestationPolicyRef names an AttestationPolicy that does not exist.",
    },
  },
  Ready: {
    meaning: "the region can receive work: joined, accepted, attested and heartbeating",
    reasons: {
      RegionReady: "All prerequisites hold.",
      HeartbeatMissed:
        "No heartbeat within the expected interval; the message gives the last heartbeat time.",
      NotAccepted: "Accepted is False.",
      NotAttested: "Attested is False.",
    },
  },
  Degraded: {
    meaning: "the region works with reduced capacity",
    reasons: {
      AsExpected: "Nothing is degraded.",
      NodesFailingAttestation: "Some GPU nodes are excluded after failing attestation.",
      MemberOperatorOutdated: "The member operator version is older than the hub supports without limits.",
    },
  },
  Quarantined: {
    meaning: "the hub excludes the region's deltas from every run",
    reasons: {
      NotQuarantined: "The region's deltas are accepted.",
      InvalidDeltas: "The region sent deltas that failed signature, shape or value checks.",
      AttestationRevoked: "A verdict the region's learners relied on was revoked (e.g. OCSP revoked).",
    },
  },
} as const satisfies ConditionCatalog;

export const attestationPolicyConditions = {
  Ready: {
    meaning: "the policy is usable for verification",
    reasons: {
      PolicyValid: "Verification settings were loaded (for NRAS, the JWKS was fetched).",
      JwksUnavailable: "verification.nras.jwksUrl could not be fetched; the message gives the next attempt.",
    },
  },
} as const satisfies ConditionCatalog;

export const regionWorkConditions = {
  LearnersReady: {
    meaning: "the region's learner pods for this work are running on attested GPU nodes",
    reasons: {
      LearnersRunning: "status.learnersReady equals status.learnersDesired.",
      LearnersPending: "Some learner pods are not yet scheduled or not yet running.",
      AttestationPending:
        "Some learner pods wait behind the sovereign.ai/attestation scheduling gate until their GPU node is attested.",
      LearnersFailed: "A learner pod failed; the message names the pod and its exit reason.",
      Suspended:
        "spec.suspend is true: the member deleted the work's learner pods and creates none until it is false.",
      NoAttestedNode:
        "Learner pods are gated and no GPU node in the region is attested under the policy with enough free GPUs (all failed, are quarantined or could not be challenged); the message gives each node's reason.",
      PolicyMismatch:
        "The work names another AttestationPolicy than the one this region's member verifies against; learner pods stay gated until the names agree.",
    },
  },
  Applied: {
    meaning: "the member operator turned the work into learner pods in the region's cluster",
    reasons: {
      PodsCreated: "The learner pods for spec.workload exist in the region's cluster.",
      PodCreateFailed: "Creating a learner pod failed; the message gives the API error and the next retry.",
      InvalidWork:
        "The member refuses the work, e.g. spec.region is not the region of the namespace it was found in; the message says why.",
    },
  },
} as const satisfies ConditionCatalog;
