import test from "ava";
import { resourceDefinitions } from "../../crds/schema/index.ts";
import type { Rule, Schema } from "../../crds/schema/types.ts";
import {
  parseFederatedRunSpec,
  parseRegionWorkSpec,
  parseSovereignNodeSpec,
  StructuralReason,
} from "../../crds/validate.ts";
import { exampleFiles, loadExample, specParsers } from "./fixtures.ts";
import { buildCase, invalidCases } from "./invalid-cases.ts";

for (const file of exampleFiles()) {
  test(`example ${file} parses`, (t) => {
    const example = loadExample(file);
    const result = specParsers[example.kind](example.spec);
    t.true(result.ok, JSON.stringify(result.ok ? undefined : result.errors, null, 2));
  });
}

test("the examples cover every kind", (t) => {
  const kinds = new Set(exampleFiles().map((file) => loadExample(file).kind));
  t.deepEqual([...kinds].sort(), resourceDefinitions.map((definition) => definition.kind).sort());
});

for (const testCase of invalidCases) {
  test(`rejects: ${testCase.name}`, (t) => {
    const { kind, original, broken } = buildCase(testCase);
    const parse = specParsers[kind];
    const result = parse(broken.spec, testCase.update ? { old: original.spec } : {});
    if (result.ok) return t.fail("accepted");
    t.true(
      result.errors.some((error) => error.path === testCase.path && error.reason === testCase.reason),
      `expected ${testCase.reason} at ${testCase.path}, got ${JSON.stringify(result.errors)}`,
    );
    if (testCase.update) {
      t.true(parse(broken.spec).ok, "the same spec is valid on creation: only the change is refused");
      t.true(parse(original.spec, { old: original.spec }).ok, "an unchanged update is accepted");
    }
  });
}

/** Every rule reason declared in a schema, with where it is declared (for failure messages). */
function ruleReasons(schema: Schema, at: string, found: Map<string, string>): Map<string, string> {
  for (const rule of schema.rules ?? []) found.set(rule.reason, at);
  for (const [key, child] of Object.entries(schema.properties ?? {}))
    ruleReasons(child, `${at}.${key}`, found);
  if (schema.items) ruleReasons(schema.items, `${at}[]`, found);
  return found;
}

test("every CEL rule has at least one invalid case exercising it", (t) => {
  const declared = new Map<string, string>();
  for (const definition of resourceDefinitions) ruleReasons(definition.spec, definition.kind, declared);
  const exercised = new Set(invalidCases.map((testCase) => testCase.reason));
  const missing = [...declared]
    .filter(([reason]) => !exercised.has(reason))
    .map(([reason, at]) => `${reason} (${at})`);
  t.deepEqual(missing, []);
});

test("reason codes are PascalCase and unique per rule", (t) => {
  // A sub-schema shared between kinds (RegionWork reuses FederatedRun's workload and
  // attestation) carries the same rule objects, so rules are collected once each.
  const rules = new Set<Rule>();
  const collect = (schema: Schema) => {
    for (const rule of schema.rules ?? []) rules.add(rule);
    for (const child of Object.values(schema.properties ?? {})) collect(child);
    if (schema.items) collect(schema.items);
  };
  for (const definition of resourceDefinitions) collect(definition.spec);
  const reasons = [...rules].map((rule) => rule.reason);
  for (const reason of [...reasons, ...Object.values(StructuralReason)])
    t.regex(reason, /^[A-Z][A-Za-z0-9]+$/);
  t.is(new Set(reasons).size, reasons.length, "each rule has its own reason");
});

test("defaults are applied, also inside defaulted objects, without overriding given values", (t) => {
  const example = loadExample("federatedrun-fedavg.yaml");
  delete example.spec.deltaEncoding;
  example.spec.quorum = { graceWindowSeconds: 5 };
  const result = parseFederatedRunSpec(example.spec);
  if (!result.ok) return t.fail(JSON.stringify(result.errors));
  const schema = resourceDefinitions[0]?.spec.properties;
  t.is(result.value.deltaEncoding.dtype as unknown, schema?.deltaEncoding?.properties?.dtype?.default);
  t.is(result.value.quorum.maxRoundSeconds as unknown, schema?.quorum?.properties?.maxRoundSeconds?.default);
  t.is(result.value.quorum.graceWindowSeconds, 5);
  t.is(result.value.quorum.minRegions, undefined, "no default: unset means placement.minRegions");
});

test("the parser does not modify its input", (t) => {
  const example = loadExample("federatedrun-fedavg.yaml");
  const before = structuredClone(example.spec);
  parseFederatedRunSpec(example.spec);
  t.deepEqual(example.spec, before);
});

