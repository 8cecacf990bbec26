/**
 * Building blocks shared by the resources. Bounds (maxLength, maxItems) are not only
 * sanity limits: the API server estimates the worst-case cost of every CEL rule from them and
 * rejects a CRD whose rules could exceed its budget, so every string and list that a rule
 * touches must be bounded.
 */
import type { ConditionCatalog } from "./conditions.ts";
import type { Rule, Schema } from "./types.ts";

type Extra = Omit<Partial<Schema>, "type" | "description">;

export const str = (description: string, extra: Extra = {}): Schema => ({
  type: "string",
  description,
  ...extra,
});
export const int = (description: string, extra: Extra = {}): Schema => ({
  type: "integer",
  format: "int32",
  description,
  ...extra,
});
export const int64 = (description: string, extra: Extra = {}): Schema => ({
  type: "integer",
  format: "int64",
  description,
  ...extra,
});
export const num = (description: string, extra: Extra = {}): Schema => ({
  type: "number",
  format: "double",
  description,
  ...extra,
});
export const bool = (description: string, extra: Extra = {}): Schema => ({
  type: "boolean",
  description,
  ...extra,
});
export const obj = (description: string, properties: Record<string, Schema>, extra: Extra = {}): Schema => ({
  type: "object",
  description,
  properties,
  ...extra,
});
export const list = (description: string, items: Schema, extra: Extra = {}): Schema => ({
  type: "array",
  description,
  items,
  ...extra,
});
export const time = (description: string): Schema => str(description, { format: "date-time" });
/** An object with free-form keys, all holding values of one schema. */
export const map = (description: string, values: Schema, maxProperties: number): Schema => ({
  type: "object",
  description,
  additionalProperties: values,
  maxProperties,
});

/** Lowercase RFC 1123 name, as used for every Kubernetes object name this API refers to. */
export const K8S_NAME_PATTERN = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

export const objectName = (description: string): Schema =>
  str(description, { minLength: 1, maxLength: 253, pattern: K8S_NAME_PATTERN });

/** A reference by name to a cluster-scoped object of a known kind. */
export const nameRef = (description: string, kindName: string): Schema =>
  obj(
    description,
    { name: objectName(`Name of the ${kindName}. Required.`) },
    { required: ["name"], "x-kubernetes-map-type": "atomic" },
  );

/**
 * ISO 3166-1 alpha-2 country codes are two uppercase letters (including the reserved "EU");
 * blocs that are not countries (EEA, EFTA, ASEAN, MERCOSUR) are 3 to 16 uppercase letters.
 */
export const JURISDICTION_PATTERN = "^[A-Z]{2}$|^[A-Z][A-Z0-9]{2,15}$";
export const jurisdiction = (description: string): Schema =>
  str(
    `${description} An ISO 3166-1 alpha-2 country code (e.g. "DE", or the reserved "EU") or an uppercase bloc name of 3-16 characters (e.g. "EEA", "ASEAN").`,
    { minLength: 2, maxLength: 16, pattern: JURISDICTION_PATTERN },
  );

export const jurisdictionSet = (description: string): Schema =>
  list(description, jurisdiction("One jurisdiction."), {
    maxItems: 64,
    "x-kubernetes-list-type": "set",
  });

const QUANTITY_PATTERN =
  "^(\\+|-)?(([0-9]+(\\.[0-9]*)?)|(\\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\\+|-)?(([0-9]+(\\.[0-9]*)?)|(\\.[0-9]+))))?$";

/** A map of resource name to Kubernetes quantity, as in a Pod's `resources.requests`. */
const resourceMap = (description: string): Schema =>
  map(
    description,
    {
      description: 'A Kubernetes quantity, e.g. "8", "500m", "64Gi".',
      "x-kubernetes-int-or-string": true,
      pattern: QUANTITY_PATTERN,
    },
    32,
  );

export const resourceRequirements = (description: string): Schema =>
  obj(description, {
    requests: resourceMap(
      'Resources the scheduler reserves for each learner, keyed by resource name (e.g. cpu: "8", memory: "64Gi", nvidia.com/gpu: "1"). Empty means none reserved.',
    ),
    limits: resourceMap(
      "Hard limits for each learner, keyed by resource name. GPUs are requested here as nvidia.com/gpu. Empty means no limits.",
    ),
  });

