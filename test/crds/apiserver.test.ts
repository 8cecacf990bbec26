/**
 * The CRDs against the testbed's real kube-apiservers: installation, the examples, the
 * invalid-case table, `kubectl explain` and the printer columns. Every object created is
 * uniquely named and deleted; dry runs create nothing.
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import test from "ava";
import { crdName, describeDefault, toCrd } from "../../crds/crd.ts";
import { installCrds } from "../../crds/install.ts";
import { resourceAddress } from "../../crds/resources.ts";
import { resourceDefinitions } from "../../crds/schema/index.ts";
import { CATEGORY, type Schema } from "../../crds/schema/types.ts";
import { useTestbed } from "../testbed/harness.ts";
import { remove, submit, submitUpdate } from "./api-client.ts";
import { EXAMPLES_DIR, exampleFiles, loadExample, specParsers } from "./fixtures.ts";
import { buildCase, invalidCases } from "./invalid-cases.ts";
import { ALL_CLUSTERS, createNamespace, flatten, HUB, withUniqueName } from "./testbed-helpers.ts";

const tb = await useTestbed();
const hub = tb.kubeConfig(HUB);
let namespace = "";
let removeNamespace = async () => {};

test.before(async () => {
  await Promise.all(ALL_CLUSTERS.map((cluster) => installCrds(tb.kubeConfig(cluster))));
  ({ name: namespace, remove: removeNamespace } = await createNamespace(tb, HUB));
});
test.after.always(() => removeNamespace());

for (const cluster of ALL_CLUSTERS) {
  test(`the CRDs in ${cluster} are Established and exactly as generated`, async (t) => {
    for (const definition of resourceDefinitions) {
      // kubectl returns the raw JSON; the typed client would drop keys such as `default`.
      const result = await tb.kubectl(cluster, ["get", "crd", crdName(definition), "-o", "json"]);
      t.is(result.code, 0, result.stderr);
      const served = JSON.parse(result.stdout);
      const wanted = toCrd(definition).spec as {
        versions: [{ schema: unknown; additionalPrinterColumns: unknown }];
      };
      t.deepEqual(served.spec.versions[0].schema, wanted.versions[0].schema, `${definition.kind} schema`);
      t.deepEqual(
        served.spec.versions[0].additionalPrinterColumns,
        wanted.versions[0].additionalPrinterColumns,
      );
      const established = served.status.conditions.find((c: { type: string }) => c.type === "Established");
      t.is(established?.status, "True", `${definition.kind} Established`);
    }
  });
}

test("installing again is a no-op that still succeeds", async (t) => {
  await t.notThrowsAsync(installCrds(hub));
});

test(`kubectl get ${CATEGORY} covers every kind, under their short names too`, async (t) => {
  const result = await tb.kubectl(HUB, ["api-resources", `--categories=${CATEGORY}`, "-o", "name"]);
  t.is(result.code, 0, result.stderr);
  t.deepEqual(result.stdout.trim().split("\n").sort(), resourceDefinitions.map(crdName).sort());
  for (const definition of resourceDefinitions) {
    for (const shortName of definition.shortNames) {
      const listed = await tb.kubectl(HUB, ["get", shortName, "-n", namespace]);
      t.is(listed.code, 0, `kubectl get ${shortName}: ${listed.stderr}`);
    }
  }
});

for (const file of exampleFiles()) {
  test(`example ${file}, as written, passes a server-side dry run of kubectl apply`, async (t) => {
    // The file's own text, so that YAML quirks (a bare On is a boolean to kubectl) are caught.
    const result = await tb.kubectl(HUB, ["apply", "--dry-run=server", "-n", namespace, "-f", "-"], {
      input: readFileSync(path.join(EXAMPLES_DIR, file), "utf8"),
    });
    t.is(result.code, 0, result.stderr);
  });

  test(`example ${file} is stored with the same defaults the operator's parser applies, and printed with its columns`, async (t) => {
    const example = withUniqueName(loadExample(file));
    const created = await submit(hub, example, { namespace });
    if (!created.accepted) return t.fail(created.message);
    t.teardown(() => remove(hub, example.kind, example.metadata.name, namespace));

    const parsed = specParsers[example.kind](example.spec);
    if (!parsed.ok) return t.fail(JSON.stringify(parsed.errors));
    t.deepEqual(created.object.spec, parsed.value);

    const definition = resourceDefinitions.find((candidate) => candidate.kind === example.kind);
    const plural = resourceAddress(example.kind).plural;
    const listed = await tb.kubectl(HUB, [
      "get",
      plural,
      example.metadata.name,
      "-n",
      namespace,
      "-o",
      "wide",
    ]);
    t.is(listed.code, 0, listed.stderr);
    const header = listed.stdout.split("\n")[0]?.trim().split(/\s+/);
    t.deepEqual(header, [
      "NAME",
      ...(definition?.printerColumns ?? []).map((column) => column.name.toUpperCase()),
    ]);
  });
}

for (const testCase of invalidCases) {
  test(`the API server rejects: ${testCase.name}`, async (t) => {
    const { original, broken } = buildCase(testCase);
    const name = withUniqueName(original).metadata.name;
    original.metadata.name = name;
    broken.metadata.name = name;
    if (testCase.update) {
      const stored = await submit(hub, original, { namespace });
      if (!stored.accepted) return t.fail(`creating the original failed: ${stored.message}`);
      t.teardown(() => remove(hub, original.kind, name, namespace));
      broken.metadata.resourceVersion = stored.object.metadata.resourceVersion;
    }
    const outcome = testCase.update
      ? await submitUpdate(hub, broken, { namespace, dryRun: true })
      : await submit(hub, broken, { namespace, dryRun: true });
    if (outcome.accepted) return t.fail("accepted");
    t.is(outcome.code, 422, outcome.message);
    t.true(outcome.message.includes(testCase.serverMessage), outcome.message);
    t.true(
      outcome.causes.some((cause) => cause.field === testCase.path),
      `no cause at ${testCase.path}: ${JSON.stringify(outcome.causes)}`,
    );
  });
}

test("the API server also treats a reordered set inside an immutable field as unchanged, but not a reordered atomic list", async (t) => {
  const stored = withUniqueName(loadExample("federatedrun-diloco-int8-robust.yaml"));
  stored.spec.placement.regionSelector.matchExpressions.push({ key: "gpu", operator: "Exists" });
  const created = await submit(hub, stored, { namespace });
  if (!created.accepted) return t.fail(created.message);
  t.teardown(() => remove(hub, stored.kind, stored.metadata.name, namespace));
  const resourceVersion = created.object.metadata.resourceVersion;

  const reorderedSet = structuredClone(stored);
  reorderedSet.metadata.resourceVersion = resourceVersion;
  reorderedSet.spec.placement.requiredJurisdictions.reverse();
  const setOutcome = await submitUpdate(hub, reorderedSet, { namespace, dryRun: true });
  t.true(setOutcome.accepted, setOutcome.accepted ? "" : setOutcome.message);
  t.true(specParsers.FederatedRun(reorderedSet.spec, { old: stored.spec }).ok);

  const reorderedAtomic = structuredClone(stored);
  reorderedAtomic.metadata.resourceVersion = resourceVersion;
  reorderedAtomic.spec.placement.regionSelector.matchExpressions.reverse();
  const atomicOutcome = await submitUpdate(hub, reorderedAtomic, { namespace, dryRun: true });
  t.false(atomicOutcome.accepted);
  t.false(specParsers.FederatedRun(reorderedAtomic.spec, { old: stored.spec }).ok);
});

/** The schema node at a dotted path such as federatedrun.spec.quorum. */
function schemaAt(path: string): Schema {
  const [resource, part, ...rest] = path.split(".");
  const definition = resourceDefinitions.find((candidate) => candidate.singular === resource);
  let node = part === "status" ? definition?.status : definition?.spec;
  for (const key of rest) node = node?.properties?.[key] ?? node?.items?.properties?.[key];
  if (!node) throw new Error(`no schema at ${path}`);
  return node;
}