test("null means unset for known fields, as in the API server, but unknown fields are refused even when null", (t) => {
  const example = loadExample("federatedrun-fedavg.yaml");
  example.spec.placement.maxRegions = null;
  example.spec.quorum.lateDeltas = null;
  const result = parseFederatedRunSpec(example.spec);
  if (!result.ok) return t.fail(JSON.stringify(result.errors));
  t.false("maxRegions" in result.value.placement);
  t.is(result.value.quorum.lateDeltas, "Discard");

  example.spec.rounds = null;
  example.spec.placement.zone = null;
  const rejected = parseFederatedRunSpec(example.spec);
  t.false(rejected.ok);
  t.deepEqual((rejected.ok ? [] : rejected.errors).map((error) => `${error.path} ${error.reason}`).sort(), [
    "spec.placement.zone UnknownField",
    "spec.rounds Required",
  ]);
});

test("keys such as __proto__ stay data", (t) => {
  const example = loadExample("federatedrun-fedavg.yaml");
  example.spec.placement.regionSelector.matchLabels = JSON.parse('{"__proto__": "x", "constructor": "y"}');
  const result = parseFederatedRunSpec(example.spec);
  if (!result.ok) return t.fail(JSON.stringify(result.errors));
  const labels = result.value.placement.regionSelector?.matchLabels ?? {};
  t.deepEqual(Object.keys(labels), ["__proto__", "constructor"]);
  t.is(Object.getPrototypeOf(labels), Object.prototype);
});

test("every error of a badly broken spec is reported, not just the first", (t) => {
  const example = loadExample("sovereignnode-region.yaml");
  Object.assign(example.spec, { jurisdiction: "de", jetStreamDomain: "", accepted: "yes" });
  const result = parseSovereignNodeSpec(example.spec);
  t.false(result.ok);
  t.deepEqual((result.ok ? [] : result.errors).map((error) => `${error.path} ${error.reason}`).sort(), [
    "spec.accepted WrongType",
    "spec.jetStreamDomain PatternMismatch",
    "spec.jetStreamDomain TooShort",
    "spec.jurisdiction PatternMismatch",
  ]);
});

test("a missing or non-object spec is a specific error", (t) => {
  for (const input of [undefined, null, 42, "spec", []]) {
    const result = parseFederatedRunSpec(input);
    t.false(result.ok);
    t.is(result.ok ? "" : result.errors[0]?.path, "spec");
  }
});

test("immutability compares sets and list-maps regardless of order, atomic lists in order (as CEL does)", (t) => {
  const stored = loadExample("federatedrun-diloco-int8-robust.yaml").spec;
  const reorderedSet = structuredClone(stored);
  reorderedSet.placement.requiredJurisdictions.reverse();
  t.true(parseFederatedRunSpec(reorderedSet, { old: stored }).ok);

  const storedTwoExpressions = structuredClone(stored);
  storedTwoExpressions.placement.regionSelector.matchExpressions.push({ key: "gpu", operator: "Exists" });
  const reorderedAtomic = structuredClone(storedTwoExpressions);
  reorderedAtomic.placement.regionSelector.matchExpressions.reverse();
  const result = parseFederatedRunSpec(reorderedAtomic, { old: storedTwoExpressions });
  t.deepEqual(result.ok ? [] : result.errors.map((error) => error.reason), ["PlacementImmutable"]);
});

test("a RegionWork's round may advance and suspend may flip after creation; defaults fill in round, suspend and deltaEncoding", (t) => {
  const stored = loadExample("regionwork.yaml").spec;
  const advanced = { ...structuredClone(stored), round: stored.round + 1, suspend: true };
  t.true(parseRegionWorkSpec(advanced, { old: stored }).ok);

  const minimal = structuredClone(stored);
  delete minimal.round;
  delete minimal.suspend;
  delete minimal.deltaEncoding;
  const result = parseRegionWorkSpec(minimal);
  if (!result.ok) return t.fail(JSON.stringify(result.errors));
  t.is(result.value.round, 0);
  t.false(result.value.suspend);
  t.deepEqual(result.value.deltaEncoding, { dtype: "bf16", maxSizeMiB: 4096 });
});

test("RegionWork reuses FederatedRun's workload, attestation and delta encoding schemas", (t) => {
  const [run, work] = ["FederatedRun", "RegionWork"].map(
    (kind) => resourceDefinitions.find((definition) => definition.kind === kind)?.spec.properties,
  );
  for (const key of ["workload", "attestation", "deltaEncoding"]) {
    t.is(work?.[key]?.properties, run?.[key]?.properties, key);
  }
});