const labelSelectorRequirementRule: Rule = {
  cel: "self.operator in ['In', 'NotIn'] ? size(self.values) > 0 : size(self.values) == 0",
  message: "operators In and NotIn need at least one value; Exists and DoesNotExist take no values",
  reason: "SelectorValuesMismatch",
  fieldPath: ".values",
  holds: (self) =>
    ["In", "NotIn"].includes(self.operator) ? self.values.length > 0 : self.values.length === 0,
};

export const labelSelector = (description: string): Schema =>
  obj(
    description,
    {
      matchLabels: map(
        "Labels the object must carry, exactly. Combined with matchExpressions by AND. Empty matches everything.",
        str("Required label value.", { maxLength: 63 }),
        32,
      ),
      matchExpressions: list(
        "Set-based requirements, combined by AND. Empty adds no requirement.",
        obj(
          "One requirement on a label.",
          {
            key: str("Label key the requirement applies to.", { minLength: 1, maxLength: 317 }),
            operator: str(
              "How the label value is compared: In, NotIn (value in / not in values), Exists, DoesNotExist (values must be empty).",
              { enum: ["In", "NotIn", "Exists", "DoesNotExist"] },
            ),
            values: list("Label values for In and NotIn.", str("A label value.", { maxLength: 63 }), {
              maxItems: 64,
              default: [],
              "x-kubernetes-list-type": "atomic",
            }),
          },
          { required: ["key", "operator"], rules: [labelSelectorRequirementRule] },
        ),
        { maxItems: 16, "x-kubernetes-list-type": "atomic" },
      ),
    },
    { "x-kubernetes-map-type": "atomic", tsName: "LabelSelector" },
  );

/** metav1.Condition, kept as a list-map keyed by `type` so server-side apply merges per condition. */
export const conditions = (kind: string, catalog: ConditionCatalog): Schema =>
  list(
    `Latest observations of the ${kind}'s state, one entry per type: ${Object.entries(catalog)
      .map(([type, { meaning }]) => `${type} (${meaning})`)
      .join("; ")}. Reasons are listed in docs/api.md.`,
    obj(
      "One aspect of the current state, in the standard Kubernetes condition shape.",
      {
        type: str("Condition type, e.g. Ready.", {
          maxLength: 316,
          pattern:
            "^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
        }),
        status: str("Whether the condition holds: True, False or Unknown.", {
          enum: ["True", "False", "Unknown"],
        }),
        observedGeneration: int64(
          "metadata.generation of the object when the condition was set; older than the current generation means stale.",
          { minimum: 0 },
        ),
        lastTransitionTime: time("When status last changed (RFC 3339)."),
        reason: str("PascalCase machine-readable reason for the last transition.", {
          minLength: 1,
          maxLength: 1024,
          pattern: "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        }),
        message: str("Human-readable detail: what happened and what happens next. May be empty.", {
          maxLength: 32768,
        }),
      },
      { required: ["type", "status", "lastTransitionTime", "reason", "message"], tsName: "Condition" },
    ),
    { maxItems: 16, "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"] },
  );

export const observedGeneration = (kind: string): Schema =>
  int64(
    `metadata.generation of the ${kind} that the status reflects; when it lags metadata.generation the operator has not yet acted on the latest spec.`,
    { minimum: 0 },
  );

/** Transition rule: the field may not change once the object exists. */
export const immutable = (what: string, reason: string, howToChange: string): Rule => ({
  cel: "self == oldSelf",
  message: `${what} is immutable; ${howToChange}`,
  reason,
  holds: (self, oldSelf, schema) => oldSelf === undefined || equalUnder(schema, self, oldSelf),
});

/**
 * Equality as CEL sees it on Kubernetes objects: lists of type set or map are compared
 * without regard to order, atomic lists in order.
 */
export function equalUnder(schema: Schema, a: unknown, b: unknown): boolean {
  if (Array.isArray(a) && Array.isArray(b)) {
    if (a.length !== b.length) return false;
    const items = schema.items ?? { description: "" };
    if (schema["x-kubernetes-list-type"] === "set" || schema["x-kubernetes-list-type"] === "map") {
      return a.every((item) => b.some((other) => equalUnder(items, item, other)));
    }
    return a.every((item, index) => equalUnder(items, item, b[index]));
  }
  if (isPlainObject(a) && isPlainObject(b)) {
    const keys = Object.keys(a);
    if (keys.length !== Object.keys(b).length) return false;
    return keys.every((key) => {
      const child = schema.properties?.[key] ?? schema.additionalProperties ?? { description: "" };
      return Object.hasOwn(b, key) && equalUnder(child, a[key], b[key]);
    });
  }
  return a === b;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
