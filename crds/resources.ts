/** Addressing facts about the kinds, for clients (tests, the operator, the demo). */
import { resourceDefinitions } from "./schema/index.ts";
import { API_VERSION, GROUP, VERSION } from "./schema/types.ts";

export type Kind = "FederatedRun" | "SovereignNode" | "AttestationPolicy" | "RegionWork";

export interface ResourceAddress {
  kind: Kind;
  group: string;
  version: string;
  apiVersion: string;
  plural: string;
  namespaced: boolean;
}

export function resourceAddress(kind: Kind): ResourceAddress {
  const definition = resourceDefinitions.find((candidate) => candidate.kind === kind);
  if (!definition) throw new Error(`unknown kind ${kind}`);
  return {
    kind,
    group: GROUP,
    version: VERSION,
    apiVersion: API_VERSION,
    plural: definition.plural,
    namespaced: definition.scope === "Namespaced",
  };
}
