/**
 * The subset of OpenAPI v3 that Kubernetes accepts for structural CRD schemas, plus two
 * authoring-only keys that never reach the API server:
 *
 * - `rules`: cross-field rules. Each carries its CEL expression (emitted as an
 *   `x-kubernetes-validations` entry) *and* a TypeScript twin (`holds`), so the operator's
 *   own parser enforces exactly the rules the API server enforces, from one definition.
 * - `tsName`: the name of the TypeScript interface generated for this node.
 *
 * `description` is mandatory so that an undocumented field fails to compile.
 */

export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

/** Error reasons the API server may report for a failing CEL rule. */
export type K8sRuleReason =
  | "FieldValueInvalid"
  | "FieldValueRequired"
  | "FieldValueForbidden"
  | "FieldValueDuplicate";

export interface Rule {
  /** CEL expression over `self` (and `oldSelf` for transition rules); true means valid. */
  cel: string;
  /** Shown to the user on violation; says what to change. Identical in the API server and the parser. */
  message: string;
  /** PascalCase reason code reported by the operator's parser. */
  reason: string;
  /** Field the error points at, relative to the node carrying the rule (e.g. ".maxRegions"). */
  fieldPath?: string;
  k8sReason?: K8sRuleReason;
  /**
   * TypeScript twin of `cel`. Receives the node with defaults applied, the old node for
   * transition rules (which the API server only evaluates on update), and the node's schema.
   */
  // biome-ignore lint/suspicious/noExplicitAny: rules read loosely typed, already schema-checked values
  holds: (self: any, oldSelf: any, schema: Schema) => boolean;
}

export interface Schema {
  description: string;
  type?: "object" | "array" | "string" | "integer" | "number" | "boolean";
  format?: "int32" | "int64" | "date-time" | "double";
  properties?: Record<string, Schema>;
  required?: readonly string[];
  additionalProperties?: Schema;
  items?: Schema;
  enum?: readonly (string | number)[];
  default?: JsonValue;
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: boolean;
  exclusiveMaximum?: boolean;
  minLength?: number;
  maxLength?: number;
  pattern?: string;
  minItems?: number;
  maxItems?: number;
  maxProperties?: number;
  "x-kubernetes-list-type"?: "atomic" | "set" | "map";
  "x-kubernetes-list-map-keys"?: readonly string[];
  "x-kubernetes-int-or-string"?: true;
  "x-kubernetes-map-type"?: "atomic" | "granular";
  rules?: readonly Rule[];
  tsName?: string;
}

export interface PrinterColumn {
  name: string;
  type: "string" | "integer" | "number" | "boolean" | "date";
  jsonPath: string;
  description: string;
  priority?: number;
}

/** Everything needed to emit one CRD and its TypeScript types. */
export interface ResourceDefinition {
  kind: string;
  plural: string;
  singular: string;
  shortNames: readonly string[];
  scope: "Namespaced" | "Cluster";
  /** One paragraph shown by `kubectl explain <kind>`. */
  description: string;
  spec: Schema;
  status: Schema;
  printerColumns: readonly PrinterColumn[];
}

export const GROUP = "sovereign.ai";
export const VERSION = "v1alpha1";
export const API_VERSION = `${GROUP}/${VERSION}`;
/** `kubectl get sovereign` lists every kind in this category. */
export const CATEGORY = "sovereign";
