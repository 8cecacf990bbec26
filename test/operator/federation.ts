// A hub operator (in process, with its NATS connection) and three accepted regions on the
// testbed, for tests of rounds: the test plays the regions' learners, publishing signed
// deltas into each region's own JetStream domain; the hub only ever reads its mirrors.
import { generateKeyPairSync } from "node:crypto";
import { CustomObjectsApi, PatchStrategy, setHeaderOptions } from "@kubernetes/client-node";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import type { ExecutionContext } from "ava";
import { AuditLog, ed25519CheckpointSigner, MemoryAuditStore } from "../../attestation/audit/mod.ts";
import { installCrds } from "../../crds/install.ts";
import type { FederatedRun, FederatedRunSpec, SovereignNode } from "../../crds/types.generated.ts";
import {
  collectBytes,
  describeDelta,
  publicKeyField,
  readSafetensors,
  signManifest,
  writeDelta,
  writeSafetensors,
} from "../../deltas/mod.ts";
import { ensureRegionAccess, revokeRegionAccess } from "../../operator/hub/credentials.ts";
import { hubControllers } from "../../operator/hub/setup.ts";
import { jsonLogger, silentLogger } from "../../operator/runtime/log.ts";
import { OperatorMetrics } from "../../operator/runtime/metrics.ts";
import {
  ensureRegionDeltaBucket,
  fetchGlobalModel,
  publishDelta,
  publishGlobalModel,
  removeRunBuckets,
} from "../../transport/mod.ts";
import { gaussian } from "../deltas/helpers.ts";
import { eventually, testNamespace, uniqueName, useTestbed } from "../testbed/harness.ts";
import { NodeBuilder, RunBuilder } from "./builders.ts";

export const GROUP = { group: "sovereign.ai", version: "v1alpha1" };
const FLEET_LABEL = "sovereign.ai/test-fleet";
export const SHAPE = [8, 16];
export const ELEMENTS = 128;

