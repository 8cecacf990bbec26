import { readFileSync } from "node:fs";
import path from "node:path";
import test from "ava";
import { parse } from "yaml";
import { toCrd } from "../../crds/crd.ts";
import { GENERATED_DIR } from "../../crds/generated-files.ts";
import {
  attestationPolicyConditions,
  federatedRunConditions,
  regionWorkConditions,
  sovereignNodeConditions,
} from "../../crds/schema/conditions.ts";
import { resourceDefinitions } from "../../crds/schema/index.ts";
import { CATEGORY, type Schema } from "../../crds/schema/types.ts";
import { StructuralReason } from "../../crds/validate.ts";
import { EXAMPLES_DIR, exampleFiles } from "./fixtures.ts";

const REPO_ROOT = path.join(import.meta.dirname, "../..");

function* nodes(
  schema: Schema,
  at: string,
  required = true,
): Generator<{ at: string; schema: Schema; required: boolean }> {
  yield { at, schema, required };
  for (const [key, child] of Object.entries(schema.properties ?? {})) {
    yield* nodes(child, `${at}.${key}`, schema.required?.includes(key) ?? false);
  }
  if (schema.items) yield* nodes(schema.items, `${at}[]`);
  if (schema.additionalProperties) yield* nodes(schema.additionalProperties, `${at}{}`);
}

test("every spec field that is optional and has no default says what unset (or empty) means", (t) => {
  const vague = resourceDefinitions.flatMap((definition) =>
    [...nodes(definition.spec, `${definition.kind}.spec`)]
      .filter(({ at }) => !at.endsWith("[]") && !at.endsWith("{}"))
      .filter(({ schema, required }) => !required && schema.default === undefined)
      .filter(({ schema }) => !/\b(unset|empty|required)\b/i.test(schema.description))
      .map(({ at }) => at),
  );
  t.deepEqual(vague, []);
});

test("descriptions are sentences", (t) => {
  for (const definition of resourceDefinitions) {
    for (const { at, schema } of [...nodes(definition.spec, "spec"), ...nodes(definition.status, "status")]) {
      t.regex(schema.description, /^\S.*[.)]$/s, `${definition.kind} ${at}`);
    }
  }
});

test("every list and string a CEL rule could read is bounded", (t) => {
  // Unbounded lists and strings make the API server's CEL cost estimate explode.
  for (const definition of resourceDefinitions) {
    for (const { at, schema } of nodes(definition.spec, "spec")) {
      if (schema.type === "array")
        t.not(schema.maxItems, undefined, `${definition.kind} ${at} needs maxItems`);
      if (schema.type === "string" && !schema.enum) {
        t.not(schema.maxLength, undefined, `${definition.kind} ${at} needs maxLength`);
      }
    }
  }
});

test("printer columns point at fields that exist", (t) => {
  for (const definition of resourceDefinitions) {
    for (const column of definition.printerColumns) {
      if (column.jsonPath === ".metadata.creationTimestamp") continue;
      const [, root, ...rest] = column.jsonPath.replace(/\[\?.*?\]/, "").split(".");
      let node: Schema | undefined = root === "spec" ? definition.spec : definition.status;
      for (const key of rest) node = node?.properties?.[key] ?? node?.items?.properties?.[key];
      t.truthy(node, `${definition.kind} column ${column.name}: ${column.jsonPath}`);
    }
  }
});

test("each CRD has a status subresource, the category, and conditions as a list-map keyed by type", (t) => {
  for (const definition of resourceDefinitions) {
    const crd = toCrd(definition).spec as {
      names: { categories: string[] };
      versions: { subresources: unknown }[];
    };
    t.deepEqual(crd.names.categories, [CATEGORY]);
    t.deepEqual(crd.versions[0]?.subresources, { status: {} });
    const conditions = definition.status.properties?.conditions;
    t.is(conditions?.["x-kubernetes-list-type"], "map");
    t.deepEqual(conditions?.["x-kubernetes-list-map-keys"], ["type"]);
  }
});

test("generated CRDs and examples read the same as YAML 1.1 (kubectl) and YAML 1.2", (t) => {
  const files = [
    ...resourceDefinitions.map((definition) =>
      path.join(REPO_ROOT, GENERATED_DIR, `${definition.plural}.yaml`),
    ),
    ...exampleFiles().map((file) => path.join(EXAMPLES_DIR, file)),
  ];
  for (const file of files) {
    const text = readFileSync(file, "utf8");
    t.deepEqual(parse(text, { version: "1.1" }), parse(text, { version: "1.2" }), path.basename(file));
  }
});

test("docs/api.md names every condition type and reason, rule reason, printer column and example", (t) => {
  const docs = readFileSync(path.join(REPO_ROOT, "docs/api.md"), "utf8");
  const expected = new Set<string>(Object.values(StructuralReason));
  for (const catalog of [
    federatedRunConditions,
    sovereignNodeConditions,
    attestationPolicyConditions,
    regionWorkConditions,
  ]) {
    for (const [type, { reasons }] of Object.entries(catalog)) {
      expected.add(`\`${type}\``);
      for (const reason of Object.keys(reasons)) expected.add(`\`${reason}\``);
    }
  }
  for (const definition of resourceDefinitions) {
    for (const { schema } of nodes(definition.spec, "spec")) {
      for (const rule of schema.rules ?? []) expected.add(rule.reason);
    }
    for (const column of definition.printerColumns) expected.add(column.name.toUpperCase());
    for (const shortName of definition.shortNames) expected.add(`\`${shortName}\``);
  }
  for (const file of exampleFiles()) expected.add(`examples/${file}`);
  t.deepEqual(
    [...expected].filter((text) => !docs.includes(text)),
    [],
  );
});