const EXPLAINED_PATHS = [
  "federatedrun.spec.quorum",
  "federatedrun.spec.placement",
  "federatedrun.spec.algorithm.diloco",
  "federatedrun.spec.algorithm.robustAggregator",
  "federatedrun.spec.deltaEncoding",
  "federatedrun.status.rounds",
  "sovereignnode.spec.dataResidency",
  "sovereignnode.status.gpuNodes",
  "attestationpolicy.spec.ocsp",
  "attestationpolicy.spec.verification",
  "regionwork.spec",
  "regionwork.spec.run",
  "regionwork.spec.nats",
  "regionwork.status",
];

for (const path of EXPLAINED_PATHS) {
  test(`kubectl explain ${path} prints the field's and its children's descriptions`, async (t) => {
    const result = await tb.kubectl(HUB, ["explain", path]);
    t.is(result.code, 0, result.stderr);
    const printed = flatten(result.stdout);
    const node = schemaAt(path);
    t.true(printed.includes(flatten(node.description)), `description of ${path}`);
    const children = node.properties ?? node.items?.properties ?? {};
    t.true(Object.keys(children).length > 0);
    for (const [key, child] of Object.entries(children)) {
      t.true(printed.includes(key), `lists ${key}`);
      t.true(printed.includes(flatten(describeDefault(child))), `describes ${path}.${key}`);
    }
  });
}

