// The attestation gate on the testbed's real API servers: a member (in-process, with the
// testbed evidence source) and its region's two kwok GPU nodes (8 GPUs each). Learners stay
// gated until a node attests, are pinned and released with a key bound to the verdict, and a
// node whose evidence goes bad is quarantined — its learner stopped and its key revoked —
// while the learner on the other node keeps running. Replayed evidence is refused. The audit
// export verifies. The test labels and annotates the region's GPU nodes and restores them.
import { generateKeyPairSync } from "node:crypto";
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
import {
  type AuditEntry,
  ed25519CheckpointSigner,
  exportAuditLog,
  MemoryAuditStore,
  trustedKey,
  verifyAuditExport,
} from "../../attestation/audit/mod.ts";
import { TESTBED_POLICY_SPEC, testbedTrustAnchors } from "../../attestation/testbed/mod.ts";
import { installCrds } from "../../crds/install.ts";
import type { LearnerKey, RegionWork, SovereignNode } from "../../crds/types.generated.ts";
import { issueRegionCredential } from "../../operator/hub/credentials.ts";
import { regionNamespace } from "../../operator/hub/region-access.ts";
import { learnerKeyBound } from "../../operator/learner-keys.ts";
import {
  LEARNER_KEY_FILE,
  LEARNER_KEY_MOUNT,
  learnerKeySecretName,
  POD_ANNOTATIONS,
  publicKeyOfSecret,
} from "../../operator/member/attestation-keys.ts";
import { NODE_ANNOTATIONS } from "../../operator/member/attestation-rules.ts";
import { TestbedEvidenceSource } from "../../operator/member/attestation-testbed-source.ts";
import { ATTESTED_LABEL } from "../../operator/member/registration.ts";
import {
  ATTESTATION_GATE,
  LEARNER_NAMESPACE,
  WORK_LABEL,
  workId,
} from "../../operator/member/work-controller.ts";
import { jsonLogger, silentLogger } from "../../operator/runtime/log.ts";
import { OperatorMetrics } from "../../operator/runtime/metrics.ts";
import { eventually, holdGpuNodeLabels, uniqueName, useTestbed } from "../testbed/harness.ts";
import { createRegionWork, startGatedMember } from "./gate-fixture.ts";

const GROUP = { group: "sovereign.ai", version: "v1alpha1" };
const merge = setHeaderOptions("Content-Type", PatchStrategy.MergePatch);
/** A node attestation verifies 8 GPUs (about 2.5 s of CPU); under a loaded machine allow for several. */
const SLOW = 60_000;

