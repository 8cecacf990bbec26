// Names the operator writes under, in one place: the API group it serves, and the field
// manager of each mode (server-side apply tracks field ownership by it, so hub and member
// writes to one object never overwrite each other).
import { GROUP, VERSION } from "../crds/schema/types.ts";

/** `{ group, version }` for CustomObjectsApi calls. */
export const SOVEREIGN_API = { group: GROUP, version: VERSION } as const;

export const HUB_FIELD_MANAGER = "sovereign-hub";
export const MEMBER_FIELD_MANAGER = "sovereign-member";
