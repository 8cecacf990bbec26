/**
 * Random and mutated specs sent to a real API server (server-side dry run, nothing stored) and
 * to the operator's parser. Nothing may crash, every rejection must name the offending field,
 * and the two must agree on which specs are valid: a disagreement means the CEL rule and its
 * TypeScript twin (or a bound, or a default) differ.
 */
import test from "ava";
import fc from "fast-check";
import { installCrds } from "../../crds/install.ts";
import { resourceDefinitions } from "../../crds/schema/index.ts";
import { useTestbed } from "../testbed/harness.ts";
import { type Outcome, submit } from "./api-client.ts";
import { exampleFiles, loadExample, specParsers } from "./fixtures.ts";
import { mutatedSpec } from "./mutations.ts";
import { createNamespace, HUB } from "./testbed-helpers.ts";

const tb = await useTestbed();
const hub = tb.kubeConfig(HUB);
let namespace = "";
let removeNamespace = async () => {};

test.before(async () => {
  await installCrds(hub);
  ({ name: namespace, remove: removeNamespace } = await createNamespace(tb, HUB));
});
test.after.always(() => removeNamespace());

/**
 * The fields a rejection names: causes of a 422, or the unknown fields of a strict-decoding 400.
 * The API server adds a cause without a field ("<nil>") to say it skipped the CEL rules of an
 * object that already failed its schema; that note names nothing and is left out.
 */
function rejectedFields(outcome: Exclude<Outcome, { accepted: true }>): string[] {
  if (outcome.code === 422) {
    return outcome.causes.flatMap((cause) => (cause.field && cause.field !== "<nil>" ? [cause.field] : []));
  }
  if (outcome.code === 400)
    return [...outcome.message.matchAll(/unknown field "([^"]+)"/g)].map((match) => match[1] ?? "");
  return [];
}

/**
 * Whether two field paths blame the same place. They may differ in depth: for an object where a
 * string belongs, the server's strict decoder names the object's keys as unknown fields, while
 * the parser reports the object itself as the wrong type.
 */
function sameSubtree(a: string, b: string): boolean {
  const within = (inner: string, outer: string) =>
    inner === outer || inner.startsWith(`${outer}.`) || inner.startsWith(`${outer}[`);
  return within(a, b) || within(b, a);
}

const examples = exampleFiles().map((file) => {
  const example = loadExample(file);
  const definition = resourceDefinitions.find((candidate) => candidate.kind === example.kind);
  if (!definition) throw new Error(`no definition for ${example.kind}`);
  return { file, example, schema: definition.spec };
});

const cases = fc.oneof(
  ...examples.map(({ example, schema }) =>
    mutatedSpec(example.spec, schema).map((spec) => ({ example, spec })),
  ),
);

test("random specs: the server never fails, rejects precisely, and agrees with the parser", async (t) => {
  let serverRejections = 0;
  await fc.assert(
    fc.asyncProperty(cases, async ({ example, spec }) => {
      const object = { ...example, metadata: { name: `property-${example.kind.toLowerCase()}` }, spec };
      const outcome = await submit(hub, object, { namespace, dryRun: true });
      const parsed = specParsers[example.kind](spec);
      const context = `spec ${JSON.stringify(spec)}\nserver: ${JSON.stringify(outcome)}\nparser: ${JSON.stringify(parsed)}`;
      if (outcome.accepted !== parsed.ok) throw new Error(`server and parser disagree\n${context}`);
      if (outcome.accepted || parsed.ok) return;
      serverRejections++;
      const fields = rejectedFields(outcome);
      if (fields.length === 0 || !fields.every((field) => field.startsWith("spec"))) {
        throw new Error(`rejection without a spec field (HTTP ${outcome.code})\n${context}`);
      }
      const parserPaths = parsed.errors.map((error) => error.path);
      if (!fields.some((field) => parserPaths.some((parserPath) => sameSubtree(field, parserPath)))) {
        throw new Error(`server and parser blame different fields\n${context}`);
      }
    }),
    { numRuns: 100, includeErrorInReport: true },
  );
  t.true(serverRejections > 0, "the generator produced some invalid specs");
});