test.serial(
  "learners are admitted only to attested GPU nodes, and a node that fails attestation is quarantined",
  async (t) => {
    const started = Date.now();
    const debug = (what: string) => {
      if (process.env.DEBUG_GATE) console.error(`${((Date.now() - started) / 1000).toFixed(1)} s: ${what}`);
    };
    const tb = await useTestbed();
    await holdGpuNodeLabels(t);
    debug("holding the GPU node label lock");
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
    const region = uniqueName("gate");
    const policyName = uniqueName("policy");
    const workName = "train";
    const id = workId(workName);
    const metrics = new OperatorMetrics({ defaultMetrics: false });

    // The member attests only these two nodes (other tests and benchmarks add GPU nodes of
    // their own to the shared cluster); what the test changes on them is put back afterwards.
    const fleetLabel = "sovereign.ai/test-gate";
    const ours = [...Object.values(NODE_ANNOTATIONS)];
    const original = new Map<string, V1Node>();
    for (const n of [nodeA, nodeB]) original.set(n, await core.readNode({ name: n }));
    const restoreNodes = async () => {
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
    };

    // Teardowns run last-registered first: this one after the member has stopped.
    t.teardown(restoreNodes);
    for (const n of [nodeA, nodeB]) {
      await core.patchNode({ name: n, body: { metadata: { labels: { [fleetLabel]: region } } } }, merge);
    }
    const cred = await issueRegionCredential(admin, region, { ttlSeconds: 3600 });
    const hubKc = new KubeConfig();
    hubKc.loadFromString(cred.kubeconfig);
    const source = new TestbedEvidenceSource();
    source.setFault(nodeA, "unreachable");
    source.setFault(nodeB, "unreachable");
    const store = new MemoryAuditStore();
    const auditKey = generateKeyPairSync("ed25519");
    const parts = await startGatedMember({
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
      log: process.env.DEBUG_GATE ? jsonLogger({ level: "debug", name: "member" }) : silentLogger,
      attestation: {
        policy: { name: policyName, generation: 1, spec: TESTBED_POLICY_SPEC },
        anchors: testbedTrustAnchors(),
        source,
        nodeSelector: `nvidia.com/gpu.present=true,${fleetLabel}=${region}`,
      },
      audit: { store, signer: ed25519CheckpointSigner(auditKey.privateKey) },
    });

    // The hub's work for this region: two learners of 4 GPUs each, under the member's policy.
    const work = await createRegionWork(custom, {
      name: workName,
      region,
      cluster,
      policyName,
      learners: 2,
      gpus: 5,
    });
    const getWork = async () =>
      (await custom.getNamespacedCustomObject({
        ...GROUP,
        plural: "regionworks",
        namespace: regionNamespace(region),
        name: workName,
      })) as RegionWork;
    const learners = async (): Promise<V1Pod[]> =>
      (
        await core.listNamespacedPod({ namespace: LEARNER_NAMESPACE, labelSelector: `${WORK_LABEL}=${id}` })
      ).items
        .filter((p) => !p.metadata?.deletionTimestamp)
        .sort((a, b) => (a.metadata?.name ?? "").localeCompare(b.metadata?.name ?? ""));
    const gated = (p: V1Pod) => p.spec?.schedulingGates?.some((g) => g.name === ATTESTATION_GATE) ?? false;
    const auditEntries = () => store.entries as AuditEntry[];
    const metricsText = () => metrics.registry.metrics();

    // 1. No node can be challenged: the learners exist, with their keys, and stay gated.
    debug("member started; learners should wait");
    const waiting = await eventually(async () => {
      const pods = await learners();
      return pods.length === 2 &&
        pods.every(
          (p) =>
            gated(p) &&
            /^(EvidenceUnavailable|NoAttestedNode): /.test(
              p.metadata?.annotations?.[POD_ANNOTATIONS.gateStatus] ?? "",
            ),
        )
        ? pods
        : undefined;
    }, "two gated learners that say why they wait");
    for (const p of waiting) {
      t.is(p.spec?.nodeName, undefined);
      t.regex(
        p.metadata?.annotations?.[POD_ANNOTATIONS.gateStatus] ?? "",
        /^(EvidenceUnavailable|NoAttestedNode): /,
      );
      const env = Object.fromEntries((p.spec?.containers[0]?.env ?? []).map((e) => [e.name, e.value]));
      t.is(env.SOVEREIGN_LEARNER_KEY, `${LEARNER_KEY_MOUNT}/${LEARNER_KEY_FILE}`);
      t.is(p.spec?.volumes?.[0]?.secret?.secretName, learnerKeySecretName(p.metadata?.name ?? ""));
    }
    await new Promise((r) => setTimeout(r, 1_500));
    t.true((await learners()).every(gated), "still gated: no node has attested");
    debug("learners gated");
    const pendingWork = await eventually(async () => {
      const w = await getWork();
      return w.status?.learnersWaitingForAttestation === 2 ? w : undefined;
    }, "the work reporting two learners waiting for attestation");
    t.regex(
      pendingWork.status?.conditions?.find((c) => c.type === "LearnersReady")?.reason ?? "",
      /^(AttestationPending|NoAttestedNode)$/,
    );
    const firstText = await metricsText();
    t.regex(
      firstText,
      /sovereign_attestation_verifications_total\{result="error",reason="EvidenceUnavailable",purpose="\w+"\} [1-9]/,
    );
    // Failures that have not happened yet are there at 0, so the first one shows in increase().
    t.regex(
      firstText,
      /sovereign_attestation_verifications_total\{result="failed",reason="CertRevoked",purpose="reattestation"\} 0/,
    );

    // 2. The agents answer; the nodes are challenged at once (the reattest annotation), attest,
    // and each learner is admitted with a challenge of its own, to a node of its own.
    source.setFault(nodeA);
    source.setFault(nodeB);
    for (const n of [nodeA, nodeB]) {
      await core.patchNode(
        { name: n, body: { metadata: { annotations: { [NODE_ANNOTATIONS.reattest]: "1" } } } },
        merge,
      );
    }
    debug("agents answer");
    const admitted = await eventually(
      async () => {
        const pods = await learners();
        return pods.length === 2 && pods.every((p) => !gated(p) && p.status?.phase === "Running")
          ? pods
          : undefined;
      },
      "both learners released and running",
      SLOW,
    );
    t.log(`both learners running ${((Date.now() - started) / 1000).toFixed(1)} s into the test`);
    const nodesOf = admitted.map((p) => p.spec?.nodeName);
    t.deepEqual([...nodesOf].sort(), [nodeA, nodeB].sort(), "one learner per node (5 of 8 GPUs each)");
    debug("learners running");
    const firstWork = await eventually(async () => {
      const w = await getWork();
      return w.status?.learnerKeys?.length === 2 ? w : undefined;
    }, "both keys listed in the RegionWork's status");
    const runUid = work.spec.run.uid;
    for (const p of admitted) {
      const name = p.metadata?.name ?? "";
      const pinned =
        p.spec?.affinity?.nodeAffinity?.requiredDuringSchedulingIgnoredDuringExecution?.nodeSelectorTerms;
      t.deepEqual(JSON.parse(JSON.stringify(pinned?.[0]?.matchFields)), [
        { key: "metadata.name", operator: "In", values: [p.spec?.nodeName] },
      ]);
      const secret = await core.readNamespacedSecret({
        name: learnerKeySecretName(name),
        namespace: LEARNER_NAMESPACE,
      });
      const key = publicKeyOfSecret(secret, p);
      if ("problem" in key) throw new Error(key.problem);
      const entry = firstWork.status?.learnerKeys?.find((k) => k.learner === name) as LearnerKey;
      t.is(entry.publicKey, key.publicKey, "the listed key is the one in the pod's Secret");
      t.is(entry.node, p.spec?.nodeName ?? "");
      t.is(entry.round, work.spec.round);
      t.true(
        learnerKeyBound(entry, runUid),
        "the nonce the GPUs signed commits to that key, the run and the round",
      );
      const verdictEntry = auditEntries().find(
        (e) => e.kind === "AttestationVerdict" && e.body.verdict.nonce === entry.nonce,
      );
      t.true(
        verdictEntry?.kind === "AttestationVerdict" && verdictEntry.body.verdict.passed,
        `${name}'s verdict audited`,
      );
      t.is(
        verdictEntry?.kind === "AttestationVerdict" && verdictEntry.body.verdict.devices.length,
        8,
        "all 8 GPUs",
      );
      const admission = auditEntries().find(
        (e) => e.kind === "PodAdmitted" && e.body.pod.uid === p.metadata?.uid,
      );
      t.is(admission?.kind === "PodAdmitted" && admission.body.verdictDigest, entry.verdictDigest);
    }
    for (const n of [nodeA, nodeB]) {
      const node = await core.readNode({ name: n });
      t.is(node.metadata?.labels?.[ATTESTED_LABEL], "true");
      t.is(node.metadata?.annotations?.[NODE_ANNOTATIONS.reason], "Verified");
      t.regex(node.metadata?.annotations?.[NODE_ANNOTATIONS.verdict] ?? "", /^[0-9a-f]{64}$/);
    }

    // 3. Node A's evidence goes bad (a measurement of its last GPU): at its next challenge it is
    // quarantined, its learner stopped and its key revoked. The learner on B runs on; the
    // stopped one is recreated and waits (B has no room for a second learner of 5 GPUs).
    const onA = admitted.find((p) => p.spec?.nodeName === nodeA) as V1Pod;
    const onB = admitted.find((p) => p.spec?.nodeName === nodeB) as V1Pod;
    const oldKey = onA.metadata?.annotations?.[POD_ANNOTATIONS.key];
    const reattest = (node: string, value: string) =>
      core.patchNode(
        { name: node, body: { metadata: { annotations: { [NODE_ANNOTATIONS.reattest]: value } } } },
        merge,
      );
    debug("node A goes bad");
    source.setFault(nodeA, "measurement-mismatch");
    await reattest(nodeA, "2");
    const quarantined = await eventually(
      async () => {
        const n = await core.readNode({ name: nodeA });
        return n.metadata?.labels?.[ATTESTED_LABEL] === "false" ? n : undefined;
      },
      `${nodeA} quarantined`,
      SLOW,
    );
    const quarantinedAt = quarantined.metadata?.annotations?.[NODE_ANNOTATIONS.quarantinedAt];
    t.is(quarantined.metadata?.annotations?.[NODE_ANNOTATIONS.reason], "MeasurementMismatch");
    t.regex(quarantined.metadata?.annotations?.[NODE_ANNOTATIONS.message] ?? "", /measurement\[9\]/);
    t.truthy(quarantinedAt);
    const replaced = await eventually(async () => {
      const back = (await learners()).find((p) => p.metadata?.name === onA.metadata?.name);
      return back && back.metadata?.uid !== onA.metadata?.uid && gated(back) ? back : undefined;
    }, "the stopped learner recreated, gated");
    const waitingOn = await eventually(async () => {
      const p = await core.readNamespacedPod({
        name: replaced.metadata?.name ?? "",
        namespace: LEARNER_NAMESPACE,
      });
      const status = p.metadata?.annotations?.[POD_ANNOTATIONS.gateStatus] ?? "";
      return status.startsWith("NoAttestedNode:") ? status : undefined;
    }, "the recreated learner saying why it waits");
    t.regex(waitingOn, new RegExp(`${nodeA}: quarantined \\(MeasurementMismatch\\)`));
    t.regex(waitingOn, new RegExp(`${nodeB}: 3 of 8 GPUs free, need 5`));
    const stayed = (await learners()).find((p) => p.metadata?.name === onB.metadata?.name);
    t.is(stayed?.metadata?.uid, onB.metadata?.uid, "the learner on the good node was never touched");
    t.is(stayed?.status?.phase, "Running");
    const revokedWork = await eventually(async () => {
      const w = await getWork();
      return w.status?.learnerKeys?.some((k) => k.publicKey === oldKey && k.revokedAt) ? w : undefined;
    }, "the stopped learner's key revoked");
    const revoked = revokedWork.status?.learnerKeys?.find((k) => k.publicKey === oldKey) as LearnerKey;
    t.is(revoked.revokedReason, "NodeQuarantined:MeasurementMismatch");
    t.is(revoked.revokedAt, quarantinedAt, "revoked from the failing verdict on, not from when the pod went");
    t.deepEqual(
      revokedWork.status?.learnerKeys?.filter((k) => !k.revokedAt).map((k) => k.learner),
      [onB.metadata?.name],
    );
    let text = await metricsText();
    t.regex(text, new RegExp(`sovereign_quarantined_nodes\\{region="${region}"\\} 1`));
    t.regex(
      text,
      /sovereign_attestation_verifications_total\{result="failed",reason="MeasurementMismatch",purpose="reattestation"\} 1/,
    );
    t.regex(text, new RegExp(`sovereign_attestation_evidence_age_seconds\\{node="${nodeB}"\\} \\d`));
    t.true(
      auditEntries().some(
        (e) =>
          e.kind === "NodeQuarantined" &&
          e.body.node === nodeA &&
          e.body.reasons.includes("MeasurementMismatch"),
      ),
    );
    // The region's SovereignNode shows it at the next heartbeat; the node has a Warning Event.
    const sn = await eventually(async () => {
      const x = (await custom.getClusterCustomObject({
        ...GROUP,
        plural: "sovereignnodes",
        name: region,
      })) as SovereignNode;
      return x.status?.gpuNodes?.failing === 1 ? x : undefined;
    }, "the SovereignNode counting the failing node");
    t.is(sn.status?.attestation?.lastFailureReason, "MeasurementMismatch");
    t.is(sn.status?.attestation?.policy, policyName);
    const events = await core.listNamespacedEvent({
      namespace: "default",
      fieldSelector: `involvedObject.name=${nodeA}`,
    });
    t.true(events.items.some((e) => e.reason === "NodeQuarantined" && e.type === "Warning"));

    // The node is repaired: once it passes again it leaves quarantine and the waiting learner is
    // admitted to it with a key of its own; the revoked key stays revoked.
    debug("node A repaired");
    source.setFault(nodeA);
    await reattest(nodeA, "3");
    const readmitted = await eventually(
      async () => {
        const p = await core.readNamespacedPod({
          name: replaced.metadata?.name ?? "",
          namespace: LEARNER_NAMESPACE,
        });
        return !gated(p) && p.status?.phase === "Running" ? p : undefined;
      },
      "the recreated learner admitted to the repaired node",
      SLOW,
    );
    t.is(readmitted.spec?.nodeName, nodeA);
    const newKey = readmitted.metadata?.annotations?.[POD_ANNOTATIONS.key];
    t.not(newKey, oldKey);
    const rekeyed = await eventually(async () => {
      const w = await getWork();
      return w.status?.learnerKeys?.some((k) => k.publicKey === newKey) ? w : undefined;
    }, "the new key listed");
    t.deepEqual(
      rekeyed.status?.learnerKeys
        ?.map((k) => [k.learner, k.publicKey === oldKey ? "old" : "live", k.revokedAt ? "revoked" : "valid"])
        .sort(),
      [
        [onA.metadata?.name, "live", "valid"],
        [onA.metadata?.name, "old", "revoked"],
        [onB.metadata?.name, "live", "valid"],
      ].sort(),
    );

    // 4. Node B replays its previous evidence instead of answering the new challenge: refused
    // (NonceMismatch), audited, quarantined; its learner is stopped and waits (A is full).
    debug("node B replays");
    source.setFault(nodeB, "replay");
    await reattest(nodeB, "4");
    const replayed = await eventually(
      async () => {
        const n = await core.readNode({ name: nodeB });
        return n.metadata?.labels?.[ATTESTED_LABEL] === "false" ? n : undefined;
      },
      `${nodeB} quarantined after a replay`,
      SLOW,
    );
    t.is(replayed.metadata?.annotations?.[NODE_ANNOTATIONS.reason], "NonceMismatch");
    const refused = auditEntries().find(
      (e) => e.kind === "AttestationVerdict" && e.body.node === nodeB && !e.body.verdict.passed,
    );
    t.deepEqual(refused?.kind === "AttestationVerdict" && refused.body.verdict.reasons, ["NonceMismatch"]);
    const stalled = await eventually(async () => {
      const w = await getWork();
      return w.status?.conditions?.find((c) => c.type === "LearnersReady" && c.reason === "NoAttestedNode")
        ? w
        : undefined;
    }, "the work saying the waiting learner has no attested node");
    t.is(stalled.status?.learnersWaitingForAttestation, 1);
    t.regex(stalled.status?.message ?? "", /quarantined \(NonceMismatch\)/);
    text = await metricsText();
    t.regex(text, new RegExp(`sovereign_learners_admitted_total\\{region="${region}"\\} 3`));
    t.regex(
      text,
      /sovereign_attestation_verifications_total\{result="failed",reason="NonceMismatch",purpose="reattestation"\} 1/,
    );

    debug("audit");
    // 5. The audit trail verifies offline with the member's checkpoint key.
    const audit = await parts.attestation?.audit();
    await audit?.checkpoint();
    const lines: string[] = [];
    for await (const line of exportAuditLog(store)) lines.push(line);
    const report = verifyAuditExport(lines.join(""), {
      trustedKeys: [trustedKey(auditKey.publicKey)],
      at: new Date(),
    });
    t.true(report.ok, report.failure?.message);
    const kinds = new Set(auditEntries().map((e) => e.kind));
    t.deepEqual(
      ["AttestationVerdict", "PodAdmitted", "NodeQuarantined", "Checkpoint"].filter(
        (k) => !kinds.has(k as never),
      ),
      [],
    );
    t.log(
      `${report.entriesVerified} audit entries verified; test took ${((Date.now() - started) / 1000).toFixed(1)} s`,
    );
  },
);
