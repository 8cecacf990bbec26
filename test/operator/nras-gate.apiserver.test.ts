// The attestation gate under an NRAS-mode AttestationPolicy, on the testbed's real API servers: a
// member (in-process, testbed evidence source reading faults from node annotations) sends each
// node's evidence to the testbed's NRAS stand-in, which appraises it with our verifier and signs
// an EAT with a test key; the member checks that token against the stand-in's JWKS. A learner is
// admitted to an attested node; a node whose evidence is made bad through the fault annotation is
// quarantined, its learner stopped and re-admitted to the other node. NVIDIA's own service is not
// exercised (no network): see docs/attestation.md.
import { generateKeyPairSync } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  CoreV1Api,
  CustomObjectsApi,
  KubeConfig,
  PatchStrategy,
  setHeaderOptions,
  type V1Node,
  type V1Pod,
} from "@kubernetes/client-node";
import test from "ava";
import { type AuditEntry, ed25519CheckpointSigner, MemoryAuditStore } from "../../attestation/audit/mod.ts";
import { TESTBED_POLICY_SPEC, testbedTrustAnchors } from "../../attestation/testbed/mod.ts";
import { installCrds } from "../../crds/install.ts";
import type { AttestationPolicySpec } from "../../crds/types.generated.ts";
import { issueRegionCredential } from "../../operator/hub/credentials.ts";
import { NODE_ANNOTATIONS } from "../../operator/member/attestation-rules.ts";
import {
  EVIDENCE_FAULT_ANNOTATION,
  TestbedEvidenceSource,
} from "../../operator/member/attestation-testbed-source.ts";
import { ATTESTED_LABEL } from "../../operator/member/registration.ts";
import {
  ATTESTATION_GATE,
  LEARNER_NAMESPACE,
  WORK_LABEL,
  workId,
} from "../../operator/member/work-controller.ts";
import { silentLogger } from "../../operator/runtime/log.ts";
import { OperatorMetrics } from "../../operator/runtime/metrics.ts";
import { eventually, holdGpuNodeLabels, uniqueName, useTestbed } from "../testbed/harness.ts";
import { TestbedNras } from "../testbed/nras-appraiser.ts";
import { createRegionWork, startGatedMember } from "./gate-fixture.ts";

const merge = setHeaderOptions("Content-Type", PatchStrategy.MergePatch);
/** A node attestation appraises 8 GPUs; under a loaded machine allow for several. */
const SLOW = 90_000;

