// The contract between a region's member and the hub about learner keys: the member lists each
// learner's key binding in its RegionWork's status (`learnerKeys`); the hub checks a delta's
// signature against the listed key, provided the listed nonce commits to that key, run and
// round and the key was not revoked when the delta arrived. Both modes use it; neither owns it.
import { type NonceBinding, nonceBindsKey } from "../attestation/mod.ts";
import type { LearnerKey, RegionWork } from "../crds/types.generated.ts";

/** How a learner's Ed25519 public key is written in manifests and in `learnerKeys`. */
export const LEARNER_KEY_PREFIX = "ed25519:";

/**
 * The key binding the region lists for `learner`: the one with `publicKey` when given (a
 * delta's manifest names its key), else the newest unrevoked one. Undefined when the region
 * lists none: such a delta is refused.
 */
export function learnerKeyFromWork(
  work: Pick<RegionWork, "status">,
  learner: string,
  publicKey?: string,
): LearnerKey | undefined {
  const entries = (work.status?.learnerKeys ?? []).filter((k) => k.learner === learner);
  if (publicKey !== undefined) return entries.find((k) => k.publicKey === publicKey);
  return entries.filter((k) => !k.revokedAt).sort((a, b) => b.attestedAt.localeCompare(a.attestedAt))[0];
}

/**
 * Whether a delta received at `at` (the hub's own clock or the stream's timestamp, never the
 * learner's manifest time, which the learner writes itself) may count under this binding.
 */
export function learnerKeyValidAt(entry: LearnerKey, at: Date | number): boolean {
  const t = typeof at === "number" ? at : at.getTime();
  return entry.revokedAt === undefined || t < Date.parse(entry.revokedAt);
}

/** The nonce binding of a listed key, for `nonceBindsKey` (runId is the run's uid, spec.run.uid). */
export function bindingOf(entry: LearnerKey, runUid: string): NonceBinding {
  return {
    hubChallenge: new Uint8Array(Buffer.from(entry.challenge, "base64url")),
    runId: runUid,
    round: entry.round,
    learnerPublicKey: new Uint8Array(
      Buffer.from(entry.publicKey.slice(LEARNER_KEY_PREFIX.length), "base64url"),
    ),
  };
}

/** The listed nonce commits to the listed key, run and round (what the hub checks before trusting the entry). */
export const learnerKeyBound = (entry: LearnerKey, runUid: string): boolean =>
  nonceBindsKey(new Uint8Array(Buffer.from(entry.nonce, "hex")), bindingOf(entry, runUid));
