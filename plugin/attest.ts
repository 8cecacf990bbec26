// `kubectl sovereign attest <node>`: a GPU node's latest attestation verdict and why, as the
// region's member operator left it on the node (label sovereign.ai/attested and the
// sovereign.ai/attestation-* annotations; the whole verdict is in the member's audit log).
import { CoreV1Api, type KubeConfig, type V1Node } from "@kubernetes/client-node";
import { verdictFromAnnotations } from "../operator/member/attestation-attester.ts";
import { GPU_OPERATOR_LABELS, NODE_ANNOTATIONS } from "../operator/member/attestation-rules.ts";
import { ATTESTED_LABEL } from "../operator/member/registration.ts";
import { type Options, outputFormat } from "./args.ts";
import { fromApiError, PluginError, usageError } from "./errors.ts";
import { loadKubeConfig } from "./kube.ts";
import { age, oneLine } from "./table.ts";

export const ATTEST_HELP = `Show a GPU node's latest attestation verdict and why, in a region's cluster.

Usage:
  kubectl sovereign attest NODE [-o json] [--kubeconfig FILE] [--context REGION-CONTEXT]

Reads what the region's member operator recorded on the node: attested or not (label
${ATTESTED_LABEL}), when the verdict was reached, how old its evidence is, the policy it was
judged against (sha256 of the AttestationPolicy spec), the failing reason codes and message, and
since when the node is quarantined. The verdict digest names the AttestationVerdict entry in the
member's audit log (kubectl sovereign audit export), which holds the full verdict.

Exit 0 when the node was found (attested or not; see "state", or .attested with -o json), 1 when it
is missing or not a GPU node. The context must reach the region's cluster (get nodes).

Example:
  kubectl sovereign attest region-a-gpu-0 --context region-a
`;

export type AttestationState = "Attested" | "Quarantined" | "NotAttested" | "NeverAttested";

export interface NodeAttestation {
  node: string;
  state: AttestationState;
  attested: boolean;
  /** The member's label as found: "true", "false", or null when absent. */
  label: string | null;
  gpus: number;
  verdict: {
    passed: boolean;
    reasons: string[];
    message: string;
    digest: string | null;
    evaluatedAt: string;
    evidenceCollectedAt: string;
    evidenceAgeSeconds: number;
    policyDigest: string;
  } | null;
  quarantinedAt: string | null;
  /** What to do, when the state needs an explanation. */
  hint: string | null;
}

const iso = (ms: number) => new Date(ms).toISOString();

/** The node's attestation standing at `now`, from its labels and annotations only. */
export function describeNodeAttestation(node: V1Node, now: number): NodeAttestation {
  const name = node.metadata?.name ?? "";
  const labels = node.metadata?.labels ?? {};
  const annotations = node.metadata?.annotations ?? {};
  // A node that lost its GPU label but still carries a verdict is still worth showing.
  const recorded = labels[ATTESTED_LABEL] !== undefined || NODE_ANNOTATIONS.reason in annotations;
  if (labels[GPU_OPERATOR_LABELS.present] !== "true" && !recorded) {
    throw new PluginError(
      "NotAGpuNode",
      `node ${name} is not labelled ${GPU_OPERATOR_LABELS.present}=true, so no member operator attests it; list GPU nodes with kubectl get nodes -l ${GPU_OPERATOR_LABELS.present}=true`,
    );
  }
  const label = labels[ATTESTED_LABEL] ?? null;
  const latest = verdictFromAnnotations(node);
  const quarantined = annotations[NODE_ANNOTATIONS.quarantinedAt];
  const quarantinedMs = Date.parse(quarantined ?? "");
  const gpus = Number(node.status?.allocatable?.["nvidia.com/gpu"] ?? 0);
  let state: AttestationState;
  let hint: string | null = null;
  if (label === "true") state = "Attested";
  else if (label === "false") state = "Quarantined";
  else if (latest) {
    state = "NotAttested";
    hint = `the node carries a verdict but no ${ATTESTED_LABEL} label; the member operator has not enforced it yet, or someone removed the label`;
  } else {
    state = "NeverAttested";
    hint =
      "no verdict on this node: is the region's member operator running with an AttestationPolicy, and does its agent reach the node? Force a challenge with kubectl annotate node NODE sovereign.ai/reattest=$(date +%s) --overwrite";
  }
  return {
    node: name,
    state,
    attested: state === "Attested",
    label,
    gpus: Number.isSafeInteger(gpus) && gpus > 0 ? gpus : 0,
    verdict: latest
      ? {
          passed: latest.passed,
          reasons: latest.reasons,
          message: latest.message,
          digest: latest.digest ?? null,
          evaluatedAt: iso(latest.evaluatedAt),
          evidenceCollectedAt: iso(latest.collectedAt),
          evidenceAgeSeconds: Math.max(0, Math.floor((now - latest.collectedAt) / 1000)),
          policyDigest: latest.policyDigest,
        }
      : null,
    quarantinedAt: state === "Quarantined" && !Number.isNaN(quarantinedMs) ? iso(quarantinedMs) : null,
    hint,
  };
}

export function formatNodeAttestation(a: NodeAttestation, now: number): string {
  const since = (at: string) => `${at} (${age(Date.parse(at), now)} ago)`;
  const lines = [
    `node ${oneLine(a.node)}: ${a.state}${a.quarantinedAt ? ` since ${since(a.quarantinedAt)}` : ""}`,
  ];
  const row = (k: string, v: string) => lines.push(`  ${k.padEnd(16)}${v}`);
  const v = a.verdict;
  if (v) {
    row("verdict", `${v.passed ? "passed" : "FAILED"} at ${since(v.evaluatedAt)}`);
    if (v.reasons.length > 0) row("reasons", oneLine(v.reasons.join(", ")));
    if (v.message) row("message", oneLine(v.message, 1024));
    row("evidence", `collected ${v.evidenceCollectedAt}, ${age(Date.parse(v.evidenceCollectedAt), now)} old`);
    row("policy", `sha256:${oneLine(v.policyDigest)}`);
    if (v.digest)
      row("verdict digest", `${oneLine(v.digest)} (AttestationVerdict in the member's audit log)`);
  }
  row("gpus", String(a.gpus));
  row("label", `${ATTESTED_LABEL}=${a.label ?? "(absent)"}`);
  if (a.hint) row("note", a.hint);
  return `${lines.join("\n")}\n`;
}

export async function attestCommand(
  args: string[],
  options: Options,
  io: { stdout(text: string): void; now(): number },
  kc: KubeConfig = loadKubeConfig(options),
): Promise<number> {
  if (args.length !== 1) throw usageError("attest takes exactly one node name, e.g. attest region-a-gpu-0");
  const name = args[0] as string;
  const format = outputFormat(options);
  let node: V1Node;
  try {
    node = await kc.makeApiClient(CoreV1Api).readNode({ name });
  } catch (err) {
    throw fromApiError(err, "region", `read node ${name}`, {
      reason: "NodeNotFound",
      message: `the cluster of this context has no node ${JSON.stringify(name)}; is --context the region's cluster? (kubectl get nodes -l ${GPU_OPERATOR_LABELS.present}=true)`,
    });
  }
  const now = io.now();
  const a = describeNodeAttestation(node, now);
  io.stdout(format === "json" ? `${JSON.stringify(a, null, 2)}\n` : formatNodeAttestation(a, now));
  return 0;
}