test.serial(
  "NRAS mode: a learner is admitted to an attested node; a node whose evidence goes bad is quarantined",
  async (t) => {
    const tb = await useTestbed();
    await holdGpuNodeLabels(t);
    const admin = tb.kubeConfig("hub");
    await installCrds(admin);
    const custom = admin.makeApiClient(CustomObjectsApi);
    const cluster = tb.regions.at(-1) as string;
    const regionKc = tb.kubeConfig(cluster);
    const core = regionKc.makeApiClient(CoreV1Api);
    const [nodeA, nodeB] = tb
      .cluster(cluster)
      .nodes.filter((n) => n.gpus > 0)
      .map((n) => n.name) as [string, string];
    const region = uniqueName("nras");
    const policyName = uniqueName("nras-policy");
    const workName = "train";
    const id = workId(workName);

    const dir = await mkdtemp(join(tmpdir(), "nras-gate-"));
    const nras = await TestbedNras.start({ dir });
    t.teardown(async () => {
      await nras.close();
      await rm(dir, { recursive: true, force: true });
    });

    // Only these two nodes are attested (other tests add GPU nodes to the shared cluster); what
    // the test changes on them is put back afterwards.
    const fleetLabel = "sovereign.ai/test-gate";
    const ours = [...Object.values(NODE_ANNOTATIONS), EVIDENCE_FAULT_ANNOTATION];
    const original = new Map<string, V1Node>();
    for (const n of [nodeA, nodeB]) original.set(n, await core.readNode({ name: n }));
    t.teardown(async () => {
      for (const [name, node] of original) {
        const labels = {
          [ATTESTED_LABEL]: node.metadata?.labels?.[ATTESTED_LABEL] ?? null,
          [fleetLabel]: null,
        };
        const annotations = Object.fromEntries(ours.map((k) => [k, node.metadata?.annotations?.[k] ?? null]));
        await core
          .patchNode({ name, body: { metadata: { labels, annotations } } }, merge)
          .catch(() => undefined);
      }
    });
    for (const n of [nodeA, nodeB]) {
      await core.patchNode(
        {
          name: n,
          body: {
            metadata: {
              labels: { [fleetLabel]: region },
              annotations: { [EVIDENCE_FAULT_ANNOTATION]: null },
            },
          },
        },
        merge,
      );
    }
    const cred = await issueRegionCredential(admin, region, { ttlSeconds: 3600 });
    const hubKc = new KubeConfig();
    hubKc.loadFromString(cred.kubeconfig);
    const spec: AttestationPolicySpec = {
      ...TESTBED_POLICY_SPEC,
      verification: {
        mode: "NRAS",
        nras: { url: nras.url, acceptedIssuers: [nras.issuer], jwksUrl: nras.jwksUrl },
      },
    };
    const store = new MemoryAuditStore();
    const metrics = new OperatorMetrics({ defaultMetrics: false });
    await startGatedMember({
      t,
      region,
      cluster,
      regionKc,
      hubKc,
      admin,
      core,
      custom,
      policyName,
      workId: id,
      metrics,
      log: silentLogger,
      attestation: {
        policy: { name: policyName, generation: 1, spec },
        anchors: testbedTrustAnchors(),
        source: new TestbedEvidenceSource({ faultsFromNodes: regionKc }),
        nras: { ca: nras.ca },
        nodeSelector: `nvidia.com/gpu.present=true,${fleetLabel}=${region}`,
      },
      audit: { store, signer: ed25519CheckpointSigner(generateKeyPairSync("ed25519").privateKey) },
    });

    // One learner of 5 GPUs: it fits on either node, never on both.
    await createRegionWork(custom, { name: workName, region, cluster, policyName, learners: 1, gpus: 5 });
    const gated = (p: V1Pod) => p.spec?.schedulingGates?.some((g) => g.name === ATTESTATION_GATE) ?? false;
    const runningLearner = (what: string, not?: string) =>
      eventually(
        async () => {
          const pods = (
            await core.listNamespacedPod({
              namespace: LEARNER_NAMESPACE,
              labelSelector: `${WORK_LABEL}=${id}`,
            })
          ).items.filter((p) => !p.metadata?.deletionTimestamp);
          const p = pods[0];
          return pods.length === 1 &&
            p &&
            !gated(p) &&
            p.status?.phase === "Running" &&
            p.metadata?.uid !== not
            ? p
            : undefined;
        },
        what,
        SLOW,
      );

    // 1. Both nodes attest through NRAS; the learner is admitted to one of them.
    const first = await runningLearner("the learner admitted through an NRAS verdict");
    const onNode = first.spec?.nodeName as string;
    t.true([nodeA, nodeB].includes(onNode));
    t.true(nras.requests > 0, "the member asked the NRAS stand-in");
    const verdicts = () =>
      (store.entries as AuditEntry[]).flatMap((e) => (e.kind === "AttestationVerdict" ? [e.body] : []));
    const admittedBy = verdicts().find((v) => v.node === onNode && v.verdict.passed);
    t.is(admittedBy?.verdict.mode, "NRAS");
    t.is(admittedBy?.verdict.devices.length, 8, "all 8 GPUs appraised");
    const attested = await core.readNode({ name: onNode });
    t.is(attested.metadata?.labels?.[ATTESTED_LABEL], "true");

    // 2. The learner's node goes bad (a measurement of its last GPU, set through the fault
    // annotation as on a running member): NRAS says so, the node is quarantined, its learner stopped
    // and re-admitted to the other node.
    const other = onNode === nodeA ? nodeB : nodeA;
    await core.patchNode(
      {
        name: onNode,
        body: {
          metadata: {
            annotations: {
              [EVIDENCE_FAULT_ANNOTATION]: "measurement-mismatch",
              [NODE_ANNOTATIONS.reattest]: "nras-1",
            },
          },
        },
      },
      merge,
    );
    const quarantined = await eventually(
      async () => {
        const n = await core.readNode({ name: onNode });
        return n.metadata?.labels?.[ATTESTED_LABEL] === "false" ? n : undefined;
      },
      `${onNode} quarantined under NRAS`,
      SLOW,
    );
    t.regex(quarantined.metadata?.annotations?.[NODE_ANNOTATIONS.reason] ?? "", /MeasurementMismatch/);
    t.true(
      (store.entries as AuditEntry[]).some(
        (e) =>
          e.kind === "NodeQuarantined" &&
          e.body.node === onNode &&
          e.body.reasons.includes("MeasurementMismatch"),
      ),
    );
    const refused = verdicts().find((v) => v.node === onNode && !v.verdict.passed);
    t.is(refused?.verdict.mode, "NRAS");
    const moved = await runningLearner(
      "the stopped learner re-admitted to the other node",
      first.metadata?.uid,
    );
    t.is(moved.spec?.nodeName, other);
  },
);
