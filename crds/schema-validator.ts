/**
 * Validates a plain JSON value against a Schema the way the API server does for a custom
 * resource: structural checks, defaulting, then the rules' TypeScript twins. It returns the
 * value with defaults applied and every violation found; it never throws on bad input.
 *
 * Deliberate differences from the API server: unknown fields are reported (the server drops
 * them, or rejects them under fieldValidation=Strict, which kubectl uses); a node's rules run
 * only when its subtree is structurally valid, so the twins can trust the shapes they read.
 */
import type { Schema } from "./schema/types.ts";

export interface SpecError {
  /** Dotted path as the API server prints it, e.g. spec.placement.minRegions or spec.workload.env[2].name. */
  path: string;
  /** PascalCase code: a structural one below or a rule's reason. */
  reason: string;
  message: string;
}

export const StructuralReason = {
  WrongType: "WrongType",
  Required: "Required",
  UnknownField: "UnknownField",
  NotInEnum: "NotInEnum",
  BelowMinimum: "BelowMinimum",
  AboveMaximum: "AboveMaximum",
  TooShort: "TooShort",
  TooLong: "TooLong",
  PatternMismatch: "PatternMismatch",
  TooFewItems: "TooFewItems",
  TooManyItems: "TooManyItems",
  TooManyProperties: "TooManyProperties",
  DuplicateItem: "DuplicateItem",
} as const;

type Json = unknown;
type JsonObject = Record<string, Json>;

export function validateValue(
  schema: Schema,
  input: Json,
  path: string,
  old?: Json,
): { value: Json; errors: SpecError[] } {
  const errors: SpecError[] = [];
  const value = walk(schema, input, old, path, errors);
  return { value, errors };
}

function walk(schema: Schema, input: Json, old: Json, path: string, errors: SpecError[]): Json {
  const before = errors.length;
  const fail = (reason: string, message: string, at = path) => errors.push({ path: at, reason, message });

  if (!hasType(schema, input)) {
    fail(
      StructuralReason.WrongType,
      `Invalid value: ${describeType(input)}: must be of type ${expectedType(schema)}`,
    );
    return input;
  }
  let value = input;
  if (schema.enum && !schema.enum.includes(input as string | number)) {
    fail(
      StructuralReason.NotInEnum,
      `Unsupported value: ${safeStringify(input)}: supported values: ${schema.enum.map((v) => safeStringify(v)).join(", ")}`,
    );
  }
  if (typeof input === "string") checkString(schema, input, fail);
  if (typeof input === "number") checkNumber(schema, input, fail);
  if (Array.isArray(input)) value = walkArray(schema, input, old, path, errors);
  else if (isObject(input)) value = walkObject(schema, input, isObject(old) ? old : undefined, path, errors);

  if (errors.length === before) runRules(schema, value, old, path, errors);
  return value;
}

function hasType(schema: Schema, input: Json): boolean {
  if (schema["x-kubernetes-int-or-string"]) return typeof input === "string" || Number.isInteger(input);
  switch (schema.type) {
    case "object":
      return isObject(input);
    case "array":
      return Array.isArray(input);
    case "string":
      return typeof input === "string";
    case "integer":
      return Number.isSafeInteger(input);
    case "number":
      return typeof input === "number" && Number.isFinite(input);
    case "boolean":
      return typeof input === "boolean";
    default:
      return true;
  }
}

function expectedType(schema: Schema): string {
  return schema["x-kubernetes-int-or-string"] ? "integer or string" : (schema.type ?? "any");
}

function describeType(input: Json): string {
  if (input === null) return "null";
  if (Array.isArray(input)) return "array";
  if (typeof input === "number" && Number.isInteger(input)) return "integer";
  return typeof input;
}

function isObject(input: Json): input is JsonObject {
  return typeof input === "object" && input !== null && !Array.isArray(input);
}

type Fail = (reason: string, message: string) => void;

function checkString(schema: Schema, input: string, fail: Fail): void {
  // The API server counts characters (runes), not UTF-16 units.
  const length = [...input].length;
  if (schema.minLength !== undefined && length < schema.minLength) {
    fail(
      StructuralReason.TooShort,
      `Invalid value: ${JSON.stringify(input)}: should be at least ${schema.minLength} chars long`,
    );
  }
  if (schema.maxLength !== undefined && length > schema.maxLength) {
    fail(StructuralReason.TooLong, `Too long: may not be more than ${schema.maxLength} bytes`);
  }
  if (schema.pattern !== undefined && !new RegExp(schema.pattern, "u").test(input)) {
    fail(
      StructuralReason.PatternMismatch,
      `Invalid value: ${JSON.stringify(input)}: should match '${schema.pattern}'`,
    );
  }
}

function checkNumber(schema: Schema, input: number, fail: Fail): void {
  const { minimum, maximum } = schema;
  if (minimum !== undefined && (schema.exclusiveMinimum ? input <= minimum : input < minimum)) {
    fail(
      StructuralReason.BelowMinimum,
      `Invalid value: ${input}: should be greater than ${schema.exclusiveMinimum ? "" : "or equal to "}${minimum}`,
    );
  }
  if (maximum !== undefined && (schema.exclusiveMaximum ? input >= maximum : input > maximum)) {
    fail(
      StructuralReason.AboveMaximum,
      `Invalid value: ${input}: should be less than ${schema.exclusiveMaximum ? "" : "or equal to "}${maximum}`,
    );
  }
}

