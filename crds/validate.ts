/**
 * The operator's own spec parsing. The same schema objects that generate the CRDs drive it,
 * so it enforces the same bounds, defaults and cross-field rules as the API server, and a
 * spec that passes here is what the operator may rely on (defaults filled in, typed).
 *
 * Pass `old` (the spec currently stored) to also check the immutability rules of an update.
 */

import { attestationPolicySpec } from "./schema/attestationpolicy.ts";
import { federatedRunSpec } from "./schema/federatedrun.ts";
import { regionWorkSpec } from "./schema/regionwork.ts";
import { sovereignNodeSpec } from "./schema/sovereignnode.ts";
import type { Schema } from "./schema/types.ts";
import { type SpecError, validateValue } from "./schema-validator.ts";
import type {
  AttestationPolicySpec,
  FederatedRunSpec,
  RegionWorkSpec,
  SovereignNodeSpec,
} from "./types.generated.ts";

export type { SpecError } from "./schema-validator.ts";
export { StructuralReason } from "./schema-validator.ts";

export type ParseResult<T> = { ok: true; value: T } | { ok: false; errors: SpecError[] };

export interface ParseOptions {
  /** The stored spec, when validating an update; enables the immutability rules. */
  old?: unknown;
}

function parseSpec<T>(schema: Schema, input: unknown, options: ParseOptions): ParseResult<T> {
  if (input === undefined) {
    return { ok: false, errors: [{ path: "spec", reason: "Required", message: "Required value" }] };
  }
  // Compare against the old spec as stored, i.e. defaulted, as the API server's oldSelf is.
  const old = options.old === undefined ? undefined : validateValue(schema, options.old, "spec").value;
  const { value, errors } = validateValue(schema, input, "spec", old);
  return errors.length === 0 ? { ok: true, value: value as T } : { ok: false, errors };
}

export const parseFederatedRunSpec = (
  input: unknown,
  options: ParseOptions = {},
): ParseResult<FederatedRunSpec> => parseSpec(federatedRunSpec, input, options);

export const parseSovereignNodeSpec = (
  input: unknown,
  options: ParseOptions = {},
): ParseResult<SovereignNodeSpec> => parseSpec(sovereignNodeSpec, input, options);

export const parseAttestationPolicySpec = (
  input: unknown,
  options: ParseOptions = {},
): ParseResult<AttestationPolicySpec> => parseSpec(attestationPolicySpec, input, options);

export const parseRegionWorkSpec = (
  input: unknown,
  options: ParseOptions = {},
): ParseResult<RegionWorkSpec> => parseSpec(regionWorkSpec, input, options);
