/**
 * AttestationPolicy: what NVIDIA confidential-computing evidence from a GPU node must show
 * before learner pods are released onto it. Cluster-scoped; referenced by SovereignNodes and
 * FederatedRuns.
 */
import { bool, conditions, int, list, obj, observedGeneration, str } from "./common.ts";
import { attestationPolicyConditions } from "./conditions.ts";
import type { ResourceDefinition, Schema } from "./types.ts";

const httpsUrl = (description: string, extra: Partial<Schema> = {}): Schema =>
  str(description, { maxLength: 2048, pattern: "^https://[^\\s]+$", ...extra });

const ocsp = obj(
  "Certificate revocation checks (OCSP) on the GPU's device certificate chain and on the RIMs' signing certificates.",
  {
    policy: str(
      "RequireGood: every certificate must have a fresh OCSP 'good' answer; AllowUnknown: an 'unknown' answer or unreachable responder is tolerated for unknownGraceHours after the last 'good'. 'revoked' always fails.",
      { enum: ["RequireGood", "AllowUnknown"], default: "RequireGood" },
    ),
    unknownGraceHours: int(
      "AllowUnknown only: how long after the last 'good' answer an 'unknown' one is tolerated. Hours. Required for AllowUnknown.",
      { minimum: 1, maximum: 168 },
    ),
    requireNonce: bool("Require OCSP responses to echo a request nonce, defeating replayed responses.", {
      default: true,
    }),
  },
  {
    default: {},
    tsName: "OcspPolicy",
    rules: [
      {
        cel: "!has(self.policy) || self.policy != 'AllowUnknown' || has(self.unknownGraceHours)",
        message:
          "AllowUnknown needs unknownGraceHours, how long an unknown OCSP answer is tolerated, e.g. 24",
        reason: "UnknownGraceHoursRequired",
        fieldPath: ".unknownGraceHours",
        k8sReason: "FieldValueRequired",
        holds: (self) => self.policy !== "AllowUnknown" || self.unknownGraceHours !== undefined,
      },
      {
        cel: "(has(self.policy) && self.policy == 'AllowUnknown') || !has(self.unknownGraceHours)",
        message:
          "unknownGraceHours applies only to policy AllowUnknown; remove it or set policy: AllowUnknown",
        reason: "UnknownGraceHoursWithoutAllowUnknown",
        fieldPath: ".unknownGraceHours",
        k8sReason: "FieldValueForbidden",
        holds: (self) => self.policy === "AllowUnknown" || self.unknownGraceHours === undefined,
      },
    ],
  },
);

const verification = obj(
  "Who appraises the evidence: the operator itself (Local) or NVIDIA's Remote Attestation Service (NRAS), whose signed token the operator then checks.",
  {
    mode: str(
      "Local verifies evidence and RIMs in-cluster (works offline with a RIM mirror); NRAS sends evidence to NRAS and accepts its signed EAT token.",
      { enum: ["Local", "NRAS"], default: "Local" },
    ),
    nras: obj(
      "NRAS settings. Required with mode NRAS, forbidden otherwise.",
      {
        url: httpsUrl("NRAS endpoint evidence is posted to.", {
          default: "https://nras.attestation.nvidia.com/v4/attest/gpu",
        }),
        acceptedIssuers: list(
          "Token issuers (the JWT iss claim) accepted, e.g. https://nras.attestation.nvidia.com. At least one.",
          str("One issuer.", { maxLength: 512 }),
          { minItems: 1, maxItems: 16, "x-kubernetes-list-type": "set" },
        ),
        jwksUrl: httpsUrl("Where the token signing keys (JWKS) are fetched from. Required."),
      },
      { required: ["acceptedIssuers", "jwksUrl"], tsName: "NrasSettings" },
    ),
    local: obj(
      "Where mode Local gets the references a node does not supply itself: the RIMs its report names and the OCSP answers for its certificates. Only with mode Local. Unset: fetched from NVIDIA's services (the defaults below).",
      {
        fetch: bool(
          "Whether the operator fetches missing RIMs and OCSP answers from rimServiceUrl and ocspUrl. false: offline (air-gapped), only what the node supplies is used (a RIM mirror), and anything missing fails the node with RimNotFound or OcspUnavailable.",
          { default: true },
        ),
        rimServiceUrl: httpsUrl(
          "Base URL of the RIM service; a RIM is fetched as GET <rimServiceUrl><RIM id>, answered with NVIDIA's JSON (the RIM XML in base64 in its rim field). Put a mirror's URL here to keep RIM traffic in-house.",
          { default: "https://rim.attestation.nvidia.com/v1/rim/" },
        ),
        ocspUrl: httpsUrl(
          "OCSP responder the certificates' revocation status is asked of (POST application/ocsp-request, a SHA-384 CertID, a nonce when ocsp.requireNonce).",
          { default: "https://ocsp.ndis.nvidia.com/" },
        ),
      },
      { tsName: "LocalVerificationSettings" },
    ),
  },
  {
    default: {},
    tsName: "Verification",
    rules: [
      {
        cel: "!has(self.mode) || self.mode != 'NRAS' || has(self.nras)",
        message: "mode NRAS needs verification.nras with acceptedIssuers and jwksUrl",
        reason: "NrasSettingsRequired",
        fieldPath: ".nras",
        k8sReason: "FieldValueRequired",
        holds: (self) => self.mode !== "NRAS" || self.nras !== undefined,
      },
      {
        cel: "(has(self.mode) && self.mode == 'NRAS') || !has(self.nras)",
        message: "verification.nras applies only to mode NRAS; remove it or set mode: NRAS",
        reason: "NrasSettingsWithoutNras",
        fieldPath: ".nras",
        k8sReason: "FieldValueForbidden",
        holds: (self) => self.mode === "NRAS" || self.nras === undefined,
      },
      {
        cel: "!has(self.mode) || self.mode == 'Local' || !has(self.local)",
        message: "verification.local applies only to mode Local; remove it or set mode: Local",
        reason: "LocalSettingsWithoutLocal",
        fieldPath: ".local",
        k8sReason: "FieldValueForbidden",
        holds: (self) => self.mode === "Local" || self.local === undefined,
      },
    ],
  },
);

