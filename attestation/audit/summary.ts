/**
 * One line per entry saying what it attests, for the auditor reading a verification report.
 * Bodies are read defensively: a summary describes whatever a verified entry holds and never
 * throws, since a body's shape is the writer's business and the chain does not depend on it.
 */
import { canonicalJson, sha256Hex } from "../verdict.ts";
import { isPlainObject, type RawAuditEntry } from "./entry.ts";

type Body = Record<string, unknown>;

const text = (body: Body, key: string): string => {
  const v = Object.hasOwn(body, key) ? body[key] : undefined;
  return typeof v === "string" || typeof v === "number" || typeof v === "boolean" ? String(v) : "?";
};
const obj = (body: Body, key: string): Body => {
  const v = Object.hasOwn(body, key) ? body[key] : undefined;
  return isPlainObject(v) ? v : {};
};
const list = (body: Body, key: string): string => {
  const v = Object.hasOwn(body, key) ? body[key] : undefined;
  if (!Array.isArray(v)) return "?";
  return v.length === 0 ? "none" : v.map((x) => (typeof x === "string" ? x : "?")).join(", ");
};
/** Digests shortened the way git shortens commits: enough to find the full one in the entry. */
const short = (digest: string): string => {
  const m = /^(sha256:)?([0-9a-f]{64})$/.exec(digest);
  return m ? `${m[1] ?? ""}${m[2]?.slice(0, 12)}…` : digest;
};
/** `${lead} <digest>` when the body has the key, else nothing. */
const optional = (body: Body, key: string, lead: string): string =>
  Object.hasOwn(body, key) ? `${lead} ${short(text(body, key))}` : "";

const summaries: ReadonlyMap<string, (body: Body) => string> = new Map([
  ["LogOpened", (b: Body) => `log ${text(b, "logId")} opened by ${text(b, "openedBy")}`],
  [
    "AttestationVerdict",
    (b: Body) => {
      const verdict = obj(b, "verdict");
      const policy = obj(b, "policy");
      const passed = verdict.passed === true;
      const outcome = passed ? "PASSED" : `FAILED (${list(verdict, "reasons")})`;
      return (
        `node ${text(b, "node")} in ${text(b, "region")} ${outcome} ${text(verdict, "mode")} attestation ` +
        `under policy ${text(policy, "name")} generation ${text(policy, "generation")} ` +
        `(policy ${short(text(verdict, "policyDigest"))}); evidence ${short(text(verdict, "evidenceDigest"))}, ` +
        `nonce ${short(text(verdict, "nonce"))}, verdict ${short(sha256Hex(canonicalJson(verdict)))}`
      );
    },
  ],
  [
    "PodAdmitted",
    (b: Body) => {
      const pod = obj(b, "pod");
      return (
        `pod ${text(pod, "namespace")}/${text(pod, "name")} admitted to node ${text(b, "node")} in ` +
        `${text(b, "region")} on verdict ${short(text(b, "verdictDigest"))} (nonce ${short(text(b, "nonce"))})`
      );
    },
  ],
  [
    "NodeQuarantined",
    (b: Body) =>
      `node ${text(b, "node")} in ${text(b, "region")} quarantined for ${list(b, "reasons")}` +
      `${optional(b, "verdictDigest", " on verdict")}: ${text(b, "message")}`,
  ],
  [
    "DeltaAccepted",
    (b: Body) =>
      `delta of learner ${text(b, "learner")} in ${text(b, "region")} accepted for run ${text(b, "run")} ` +
      `round ${text(b, "round")}: manifest ${short(text(b, "manifestDigest"))}, key ${text(b, "learnerKey")}`,
  ],
  [
    "DeltaRefused",
    (b: Body) =>
      `delta of learner ${Object.hasOwn(b, "learner") ? text(b, "learner") : "(unknown)"} in ${text(b, "region")} ` +
      `refused for run ${text(b, "run")} round ${text(b, "round")}: ${text(b, "reason")}: ${text(b, "message")}` +
      `${optional(b, "manifestDigest", "; manifest")}`,
  ],
  [
    "RoundClosed",
    (b: Body) => {
      const met = text(b, "outcome") === "QuorumMet";
      return (
        `run ${text(b, "run")} round ${text(b, "round")} closed: ${met ? "quorum met" : "quorum MISSED"} ` +
        `(required ${text(obj(b, "quorum"), "required")}); contributed: ${list(b, "contributed")}; ` +
        `missing: ${list(b, "missing")}` +
        (Array.isArray(b.lateFolded) && b.lateFolded.length > 0
          ? `; late deltas folded in: ${list(b, "lateFolded")}`
          : "") +
        `${optional(b, "modelDigest", "; model")}`
      );
    },
  ],
  [
    "Checkpoint",
    (b: Body) =>
      `checkpoint: entries 0..${Number(text(b, "size")) - 1} signed by key ${text(b, "keyId")}, head ${short(text(b, "head"))}`,
  ],
]);

export function describeEntry(entry: RawAuditEntry): string {
  const summary = summaries.get(entry.kind);
  return summary === undefined
    ? `${entry.kind} about ${entry.subject} (a kind this verifier does not know; its chain is still checked)`
    : summary(entry.body);
}
