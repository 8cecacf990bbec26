// The testbed's evidence source: for a kwok GPU node it mints, per GPU, what a real H100 in CC
// mode and NVIDIA's services would hand the verifier (attestation/testbed/), under the testbed
// PKI that only testbedTrustAnchors() trusts. Faults are set per node, so a test can make one
// node's evidence go bad while the others stay good. Never use it outside the testbed: anyone can
// mint evidence under the testbed roots (main.ts loads it only for --evidence-source=testbed).
//
// Testbed only, for a member running as its own process: given the region's KubeConfig, a fault
// can also be set on the node itself, as the annotation `testbed.sovereign.ai/evidence-fault`
// (comma-separated fault names; remove it to heal the node; an unknown name fails the node with
// EvidenceFaultUnknown rather than being skipped). `make demo --fail-attestation`
// uses it; add `sovereign.ai/reattest` to have the node challenged at once.
import { createHash } from "node:crypto";
import { CoreV1Api, type KubeConfig } from "@kubernetes/client-node";
import {
  type MintedEvidence,
  mintTestbedEvidence,
  TESTBED_FAULTS,
  type TestbedFault,
} from "../../attestation/testbed/mod.ts";
import { type Clock, realClock } from "../runtime/clock.ts";
import {
  EvidenceError,
  type EvidenceRequest,
  type EvidenceSource,
  type NodeEvidence,
} from "./evidence-source.ts";

/**
 * A verifier fault (TESTBED_FAULTS, on the node's last GPU only: one bad GPU must fail the whole
 * node), or one of the node's own: `replay` answers with the evidence of the node's previous
 * challenge (NonceMismatch), `missing-gpu` leaves one GPU out (EvidenceIncomplete),
 * `unreachable` does not answer (EvidenceUnavailable).
 */
export type TestbedNodeFault = TestbedFault | "replay" | "missing-gpu" | "unreachable";

/** Testbed only: the node annotation a running member reads its evidence faults from. */
export const EVIDENCE_FAULT_ANNOTATION = "testbed.sovereign.ai/evidence-fault";

/** Every fault name the annotation may hold. */
export const TESTBED_NODE_FAULTS: readonly TestbedNodeFault[] = [
  ...TESTBED_FAULTS,
  "replay",
  "missing-gpu",
  "unreachable",
];

const isNodeFault = (f: string): f is TestbedNodeFault =>
  (TESTBED_NODE_FAULTS as readonly string[]).includes(f);

/**
 * Reads EVIDENCE_FAULT_ANNOTATION's value (comma-separated fault names; blanks and empty items
 * are ignored). A name that is no fault is refused, never skipped: a typo would otherwise leave
 * the node's evidence good while the person who set it expects it to fail. The refusal is an
 * EvidenceMalformed EvidenceError whose message starts with EvidenceFaultUnknown, so the node
 * fails its attestation and the verdict says which name is wrong.
 */
export function parseEvidenceFaults(value: string, node = "the node"): TestbedNodeFault[] {
  const names = value
    .split(",")
    .map((f) => f.trim())
    .filter((f) => f !== "");
  const unknown = names.filter((f) => !isNodeFault(f));
  if (unknown.length > 0) {
    throw new EvidenceError(
      "EvidenceMalformed",
      `EvidenceFaultUnknown: ${node}'s annotation ${EVIDENCE_FAULT_ANNOTATION} names ${unknown.map((f) => JSON.stringify(f.slice(0, 64))).join(", ")}, which ${unknown.length === 1 ? "is no fault" : "are no faults"}; use a comma-separated list of ${TESTBED_NODE_FAULTS.join(", ")}, or remove the annotation to heal the node`,
    );
  }
  return names as TestbedNodeFault[];
}

/** A GPU uuid in NVIDIA's shape, stable per node and index. */
export function testbedGpuUuid(node: string, index: number): string {
  const h = createHash("sha256").update(`sovereign-testbed/node/${node}/gpu/${index}`).digest("hex");
  return `GPU-${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

export class TestbedEvidenceSource implements EvidenceSource {
  readonly name = "testbed";
  readonly #clock: Clock;
  readonly #faults = new Map<string, TestbedNodeFault[]>();
  readonly #previous = new Map<string, NodeEvidence>();
  readonly #challenges = new Map<string, number>();
  readonly #core: CoreV1Api | undefined;

  /** With `faultsFromNodes` (the region's cluster), faults are also read from each node's annotation. */
  constructor(opts: { clock?: Clock; faultsFromNodes?: KubeConfig } = {}) {
    this.#clock = opts.clock ?? realClock;
    this.#core = opts.faultsFromNodes?.makeApiClient(CoreV1Api);
  }

  /** The faults the node's EVIDENCE_FAULT_ANNOTATION names; an unknown name is refused (parseEvidenceFaults). */
  async #annotated(node: string): Promise<TestbedNodeFault[]> {
    if (!this.#core) return [];
    const n = await this.#core.readNode({ name: node }).catch(() => undefined);
    return parseEvidenceFaults(n?.metadata?.annotations?.[EVIDENCE_FAULT_ANNOTATION] ?? "", `node ${node}`);
  }

  /** Sets (or with no fault, clears) the faults of one node's next answers. */
  setFault(node: string, fault?: TestbedNodeFault | readonly TestbedNodeFault[]): void {
    if (fault === undefined || (Array.isArray(fault) && fault.length === 0)) this.#faults.delete(node);
    else this.#faults.set(node, typeof fault === "string" ? [fault] : [...fault]);
  }

  /** How often the node was challenged: to see that the member spreads and repeats its challenges. */
  challenges(node: string): number {
    return this.#challenges.get(node) ?? 0;
  }

  async collect(request: EvidenceRequest): Promise<NodeEvidence> {
    this.#challenges.set(request.node, this.challenges(request.node) + 1);
    const faults = this.#faults.get(request.node) ?? (await this.#annotated(request.node));
    if (faults.includes("unreachable")) {
      throw new EvidenceError(
        "EvidenceUnavailable",
        `the testbed agent on ${request.node} does not answer (fault injected)`,
      );
    }
    if (faults.includes("replay")) {
      const old = this.#previous.get(request.node);
      if (old) return old;
    }
    const at = new Date(this.#clock.now());
    const gpus = faults.includes("missing-gpu") ? Math.max(0, request.gpus - 1) : request.gpus;
    const tamper = faults.filter((f): f is TestbedFault => f !== "replay" && f !== "missing-gpu");
    // A replay with nothing recorded yet answers another challenge: evidence for a nonce of its own.
    const nonce = faults.includes("replay")
      ? new Uint8Array(createHash("sha256").update(request.nonce).update("replayed").digest())
      : request.nonce;
    const minted: MintedEvidence[] = await Promise.all(
      Array.from({ length: gpus }, (_, i) =>
        mintTestbedEvidence({
          nonce,
          at,
          gpu: { uuid: testbedGpuUuid(request.node, i) },
          ...(i === gpus - 1 && tamper.length > 0 ? { tamper } : {}),
        }),
      ),
    );
    const collectedAt = minted.map((m) => m.collectedAt).sort()[0];
    const evidence: NodeEvidence = {
      devices: minted.map((m) => m.device),
      ...(collectedAt ? { collectedAt } : {}),
    };
    if (!faults.includes("replay")) this.#previous.set(request.node, evidence);
    return evidence;
  }
}