test("the hub may advance a RegionWork's round and suspend it, but not change its work", async (t) => {
  const stored = withUniqueName(loadExample("regionwork.yaml"));
  const created = await submit(hub, stored, { namespace });
  if (!created.accepted) return t.fail(created.message);
  t.teardown(() => remove(hub, stored.kind, stored.metadata.name, namespace));

  const advanced = structuredClone(created.object);
  advanced.spec.round = stored.spec.round + 1;
  advanced.spec.suspend = true;
  const outcome = await submitUpdate(hub, advanced, { namespace, dryRun: true });
  t.true(outcome.accepted, outcome.accepted ? "" : outcome.message);
  t.true(specParsers.RegionWork(advanced.spec, { old: created.object.spec }).ok);

  const changed = structuredClone(advanced);
  changed.spec.workload.image = "registry.example.org/sovereign/other@sha256:0";
  const refused = await submitUpdate(hub, changed, { namespace, dryRun: true });
  t.true(!refused.accepted && refused.message.includes("workload is immutable"), JSON.stringify(refused));
  t.false(specParsers.RegionWork(changed.spec, { old: created.object.spec }).ok);
});

test("a member's report through the RegionWork status subresource is stored and printed", async (t) => {
  const stored = withUniqueName(loadExample("regionwork.yaml"));
  const created = await submit(hub, stored, { namespace });
  if (!created.accepted) return t.fail(created.message);
  t.teardown(() => remove(hub, stored.kind, stored.metadata.name, namespace));

  const status = {
    phase: "Pending",
    learnersDesired: 1,
    learnersScheduled: 1,
    learnersReady: 0,
    learnersWaitingForAttestation: 1,
    unattested: false,
    observedGeneration: 1,
    conditions: [
      {
        type: "LearnersReady",
        status: "False",
        reason: "AttestationPending",
        message: "1 learner waits for its GPU node's attestation",
        lastTransitionTime: "2025-01-01T00:00:00Z",
        observedGeneration: 1,
      },
    ],
  };
  const patched = await tb.kubectl(HUB, [
    "patch",
    "regionwork",
    stored.metadata.name,
    "-n",
    namespace,
    "--subresource=status",
    "--type=merge",
    "-p",
    JSON.stringify({ status }),
  ]);
  t.is(patched.code, 0, patched.stderr);

  const listed = await tb.kubectl(HUB, ["get", "rw", stored.metadata.name, "-n", namespace, "--no-headers"]);
  t.is(listed.code, 0, listed.stderr);
  const [name, run, region, round, ready, desired, phase] = listed.stdout.trim().split(/\s+/);
  t.deepEqual(
    [name, run, region, round, ready, desired, phase],
    [
      stored.metadata.name,
      stored.spec.run.name,
      stored.spec.region,
      String(stored.spec.round),
      "0",
      "1",
      "Pending",
    ],
  );

  const badPhase = await tb.kubectl(HUB, [
    "patch",
    "regionwork",
    stored.metadata.name,
    "-n",
    namespace,
    "--subresource=status",
    "--type=merge",
    "-p",
    JSON.stringify({ status: { phase: "Done" } }),
  ]);
  t.not(badPhase.code, 0);
  t.true(badPhase.stderr.includes('Unsupported value: "Done"'), badPhase.stderr);
});