function walkArray(schema: Schema, input: Json[], old: Json, path: string, errors: SpecError[]): Json[] {
  if (schema.minItems !== undefined && input.length < schema.minItems) {
    errors.push({
      path,
      reason: StructuralReason.TooFewItems,
      message: `Invalid value: ${input.length}: should have at least ${schema.minItems} items`,
    });
  }
  if (schema.maxItems !== undefined && input.length > schema.maxItems) {
    errors.push({
      path,
      reason: StructuralReason.TooManyItems,
      message: `Too many: ${input.length}: must have at most ${schema.maxItems} items`,
    });
  }
  const items = schema.items;
  if (!items) return input;
  const mapKeys =
    schema["x-kubernetes-list-type"] === "map" ? (schema["x-kubernetes-list-map-keys"] ?? []) : undefined;
  const oldByKey = new Map<string, Json>();
  if (mapKeys && Array.isArray(old)) for (const item of old) oldByKey.set(listMapKey(item, mapKeys), item);

  const seen = new Set<string>();
  return input.map((item, index) => {
    const itemPath = `${path}[${index}]`;
    const identity =
      schema["x-kubernetes-list-type"] === "set"
        ? safeStringify(item)
        : mapKeys
          ? listMapKey(item, mapKeys)
          : undefined;
    if (identity !== undefined) {
      if (seen.has(identity)) {
        errors.push({
          path: itemPath,
          reason: StructuralReason.DuplicateItem,
          message: `Duplicate value: ${identity}`,
        });
      }
      seen.add(identity);
    }
    // Like the API server, correlate old and new items of a list-map by key; other lists are not correlated.
    return walk(items, item, mapKeys ? oldByKey.get(listMapKey(item, mapKeys)) : undefined, itemPath, errors);
  });
}

function listMapKey(item: Json, keys: readonly string[]): string {
  return safeStringify(keys.map((key) => (isObject(item) && Object.hasOwn(item, key) ? item[key] : null)));
}

/** JSON.stringify for identity and messages; input that JSON cannot hold (a bigint) must not throw. */
function safeStringify(value: Json): string {
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}

function walkObject(
  schema: Schema,
  input: JsonObject,
  old: JsonObject | undefined,
  path: string,
  errors: SpecError[],
): JsonObject {
  const out: JsonObject = {};
  const properties = schema.properties ?? {};
  const keys = Object.keys(input);
  const presentCount = keys.filter((key) => isPresent(input, key)).length;
  if (schema.maxProperties !== undefined && presentCount > schema.maxProperties) {
    errors.push({
      path,
      reason: StructuralReason.TooManyProperties,
      message: `Too many: ${presentCount}: must have at most ${schema.maxProperties} items`,
    });
  }
  for (const key of keys) {
    const childPath = `${path}.${key}`;
    const childSchema = Object.hasOwn(properties, key) ? properties[key] : schema.additionalProperties;
    if (!childSchema) {
      errors.push({
        path: childPath,
        reason: StructuralReason.UnknownField,
        message: `unknown field "${childPath}"`,
      });
      continue;
    }
    // The API server prunes null fields of a custom resource before defaulting (no field is
    // nullable here), so null means "unset": the default applies, and a required field is
    // missing. Unknown fields are rejected even when null, as the server's strict decoding does.
    if (input[key] === null) continue;
    const oldChild = old && Object.hasOwn(old, key) ? old[key] : undefined;
    define(out, key, walk(childSchema, input[key], oldChild, childPath, errors));
  }
  for (const [key, childSchema] of Object.entries(properties)) {
    if (isPresent(input, key) || childSchema.default === undefined) continue;
    const oldChild = old && Object.hasOwn(old, key) ? old[key] : undefined;
    define(
      out,
      key,
      walk(childSchema, structuredClone(childSchema.default), oldChild, `${path}.${key}`, errors),
    );
  }
  for (const key of schema.required ?? []) {
    if (!Object.hasOwn(out, key) && !isPresent(input, key)) {
      errors.push({ path: `${path}.${key}`, reason: StructuralReason.Required, message: "Required value" });
    }
  }
  return out;
}

function isPresent(input: JsonObject, key: string): boolean {
  return Object.hasOwn(input, key) && input[key] !== null;
}

/** Assigns without invoking setters, so a user-supplied key such as "__proto__" stays plain data. */
function define(target: JsonObject, key: string, value: Json): void {
  Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true });
}

function runRules(schema: Schema, value: Json, old: Json, path: string, errors: SpecError[]): void {
  for (const rule of schema.rules ?? []) {
    const isTransitionRule = rule.cel.includes("oldSelf");
    // The API server evaluates transition rules only on update, when an old value exists.
    if (isTransitionRule && old === undefined) continue;
    if (rule.holds(value, old, schema)) continue;
    errors.push({ path: path + (rule.fieldPath ?? ""), reason: rule.reason, message: rule.message });
  }
}
