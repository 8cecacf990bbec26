/** Example CRs as test fixtures: every test starts from a valid example and breaks one thing. */
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { parse } from "yaml";
import type { Kind } from "../../crds/resources.ts";
import {
  type ParseOptions,
  type ParseResult,
  parseAttestationPolicySpec,
  parseFederatedRunSpec,
  parseRegionWorkSpec,
  parseSovereignNodeSpec,
} from "../../crds/validate.ts";

export const EXAMPLES_DIR = path.join(import.meta.dirname, "../../examples");

export interface ExampleObject {
  apiVersion: string;
  kind: Kind;
  metadata: { name: string; [key: string]: unknown };
  // biome-ignore lint/suspicious/noExplicitAny: fixtures are mutated freely to build invalid specs
  spec: any;
}

export const exampleFiles = (): string[] =>
  readdirSync(EXAMPLES_DIR)
    .filter((name) => name.endsWith(".yaml"))
    .sort();

/** Parsed as YAML 1.1, the dialect kubectl and the API server read. */
export function loadExample(file: string): ExampleObject {
  return parse(readFileSync(path.join(EXAMPLES_DIR, file), "utf8"), { version: "1.1" }) as ExampleObject;
}

export const specParsers: Record<Kind, (input: unknown, options?: ParseOptions) => ParseResult<unknown>> = {
  FederatedRun: parseFederatedRunSpec,
  SovereignNode: parseSovereignNodeSpec,
  AttestationPolicy: parseAttestationPolicySpec,
  RegionWork: parseRegionWorkSpec,
};
