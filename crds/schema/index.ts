import { attestationPolicy } from "./attestationpolicy.ts";
import { federatedRun } from "./federatedrun.ts";
import { regionWork } from "./regionwork.ts";
import { sovereignNode } from "./sovereignnode.ts";
import type { ResourceDefinition } from "./types.ts";

export * from "./types.ts";
export { attestationPolicy, federatedRun, regionWork, sovereignNode };

/** Every resource of the API, in the order they are generated and documented. */
export const resourceDefinitions: readonly ResourceDefinition[] = [
  federatedRun,
  sovereignNode,
  attestationPolicy,
  regionWork,
];
