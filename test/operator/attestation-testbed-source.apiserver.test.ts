// The testbed evidence source's fault annotation, read from a real node of a region cluster: a
// name that is no fault is refused with EvidenceFaultUnknown (it used to be skipped, leaving the
// node's evidence good while whoever set the annotation expected it to fail), and the member's
// attester turns that refusal into a failed verdict that names the wrong fault.
import { CoreV1Api, PatchStrategy, setHeaderOptions, type V1Node } from "@kubernetes/client-node";
import test from "ava";
import { TESTBED_POLICY_SPEC, testbedTrustAnchors } from "../../attestation/testbed/mod.ts";
import { NodeAttester } from "../../operator/member/attestation-attester.ts";
import {
  EVIDENCE_FAULT_ANNOTATION,
  parseEvidenceFaults,
  TESTBED_NODE_FAULTS,
  TestbedEvidenceSource,
} from "../../operator/member/attestation-testbed-source.ts";
import { EvidenceError, isEvidenceError } from "../../operator/member/evidence-source.ts";
import { realClock } from "../../operator/runtime/clock.ts";
import { silentLogger } from "../../operator/runtime/log.ts";
import { uniqueName, useTestbed } from "../testbed/harness.ts";

const merge = setHeaderOptions("Content-Type", PatchStrategy.MergePatch);

test("the annotation's value: known names, blanks and empty items read; any other name refused by code", (t) => {
  t.deepEqual(parseEvidenceFaults(""), []);
  t.deepEqual(parseEvidenceFaults(" , "), []);
  t.deepEqual(parseEvidenceFaults(" wrong-nonce ,, replay,"), ["wrong-nonce", "replay"]);
  t.deepEqual(parseEvidenceFaults(TESTBED_NODE_FAULTS.join(",")), [...TESTBED_NODE_FAULTS]);
  for (const value of ["cc-of", "wrong-nonce,Revoked", "stale,bad_signature,replay", "none", "*"]) {
    const err = t.throws(() => parseEvidenceFaults(value, "node n1"), { instanceOf: EvidenceError });
    t.is(err?.reason, "EvidenceMalformed");
    t.regex(
      err?.message ?? "",
      /^EvidenceMalformed: EvidenceFaultUnknown: node n1's annotation testbed\.sovereign\.ai\/evidence-fault names "/,
    );
    t.regex(err?.message ?? "", /use a comma-separated list of wrong-nonce, cc-off, .*unreachable/);
  }
  t.regex(
    t.throws(() => parseEvidenceFaults("cc-of,revoke,stale"))?.message ?? "",
    /names "cc-of", "revoke", which are no faults/,
  );
});

test("a running member's source refuses a node whose annotation names an unknown fault, and the node fails", async (t) => {
  const tb = await useTestbed();
  const region = tb.regions[0] as string;
  const kc = tb.kubeConfig(region);
  const core = kc.makeApiClient(CoreV1Api);
  // A node of its own without GPU labels: no member adopts it or rewrites its annotations.
  const name = uniqueName("fault-node");
  await core.createNode({
    body: { metadata: { name, annotations: { [EVIDENCE_FAULT_ANNOTATION]: "wrong-nonce,cc-of" } } },
  });
  t.teardown(async () => {
    await core.deleteNode({ name }).catch(() => undefined);
  });
  const source = new TestbedEvidenceSource({ faultsFromNodes: kc });
  const nonce = new Uint8Array(32).fill(9);

  const err = await t.throwsAsync(source.collect({ node: name, nonce, gpus: 1 }));
  t.true(isEvidenceError(err));
  t.regex(
    err?.message ?? "",
    new RegExp(`EvidenceFaultUnknown: node ${name}'s annotation .* names "cc-of", which is no fault`),
  );

  // Through the attester: a failed verdict naming the bad fault, not a node left attested.
  const node = (await core.readNode({ name })) as V1Node;
  node.status = { allocatable: { "nvidia.com/gpu": "1" } };
  const attester = new NodeAttester({
    region,
    regionKc: kc,
    policy: { name: "testbed", generation: 1, spec: TESTBED_POLICY_SPEC },
    anchors: testbedTrustAnchors(),
    source,
    audit: () => Promise.reject(new Error("a refused challenge is not audited as a verdict")),
    clock: realClock,
    log: silentLogger,
    getNode: (n) => (n === name ? node : undefined),
    ownPods: () => [],
  });
  const outcome = await attester.attest(name, nonce, "admission");
  t.is(outcome.kind, "verdict");
  if (outcome.kind === "verdict") {
    t.false(outcome.passed);
    t.deepEqual(outcome.node.reasons, ["EvidenceMalformed"]);
    t.regex(outcome.node.message, /EvidenceFaultUnknown: .* "cc-of"/);
  }

  // Spelled right, the fault is applied: the node's GPU reports confidential computing off.
  await core.patchNode(
    { name, body: { metadata: { annotations: { [EVIDENCE_FAULT_ANNOTATION]: "cc-off" } } } },
    merge,
  );
  const evidence = await source.collect({ node: name, nonce, gpus: 1 });
  t.is(evidence.devices.length, 1);
  t.is(evidence.devices[0]?.declaredCcMode, "off");
});