const reattestation = obj(
  "How often attested nodes are challenged again, so a node that changes state loses its attestation.",
  {
    periodSeconds: int("Interval between re-attestations of one node. Seconds.", {
      minimum: 60,
      maximum: 604800,
      default: 3600,
    }),
    jitterSeconds: int(
      "Random extra delay up to this much per node, so a region's nodes are not all challenged at once. Seconds.",
      { minimum: 0, maximum: 86400, default: 300 },
    ),
  },
  {
    default: {},
    tsName: "Reattestation",
    rules: [
      {
        cel: "!has(self.jitterSeconds) || !has(self.periodSeconds) || self.jitterSeconds < self.periodSeconds",
        message: "jitterSeconds must be smaller than periodSeconds; lower the jitter or lengthen the period",
        reason: "JitterNotBelowPeriod",
        fieldPath: ".jitterSeconds",
        holds: (self) => self.jitterSeconds < self.periodSeconds,
      },
    ],
  },
);

const VERSION_PATTERN = "^[0-9]+(\\.[0-9]+){1,3}$";
const VBIOS_PATTERN = "^[0-9A-Fa-f]{2}(\\.[0-9A-Fa-f]{2}){4}$";

export const attestationPolicySpec: Schema = obj(
  "What a GPU node's attestation evidence must show.",
  {
    gpuArchitectures: list(
      "GPU architectures accepted; confidential computing needs Hopper or newer. At least one.",
      str("One architecture.", { enum: ["Hopper", "Blackwell"] }),
      { minItems: 1, maxItems: 2, "x-kubernetes-list-type": "set", default: ["Hopper", "Blackwell"] },
    ),
    ccMode: str(
      "Confidential-computing mode the GPU must report: On (single-GPU CC), ProtectedPCIe (multi-GPU CC over NVLink), or DevTools (CC with debugging enabled; for testbeds only, never production).",
      { enum: ["On", "ProtectedPCIe", "DevTools"], default: "On" },
    ),
    allowedDriverVersions: list(
      "GPU driver versions accepted, e.g. 570.133.20. Empty accepts any driver whose measurements match its RIM.",
      str("One driver version.", { maxLength: 32, pattern: VERSION_PATTERN }),
      { maxItems: 64, "x-kubernetes-list-type": "set" },
    ),
    allowedVbiosVersions: list(
      "VBIOS versions accepted, e.g. 96.00.9F.00.01. Empty accepts any VBIOS whose measurements match its RIM.",
      str("One VBIOS version.", { maxLength: 14, pattern: VBIOS_PATTERN }),
      { maxItems: 64, "x-kubernetes-list-type": "set" },
    ),
    allowedRimIds: list(
      "Reference Integrity Manifest identifiers accepted (driver or VBIOS RIM ids). Empty accepts any RIM signed by NVIDIA.",
      str("One RIM identifier.", { minLength: 1, maxLength: 256 }),
      { maxItems: 128, "x-kubernetes-list-type": "set" },
    ),
    requireAllMeasurementsMatch: bool(
      "Whether every runtime measurement must equal its RIM golden value. When false, the indices in ignoredMeasurementIndices may differ.",
      { default: true },
    ),
    ignoredMeasurementIndices: list(
      "Measurement indices allowed to differ from the RIM (known benign mismatches). Only when requireAllMeasurementsMatch is false. Empty ignores none.",
      int("One measurement index.", { minimum: 0, maximum: 4095 }),
      { maxItems: 64, "x-kubernetes-list-type": "set" },
    ),
    maxEvidenceAgeSeconds: int(
      "Evidence older than this no longer counts: the node loses its attested status until re-attested. Must cover a full re-attestation period including jitter. Seconds.",
      { minimum: 60, maximum: 604800, default: 7200 },
    ),
    ocsp,
    verification,
    reattestation,
  },
  {
    tsName: "AttestationPolicySpec",
    rules: [
      {
        cel: "!has(self.ignoredMeasurementIndices) || size(self.ignoredMeasurementIndices) == 0 || (has(self.requireAllMeasurementsMatch) && !self.requireAllMeasurementsMatch)",
        message:
          "ignoredMeasurementIndices has no effect while requireAllMeasurementsMatch is true; set requireAllMeasurementsMatch: false or remove the indices",
        reason: "IgnoredMeasurementsWithStrictMatch",
        fieldPath: ".ignoredMeasurementIndices",
        k8sReason: "FieldValueForbidden",
        holds: (self) =>
          (self.ignoredMeasurementIndices ?? []).length === 0 || !self.requireAllMeasurementsMatch,
      },
      {
        cel: "!has(self.maxEvidenceAgeSeconds) || !has(self.reattestation) || !has(self.reattestation.periodSeconds) || !has(self.reattestation.jitterSeconds) || self.maxEvidenceAgeSeconds >= self.reattestation.periodSeconds + self.reattestation.jitterSeconds",
        message:
          "maxEvidenceAgeSeconds must be at least reattestation.periodSeconds + reattestation.jitterSeconds, or evidence expires before the node is re-attested and it flaps; raise maxEvidenceAgeSeconds or shorten the period",
        reason: "EvidenceExpiresBeforeReattestation",
        fieldPath: ".maxEvidenceAgeSeconds",
        holds: (self) =>
          self.reattestation === undefined ||
          self.maxEvidenceAgeSeconds >= self.reattestation.periodSeconds + self.reattestation.jitterSeconds,
      },
    ],
  },
);

