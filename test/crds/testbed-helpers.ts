/** Small helpers for the API server tests, on top of the testbed harness. */
import { type Testbed, uniqueName } from "../testbed/harness.ts";
import { regionNames } from "../testbed/topology.ts";
import type { ExampleObject } from "./fixtures.ts";

export const HUB = "hub";
/** Known before the testbed is reached, so tests can be declared per cluster. */
export const ALL_CLUSTERS = [HUB, ...regionNames()];

/** A copy of the example under a name no concurrent test or earlier run uses. */
export function withUniqueName(example: ExampleObject): ExampleObject {
  const copy = structuredClone(example);
  copy.metadata.name = uniqueName(example.metadata.name.slice(0, 40));
  return copy;
}

/**
 * Creates a uniquely named namespace shared by a file's tests (hence not the per-test
 * `testNamespace`); call `remove` when done (it does not wait for deletion).
 */
export async function createNamespace(
  tb: Testbed,
  cluster: string,
): Promise<{ name: string; remove: () => Promise<void> }> {
  const name = uniqueName("crd-test");
  const created = await tb.kubectl(cluster, ["create", "namespace", name]);
  if (created.code !== 0) throw new Error(`creating namespace ${name}: ${created.stderr}`);
  return {
    name,
    remove: async () => {
      await tb.kubectl(cluster, ["delete", "namespace", name, "--wait=false"]);
    },
  };
}

/** Collapses whitespace so text wrapped by kubectl can be matched against a one-line description. */
export const flatten = (text: string): string => text.replace(/\s+/g, " ").trim();
