import test from "ava";
import fc from "fast-check";
import type { Kind } from "../../crds/resources.ts";
import { resourceDefinitions } from "../../crds/schema/index.ts";
import type { Schema } from "../../crds/schema/types.ts";
import { StructuralReason } from "../../crds/validate.ts";
import { exampleFiles, loadExample, specParsers } from "./fixtures.ts";
import { mutatedSpec } from "./mutations.ts";

function ruleReasons(schema: Schema): string[] {
  return [
    ...(schema.rules ?? []).map((rule) => rule.reason),
    ...Object.values(schema.properties ?? {}).flatMap(ruleReasons),
    ...(schema.items ? ruleReasons(schema.items) : []),
  ];
}
const knownReasons = new Set([
  ...Object.values(StructuralReason),
  ...resourceDefinitions.flatMap((definition) => ruleReasons(definition.spec)),
]);

/** Rejections must say where and why; acceptances must be stable under re-parsing. */
function checkOutcome(kind: Kind, input: unknown, old?: unknown): void {
  const parse = specParsers[kind];
  const result = parse(input, { old });
  if (result.ok) {
    const again = parse(result.value, { old });
    if (!again.ok) throw new Error(`its own output is rejected: ${JSON.stringify(again.errors)}`);
    if (JSON.stringify(again.value) !== JSON.stringify(result.value))
      throw new Error("defaulting is not idempotent");
    return;
  }
  if (result.errors.length === 0) throw new Error("rejected without errors");
  for (const error of result.errors) {
    if (!/^spec(\.|\[|$)/.test(error.path)) throw new Error(`error path ${error.path} is not under spec`);
    if (!knownReasons.has(error.reason)) throw new Error(`undeclared reason ${error.reason}`);
    if (error.message.length === 0) throw new Error(`empty message for ${error.reason} at ${error.path}`);
  }
}

const anything = fc.anything({
  maxDepth: 4,
  withBigInt: true,
  withBoxedValues: true,
  withDate: true,
  withMap: true,
  withNullPrototype: true,
  withSet: true,
  withSparseArray: true,
  withTypedArray: true,
  withUnicodeString: true,
});

for (const file of exampleFiles()) {
  const example = loadExample(file);
  const definition = resourceDefinitions.find((candidate) => candidate.kind === example.kind);
  if (!definition) throw new Error(`no definition for ${example.kind}`);

  test(`mutations of ${file} never throw and every rejection is specific`, (t) => {
    fc.assert(
      fc.property(mutatedSpec(example.spec, definition.spec), (spec) => checkOutcome(example.kind, spec)),
      { numRuns: 400 },
    );
    t.pass();
  });

  test(`mutations of ${file} as updates of it never throw and every rejection is specific`, (t) => {
    fc.assert(
      fc.property(mutatedSpec(example.spec, definition.spec), (spec) =>
        checkOutcome(example.kind, spec, example.spec),
      ),
      { numRuns: 200 },
    );
    t.pass();
  });
}

for (const definition of resourceDefinitions) {
  test(`arbitrary values as a ${definition.kind} spec never throw`, (t) => {
    fc.assert(
      fc.property(anything, anything, (spec, old) => checkOutcome(definition.kind as Kind, spec, old)),
      { numRuns: 300 },
    );
    t.pass();
  });
}

test("the mutations reach both outcomes and most rule reasons", (t) => {
  // Guards the generator itself: if it only ever produced type errors, the properties above
  // would pass without exercising the cross-field rules.
  const seen = new Set<string>();
  let accepted = 0;
  for (const file of exampleFiles()) {
    const example = loadExample(file);
    const definition = resourceDefinitions.find((candidate) => candidate.kind === example.kind);
    if (!definition) continue;
    for (const spec of fc.sample(mutatedSpec(example.spec, definition.spec), { numRuns: 600, seed: 7 })) {
      const result = specParsers[example.kind](spec);
      if (result.ok) accepted++;
      else for (const error of result.errors) seen.add(error.reason);
    }
  }
  const rules = resourceDefinitions.flatMap((definition) => ruleReasons(definition.spec));
  const reached = rules.filter((reason) => seen.has(reason));
  t.true(accepted > 0, "some mutations are valid");
  t.true(reached.length >= rules.length / 2, `reached only ${reached.join(", ")}`);
});
