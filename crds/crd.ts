/**
 * Turns a ResourceDefinition into an apiextensions.k8s.io/v1 CustomResourceDefinition object.
 * The authoring-only keys (`rules`, `tsName`) become `x-kubernetes-validations` or vanish, and
 * every default is spelled out in its field's description, so the description cannot drift
 * from the default the API server applies.
 */
import {
  API_VERSION,
  CATEGORY,
  GROUP,
  type ResourceDefinition,
  type Schema,
  VERSION,
} from "./schema/types.ts";

type JsonObject = Record<string, unknown>;

export function crdName(definition: ResourceDefinition): string {
  return `${definition.plural}.${GROUP}`;
}

export function describeDefault(schema: Schema): string {
  if (schema.default === undefined || schema.type === "object") return schema.description;
  const shown = Array.isArray(schema.default) ? `[${schema.default.join(", ")}]` : String(schema.default);
  return `${schema.description} Default: ${shown}.`;
}

export function toOpenApi(schema: Schema): JsonObject {
  const { rules, tsName: _tsName, properties, items, additionalProperties, ...plain } = schema;
  const out: JsonObject = { ...plain, description: describeDefault(schema) };
  if (properties) {
    out.properties = Object.fromEntries(
      Object.entries(properties).map(([key, child]) => [key, toOpenApi(child)]),
    );
  }
  if (items) out.items = toOpenApi(items);
  if (additionalProperties) out.additionalProperties = toOpenApi(additionalProperties);
  if (rules && rules.length > 0) {
    out["x-kubernetes-validations"] = rules.map((rule) => ({
      rule: rule.cel,
      message: rule.message,
      ...(rule.fieldPath ? { fieldPath: rule.fieldPath } : {}),
      ...(rule.k8sReason ? { reason: rule.k8sReason } : {}),
    }));
  }
  return out;
}

export interface CrdObject {
  apiVersion: "apiextensions.k8s.io/v1";
  kind: "CustomResourceDefinition";
  metadata: { name: string };
  spec: JsonObject;
}

export function toCrd(definition: ResourceDefinition): CrdObject {
  return {
    apiVersion: "apiextensions.k8s.io/v1",
    kind: "CustomResourceDefinition",
    metadata: { name: crdName(definition) },
    spec: {
      group: GROUP,
      names: {
        kind: definition.kind,
        listKind: `${definition.kind}List`,
        plural: definition.plural,
        singular: definition.singular,
        shortNames: [...definition.shortNames],
        categories: [CATEGORY],
      },
      scope: definition.scope,
      versions: [
        {
          name: VERSION,
          served: true,
          storage: true,
          subresources: { status: {} },
          additionalPrinterColumns: definition.printerColumns.map((column) => ({ ...column })),
          schema: {
            openAPIV3Schema: {
              type: "object",
              description: definition.description,
              required: ["spec"],
              properties: {
                apiVersion: {
                  type: "string",
                  description: `Versioned schema of this representation; always ${API_VERSION}.`,
                },
                kind: { type: "string", description: `Kind of this object; always ${definition.kind}.` },
                metadata: { type: "object" },
                spec: toOpenApi(definition.spec),
                status: toOpenApi(definition.status),
              },
            },
          },
        },
      ],
    },
  };
}
