/**
 * fast-check arbitraries for specs that are almost valid: a valid example with a few edits,
 * each edit either schema-aware (enum neighbours, bounds ±1, pattern-shaped strings, a field
 * the example leaves out) or blind (wrong types, deleted keys, unknown keys). Almost-valid
 * inputs reach the cross-field rules; random JSON alone would stop at the first type check.
 *
 * Numbers stay within ±1e6 so that JavaScript and the API server (int64/float64) read them alike.
 */
import fc from "fast-check";
import type { Schema } from "../../crds/schema/types.ts";

// biome-ignore lint/suspicious/noExplicitAny: mutated specs are arbitrary JSON
type Json = any;

/**
 * Keys without quotes or backslashes, so that field paths quoted in the API server's messages
 * can be read back unambiguously. (The parser's own property test covers arbitrary keys.)
 */
const objectKey = fc.string({ minLength: 1, maxLength: 8 }).filter((key) => !/["\\]/.test(key));

const smallJson: fc.Arbitrary<Json> = fc.letrec((tie) => ({
  value: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    fc.constant(null),
    fc.boolean(),
    fc.integer({ min: -1000, max: 1_000_000 }),
    fc.double({ min: -10, max: 10, noNaN: true }),
    fc.string({ maxLength: 12 }),
    fc.array(tie("value"), { maxLength: 3 }),
    fc.dictionary(objectKey, tie("value"), { maxKeys: 3 }),
  ),
})).value;

/** Values a field of this schema might plausibly (and often almost) hold. */
export function valueFor(schema: Schema, depth = 0): fc.Arbitrary<Json> {
  const candidates: fc.Arbitrary<Json>[] = [smallJson];
  if (schema.enum) candidates.push(fc.constantFrom(...schema.enum, "Bogus", ""));
  else if (schema["x-kubernetes-int-or-string"]) {
    candidates.push(fc.integer({ min: -2, max: 64 }), fc.constantFrom("1", "500m", "64Gi", "lots", ""));
  } else if (schema.type === "integer") {
    const low = schema.minimum ?? 0;
    const high = schema.maximum ?? low + 100;
    candidates.push(
      fc.integer({ min: low - 2, max: low + 10 }),
      fc.integer({ min: Math.max(low, high - 10), max: high + 2 }),
    );
  } else if (schema.type === "number") {
    candidates.push(
      fc.constantFrom(0, 0.1, 0.49, 0.5, 0.9, 1, 1.5),
      fc.double({ min: -1, max: 11, noNaN: true }),
    );
  } else if (schema.type === "boolean") candidates.push(fc.boolean());
  else if (schema.type === "string") {
    candidates.push(
      fc.string({ maxLength: 20 }),
      fc.constantFrom("", "x".repeat((schema.maxLength ?? 64) + 1)),
    );
    if (schema.pattern)
      candidates.push(fc.stringMatching(new RegExp(schema.pattern)).map((s) => s.slice(0, 300)));
  } else if (schema.type === "array" && schema.items) {
    candidates.push(fc.array(valueFor(schema.items, depth + 1), { maxLength: 4 }));
  } else if (schema.type === "object" && schema.properties && depth < 3) {
    const fields = Object.fromEntries(
      Object.entries(schema.properties).map(([key, child]) => [key, valueFor(child, depth + 1)]),
    );
    candidates.push(fc.record(fields, { requiredKeys: [...(schema.required ?? [])] }));
  }
  // Mostly schema-shaped values; the blind JSON value keeps type errors in the mix.
  return fc.oneof(
    { arbitrary: candidates[0] as fc.Arbitrary<Json>, weight: 1 },
    ...candidates.slice(1).map((arbitrary) => ({ arbitrary, weight: 4 })),
  );
}

interface SchemaPath {
  path: string[];
  schema: Schema;
}

/** Every object property reachable from `schema` without going through a list. */
function schemaPaths(schema: Schema, prefix: string[] = []): SchemaPath[] {
  return Object.entries(schema.properties ?? {}).flatMap(([key, child]) => [
    { path: [...prefix, key], schema: child },
    ...schemaPaths(child, [...prefix, key]),
  ]);
}

/** Every path present in a JSON value, list items included. */
function valuePaths(value: Json, prefix: (string | number)[] = []): (string | number)[][] {
  if (Array.isArray(value))
    return value.flatMap((item, index) => [[...prefix, index], ...valuePaths(item, [...prefix, index])]);
  if (value !== null && typeof value === "object") {
    return Object.entries(value).flatMap(([key, child]) => [
      [...prefix, key],
      ...valuePaths(child, [...prefix, key]),
    ]);
  }
  return [];
}

type Edit = (spec: Json) => void;

function setAt(root: Json, path: (string | number)[], value: Json): void {
  let node = root;
  for (const key of path.slice(0, -1)) {
    if (node[key] === null || typeof node[key] !== "object") node[key] = {};
    node = node[key];
  }
  node[path[path.length - 1] as string] = value;
}

function deleteAt(root: Json, path: (string | number)[]): void {
  let node = root;
  for (const key of path.slice(0, -1)) {
    node = node?.[key];
    if (node === null || typeof node !== "object") return;
  }
  const last = path[path.length - 1] as string | number;
  if (Array.isArray(node) && typeof last === "number") node.splice(last, 1);
  else delete node[last];
}

function editArbitrary(example: Json, schema: Schema): fc.Arbitrary<Edit> {
  const present = valuePaths(example);
  const known = schemaPaths(schema);
  const setKnownField = fc.constantFrom(...known).chain(({ path, schema: field }) =>
    valueFor(field).map(
      (value): Edit =>
        (spec) =>
          setAt(spec, path, value),
    ),
  );
  const replacePresent = fc.tuple(fc.constantFrom(...present), smallJson).map(
    ([path, value]): Edit =>
      (spec) =>
        setAt(spec, path, value),
  );
  const deletePresent = fc.constantFrom(...present).map(
    (path): Edit =>
      (spec) =>
        deleteAt(spec, path),
  );
  const addUnknown = fc
    .tuple(
      fc.constantFrom([], ...known.filter((k) => k.schema.type === "object").map((k) => k.path)),
      smallJson,
    )
    .map(
      ([path, value]): Edit =>
        (spec) =>
          setAt(spec, [...path, "unexpectedField"], value),
    );
  return fc.oneof(
    { arbitrary: setKnownField, weight: 6 },
    { arbitrary: replacePresent, weight: 2 },
    { arbitrary: deletePresent, weight: 2 },
    { arbitrary: addUnknown, weight: 1 },
  );
}

/** A copy of `example` with one to three edits applied. */
export function mutatedSpec(example: Json, schema: Schema): fc.Arbitrary<Json> {
  return fc.array(editArbitrary(example, schema), { minLength: 1, maxLength: 3 }).map((edits) => {
    const spec = structuredClone(example);
    for (const edit of edits) edit(spec);
    return spec;
  });
}
