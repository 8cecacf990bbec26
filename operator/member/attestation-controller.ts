// The re-attestation loop, one key per GPU node. Reconcile: fetch the node (gone → forget it);
// if it is due — never attested, its GPU operator CC labels or the `sovereign.ai/reattest`
// annotation changed, or its jittered period since its latest verdict (the loop's own or an
// admission's) ran out — challenge it with a fresh random nonce;
// then enforce its standing (label, annotations, quarantine) and requeue for the next due time
// or the moment its evidence expires, whichever is first. Every period carries its own jitter,
// so nodes attested together drift apart instead of being challenged together for ever.
import { randomBytes } from "node:crypto";
import type { V1Node } from "@kubernetes/client-node";
import type { Clock } from "../runtime/clock.ts";
import type { ReconcileResult } from "../runtime/controller.ts";
import type { Logger } from "../runtime/log.ts";
import type { AttestationPurpose, AttestOutcome, MemberPolicy, NodeRecord } from "./attestation-attester.ts";
import {
  attestationInputs,
  ccPrefilter,
  type NodeState,
  reattestationDelayMs,
  unavailableBackoffMs,
} from "./attestation-rules.ts";

export const CONTROLLER_NAME = "attestation";

/** What the loop needs of NodeAttester (a narrow seam, so the schedule is tested with a fake clock). */
export interface NodeAttesterApi {
  readonly policy: MemberPolicy;
  record(name: string): NodeRecord;
  forget(name: string): void;
  state(name: string): NodeState;
  withNode<T>(name: string, fn: () => Promise<T>): Promise<T>;
  attest(name: string, nonce: Uint8Array, purpose: AttestationPurpose): Promise<AttestOutcome>;
  enforce(name: string): Promise<NodeState>;
}

export interface NodeAttestationDeps {
  attester: NodeAttesterApi;
  getNode: (name: string) => V1Node | undefined;
  clock: Clock;
  random?: () => number;
  nonce?: () => Uint8Array;
  log?: Logger;
}

export function nodeAttestationReconciler(
  deps: NodeAttestationDeps,
): (key: string) => Promise<ReconcileResult | undefined> {
  const random = deps.random ?? Math.random;
  const nonce = deps.nonce ?? (() => new Uint8Array(randomBytes(32)));
  const { attester, clock } = deps;
  return async (name) => {
    const node = deps.getNode(name);
    if (!node) {
      attester.forget(name);
      return undefined;
    }
    const rec = attester.record(name);
    const reattestation = attester.policy.spec.reattestation;
    const inputs = attestationInputs(node);
    if (rec.inputs !== undefined && rec.inputs !== inputs) {
      deps.log?.debug("the node's CC labels or reattest annotation changed: challenging it now", {
        node: name,
        before: rec.inputs,
        now: inputs,
      });
      rec.dueAt = clock.now();
      rec.scheduledAt = clock.now();
    }
    rec.inputs = inputs;
    // A node the GPU operator does not call CC-ready is not worth a first challenge; one that
    // was attested is challenged as usual, and fails if its GPUs really left CC mode.
    if (!rec.latest && !ccPrefilter(node, attester.policy.spec.ccMode).ok) return undefined;
    await attester.withNode(name, async () => {
      // Any verdict restarts the node's period, whoever asked for it: a node just challenged to
      // admit a learner needs no second challenge for the loop.
      const latestAt = rec.latest?.evaluatedAt ?? Number.NEGATIVE_INFINITY;
      if (latestAt > (rec.scheduledAt ?? Number.NEGATIVE_INFINITY)) {
        rec.dueAt = latestAt + reattestationDelayMs(reattestation, random);
        rec.scheduledAt = latestAt;
      }
      if (rec.dueAt <= clock.now()) {
        const outcome = await attester.attest(name, nonce(), "reattestation");
        rec.dueAt =
          clock.now() +
          (outcome.kind === "unavailable"
            ? unavailableBackoffMs(rec.errors, reattestation, random)
            : reattestationDelayMs(reattestation, random));
        rec.scheduledAt = Math.max(clock.now(), rec.latest?.evaluatedAt ?? 0);
      }
      await attester.enforce(name);
    });
    const state = attester.state(name);
    const next = Math.min(
      rec.dueAt,
      state.state === "Attested" ? state.expiresAt + 1 : Number.POSITIVE_INFINITY,
    );
    return { requeueAfterMs: Math.max(1, next - clock.now()) };
  };
}
