import test from "ava";
import { emitTypes } from "../../crds/emit-types.ts";
import type { ResourceDefinition, Schema } from "../../crds/schema/types.ts";

const definition = (
  spec: Schema,
  status: Schema = { type: "object", description: "S.", tsName: "ThingStatus" },
) =>
  ({
    kind: "Thing",
    plural: "things",
    singular: "thing",
    shortNames: [],
    scope: "Cluster",
    description: "A thing.",
    spec,
    status,
    printerColumns: [],
  }) satisfies ResourceDefinition;

/** The emitted text of one interface, from `export interface Name` to its closing brace. */
function declaration(source: string, name: string): string {
  const start = source.indexOf(`export interface ${name} {`);
  if (start < 0) throw new Error(`no interface ${name} in:\n${source}`);
  return source.slice(start, source.indexOf("\n}\n", start) + 3);
}

const strip = (text: string) =>
  text
    .split("\n")
    .filter((line) => !line.trim().startsWith("/**"))
    .join("\n");

test("required and defaulted fields are non-optional, others optional; enums become unions", (t) => {
  const spec: Schema = {
    type: "object",
    description: "Spec.",
    tsName: "ThingSpec",
    required: ["name"],
    properties: {
      name: { type: "string", description: "Name." },
      size: { type: "integer", description: "Size.", default: 3 },
      mode: { type: "string", description: "Mode.", enum: ["A", "B"] },
      labels: {
        type: "object",
        description: "Labels.",
        additionalProperties: { type: "string", description: "Value." },
      },
      quantities: {
        type: "array",
        description: "Quantities.",
        items: { description: "Q.", "x-kubernetes-int-or-string": true },
      },
      nested: {
        type: "object",
        description: "Nested.",
        properties: { on: { type: "boolean", description: "On." } },
      },
    },
  };
  t.is(
    strip(declaration(emitTypes([definition(spec)]), "ThingSpec")),
    `export interface ThingSpec {
  name: string;
  size: number;
  mode?: "A" | "B";
  labels?: Record<string, string>;
  quantities?: Array<number | string>;
  nested?: {
    on?: boolean;
  };
}
`,
  );
});

test("descriptions become doc comments, with the default spelled out and comment terminators escaped", (t) => {
  const spec: Schema = {
    type: "object",
    description: "Spec.",
    tsName: "ThingSpec",
    properties: { size: { type: "integer", description: "How big */ it is.", default: 3 } },
  };
  t.true(emitTypes([definition(spec)]).includes("/** How big *\\/ it is. Default: 3. */"));
});

test("a named schema is declared once and referenced by name", (t) => {
  const shared: Schema = { type: "object", description: "Ref.", tsName: "Ref", properties: {} };
  const spec: Schema = {
    type: "object",
    description: "Spec.",
    tsName: "ThingSpec",
    properties: { a: shared, b: { ...shared }, list: { type: "array", description: "L.", items: shared } },
  };
  const source = emitTypes([definition(spec)]);
  t.is(source.split("export interface Ref {").length - 1, 1);
  t.regex(declaration(source, "ThingSpec"), /a\?: Ref;\n.*\n {2}b\?: Ref;\n.*\n {2}list\?: Ref\[\];/s);
});

test("two different schemas under one name are refused", (t) => {
  const spec: Schema = {
    type: "object",
    description: "Spec.",
    tsName: "ThingSpec",
    properties: {
      a: { type: "object", description: "One.", tsName: "Ref", properties: {} },
      b: { type: "object", description: "Two.", tsName: "Ref", properties: {} },
    },
  };
  t.throws(() => emitTypes([definition(spec)]), { message: /two different schemas are both named Ref/ });
});
