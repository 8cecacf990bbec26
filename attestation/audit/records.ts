/**
 * Builders for the records other parts of the operator append, so that subjects are named one
 * way: `node/<region>/<node>`, `pod/<region>/<namespace>/<name>`, `delta/<run>/<round>/<region>/<learner>`,
 * `run/<run>/round/<round>`. An auditor filters an export by subject prefix.
 */
import type {
  AttestationVerdictBody,
  AuditRecord,
  DeltaAcceptedBody,
  DeltaRefusedBody,
  NodeQuarantinedBody,
  PodAdmittedBody,
  RoundClosedBody,
} from "./entry.ts";

export const attestationVerdictRecord = (body: AttestationVerdictBody): AuditRecord => ({
  kind: "AttestationVerdict",
  subject: `node/${body.region}/${body.node}`,
  body,
});

export const podAdmittedRecord = (body: PodAdmittedBody): AuditRecord => ({
  kind: "PodAdmitted",
  subject: `pod/${body.region}/${body.pod.namespace}/${body.pod.name}`,
  body,
});

export const nodeQuarantinedRecord = (body: NodeQuarantinedBody): AuditRecord => ({
  kind: "NodeQuarantined",
  subject: `node/${body.region}/${body.node}`,
  body,
});

export const deltaAcceptedRecord = (body: DeltaAcceptedBody): AuditRecord => ({
  kind: "DeltaAccepted",
  subject: `delta/${body.run}/${body.round}/${body.region}/${body.learner}`,
  body,
});

export const deltaRefusedRecord = (body: DeltaRefusedBody): AuditRecord => ({
  kind: "DeltaRefused",
  subject: `delta/${body.run}/${body.round}/${body.region}/${body.learner ?? "unknown"}`,
  body,
});

export const roundClosedRecord = (body: RoundClosedBody): AuditRecord => ({
  kind: "RoundClosed",
  subject: `run/${body.run}/round/${body.round}`,
  body,
});