export const attestationPolicyStatus: Schema = obj(
  "Observed state, written by the hub operator.",
  {
    boundRegions: int("SovereignNodes that reference this policy.", { minimum: 0 }),
    conditions: conditions("AttestationPolicy", attestationPolicyConditions),
    observedGeneration: observedGeneration("AttestationPolicy"),
  },
  { tsName: "AttestationPolicyStatus" },
);

export const attestationPolicy: ResourceDefinition = {
  kind: "AttestationPolicy",
  plural: "attestationpolicies",
  singular: "attestationpolicy",
  shortNames: ["ap", "attpol"],
  scope: "Cluster",
  description:
    "AttestationPolicy states what NVIDIA confidential-computing evidence a GPU node must present (architecture, CC mode, driver/VBIOS/RIMs, measurements, certificate revocation, freshness) before learner pods may run on it.",
  spec: attestationPolicySpec,
  status: attestationPolicyStatus,
  printerColumns: [
    { name: "Mode", type: "string", jsonPath: ".spec.verification.mode", description: "Local or NRAS." },
    { name: "CC", type: "string", jsonPath: ".spec.ccMode", description: "Required CC mode." },
    {
      name: "Max-Age",
      type: "integer",
      jsonPath: ".spec.maxEvidenceAgeSeconds",
      description: "Evidence age limit in seconds.",
    },
    {
      name: "Regions",
      type: "integer",
      jsonPath: ".status.boundRegions",
      description: "SovereignNodes using it.",
    },
    {
      name: "Age",
      type: "date",
      jsonPath: ".metadata.creationTimestamp",
      description: "Time since creation.",
    },
  ],
};