/** A hub (in process) and three accepted regions on the testbed, each region with its member NATS connection. */
export async function federation(t: ExecutionContext) {
  const tb = await useTestbed();
  const admin = tb.kubeConfig("hub");
  await installCrds(admin);
  const custom = admin.makeApiClient(CustomObjectsApi);
  const ns = await testNamespace(t, tb, "hub", "rounds");
  const tag = uniqueName("fleet");
  const regions = tb.regions.map((cluster) => ({ cluster, name: uniqueName(cluster) }));
  const { hub: hubNats, regions: natsRegions } = tb.description.nats;
  const hubNc = await connect({
    servers: hubNats.url,
    user: hubNats.admin.user,
    pass: hubNats.admin.password,
  });
  const members: Record<string, NatsConnection> = {};
  for (const r of regions) {
    const d = natsRegions[r.cluster];
    if (!d) throw new Error(`no NATS for ${r.cluster}`);
    members[r.name] = await connect({ servers: d.url, user: d.member.user, pass: d.member.password });
    await ensureRegionDeltaBucket(members[r.name] as NatsConnection, r.name);
  }
  const metrics = new OperatorMetrics({ defaultMetrics: false });
  // The hub's audit trail, which the auditor checks at the end.
  const auditKey = generateKeyPairSync("ed25519").privateKey;
  const auditStore = new MemoryAuditStore();
  const audit = await AuditLog.open(auditStore, {
    logId: `hub-${tag}`,
    signer: ed25519CheckpointSigner(auditKey),
    clock: () => new Date(),
  });
  const cleanup: (() => Promise<unknown>)[] = [];
  t.teardown(async () => {
    for (const c of cleanup.reverse()) await c().catch(() => undefined);
    await Promise.all([hubNc, ...Object.values(members)].map((nc) => nc.close()));
  });

  // The hub operator, seeing only this test's namespace and regions.
  // What startHub gives hubControllers, for a test that runs the hub under its Manager.
  const hubOptions = () => ({
    kc: admin,
    metrics,
    log: process.env.DEBUG_ROUNDS ? jsonLogger({ level: "debug" }) : silentLogger,
    heartbeatTimeoutMs: 3_600_000,
    watchNamespace: ns,
    nodeLabelSelector: `${FLEET_LABEL}=${tag}`,
    nats: hubNc,
    trustManifestKeys: true,
    audit,
  });
  const startHub = async () => {
    const parts = hubControllers(hubOptions());
    const abort = new AbortController();
    for (const i of parts.informers) await i.start();
    const running = parts.controllers.map((c) => c.run(abort.signal));
    const stop = async () => {
      abort.abort();
      await Promise.all([...running, ...parts.informers.map((i) => i.stop())]);
    };
    cleanup.push(stop);
    return stop;
  };

  const policy = uniqueName("policy");
  await custom.createClusterCustomObject({
    ...GROUP,
    plural: "attestationpolicies",
    body: {
      apiVersion: "sovereign.ai/v1alpha1",
      kind: "AttestationPolicy",
      metadata: { name: policy },
      spec: { verification: { mode: "Local" } },
    },
  });
  cleanup.push(() =>
    custom.deleteClusterCustomObject({ ...GROUP, plural: "attestationpolicies", name: policy }),
  );
  // Three accepted regions that heartbeat (written directly: this test is about rounds).
  for (const r of regions) {
    const node = new NodeBuilder(r.name).labels({ [FLEET_LABEL]: tag }).obj() as SovereignNode;
    node.spec.jetStreamDomain = r.cluster;
    node.spec.attestationPolicyRef = { name: policy };
    const status = node.status;
    delete node.status;
    await ensureRegionAccess(admin, r.name); // the namespace the region's work goes to
    await custom.createClusterCustomObject({ ...GROUP, plural: "sovereignnodes", body: node });
    cleanup.push(async () => {
      await custom.deleteClusterCustomObject({ ...GROUP, plural: "sovereignnodes", name: r.name });
      await revokeRegionAccess(admin, r.name);
    });
    await custom.patchClusterCustomObjectStatus(
      {
        ...GROUP,
        plural: "sovereignnodes",
        name: r.name,
        body: {
          status: {
            ...status,
            conditions: [],
            lastHeartbeatTime: new Date().toISOString().replace(/\.\d+Z$/, "Z"),
          },
        },
      },
      setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
    );
  }
  const keys = generateKeyPairSync("ed25519");
  const deltaOf = (region: number, round: number) => gaussian(ELEMENTS, 0.01, 100 * round + region);
  /** A learner of region `r` publishes its delta for a round of `runName` (signed; `tamper` flips a byte after signing). */
  const publisher =
    (runName: string) =>
    async (r: { name: string }, i: number, round: number, tokens: number, base: string, tamper = false) => {
      const file = await collectBytes(
        writeDelta([{ name: "w", shape: SHAPE, values: deltaOf(i, round) }], "fp32"),
      );
      const described = await describeDelta([file]);
      const signed = signManifest(
        {
          version: 1,
          namespace: ns,
          run: runName,
          round,
          region: r.name,
          learner: tamper ? "learner-tampered" : "learner-0",
          learnerKey: publicKeyField(keys.publicKey),
          baseModel: base,
          encoding: described.encoding,
          tokens,
          innerSteps: 10,
          // As a learner that trained for 0.9 s and waited 0.1 s for the round's model.
          trainMs: 900,
          waitMs: 100,
          createdAt: "2026-11-24T07:00:00Z",
          size: described.size,
          tensors: described.tensors,
        },
        keys.privateKey,
      );
      const bytes = tamper ? file.slice() : file;
      if (tamper) bytes[bytes.length - 1] = (bytes[bytes.length - 1] as number) ^ 1;
      await publishDelta(members[r.name] as NatsConnection, {
        region: r.name,
        namespace: ns,
        signed,
        source: [bytes],
      });
    };
  const getRun = async (runName: string) =>
    (await custom.getNamespacedCustomObject({
      ...GROUP,
      plural: "federatedruns",
      namespace: ns,
      name: runName,
    })) as FederatedRun;
  /** Waits until the run's status shows `round` open. */
  const roundOpen = (runName: string, round: number) =>
    eventually(
      async () => ((await getRun(runName)).status?.roundProgress?.round === round ? true : undefined),
      `round ${round} open`,
    );
  /**
   * A run on the regions of this fixture, its buckets removed at teardown, and its initial
   * model (round-0, gaussian from `seed`) published as its user would.
   */
  const startRun = async (
    t: ExecutionContext,
    prefix: string,
    spec: { minRegions: number; rounds: number; seed: number } & Pick<FederatedRunSpec, "quorum"> &
      Partial<Pick<FederatedRunSpec, "algorithm">>,
  ) => {
    const runName = uniqueName(prefix);
    const run = new RunBuilder(runName, ns).placement({ minRegions: spec.minRegions }).obj() as FederatedRun;
    run.spec.attestation = { policyRef: { name: policy } };
    run.spec.rounds = spec.rounds;
    run.spec.quorum = spec.quorum;
    if (spec.algorithm) run.spec.algorithm = spec.algorithm;
    await custom.createNamespacedCustomObject({
      ...GROUP,
      plural: "federatedruns",
      namespace: ns,
      body: run,
    });
    t.teardown(() => removeRunBuckets(hubNc, { namespace: ns, run: runName }));
    const initial = gaussian(ELEMENTS, 0.1, spec.seed);
    await publishGlobalModel(
      hubNc,
      { namespace: ns, run: runName, round: 0 },
      writeSafetensors([{ name: "w", dtype: "F32", shape: SHAPE, data: new Uint8Array(initial.buffer) }]),
    );
    return { runName, initial };
  };
  /**
   * Checks the model the hub published for `round`: its digest is the round's
   * `aggregateDigest`, and it is θ + the mean of the regions' deltas (equal tokens), in float32
   * as the hub stores it, within 1e-5. Returns the published weights (θ of the next round).
   */
  const expectEqualWeightFedAvg = async (
    t: ExecutionContext,
    runName: string,
    round: number,
    theta: Float32Array,
    aggregateDigest: string | undefined,
  ): Promise<Float32Array> => {
    const next = new Float32Array(ELEMENTS);
    const deltas = regions.map((_, k) => deltaOf(k, round));
    for (let e = 0; e < ELEMENTS; e++)
      next[e] = (theta[e] as number) + deltas.reduce((sum, d) => sum + (d[e] as number), 0) / deltas.length;
    const model = await fetchGlobalModel(hubNc, { namespace: ns, run: runName, round });
    t.is(aggregateDigest, model.digest);
    const published = new Float32Array(
      new Uint8Array((await readSafetensors(model.data)).tensors.get("w")?.bytes ?? []).buffer,
    );
    let worst = 0;
    for (let e = 0; e < ELEMENTS; e++)
      worst = Math.max(worst, Math.abs((published[e] as number) - (next[e] as number)));
    t.true(worst < 1e-5, `round ${round}: largest difference from the reference: ${worst}`);
    return published;
  };
  /** A region's SovereignNode status as its member would report its GPU nodes' attestation. */
  const setRegionGpus = (region: string, gpuNodes: object, lastFailureReason?: string) =>
    custom.patchClusterCustomObjectStatus(
      {
        ...GROUP,
        plural: "sovereignnodes",
        name: region,
        body: { status: { gpuNodes, attestation: { policy, lastFailureReason: lastFailureReason ?? "" } } },
      },
      setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
    );
  /** Every GPU node of the region failing attestation: the hub quarantines it. */
  const failRegionGpus = (region: string) =>
    setRegionGpus(
      region,
      { total: 2, attested: 0, failing: 2, totalGpus: 16, attestedGpus: 0 },
      "MeasurementMismatch",
    );
  return {
    startRun,
    roundOpen,
    setRegionGpus,
    failRegionGpus,
    expectEqualWeightFedAvg,
    tb,
    admin,
    policy,
    custom,
    ns,
    regions,
    hubNc,
    metrics,
    audit,
    auditStore,
    auditKey,
    cleanup,
    hubOptions,
    startHub,
    publisher,
    /** The key every delta `publisher` writes is signed with (for tests that resolve keys themselves). */
    learnerPublicKey: keys.publicKey,
    deltaOf,
    getRun,
  };
}
