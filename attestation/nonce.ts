/**
 * The attestation nonce commits to the learner's signing key, so that a delta signed with that key
 * proves it came from a pod on a GPU that attested for this run and round:
 *
 *   nonce = SHA-256( "sovereign.ai/attestation-nonce/v1" ‖ len‖hubChallenge ‖ len‖runId ‖ round ‖ len‖learnerPublicKey )
 *
 * with each variable-length part prefixed by its 4-byte big-endian length and round as an 8-byte
 * big-endian integer. Plain concatenation would be ambiguous (run "ab" + key "c…" = run "a" + key
 * "bc…"); the domain tag keeps the hash from being reused in another protocol.
 */
import { createHash } from "node:crypto";
import { AttestationError } from "./errors.ts";
import { Reason } from "./reasons.ts";

export const NONCE_DOMAIN = "sovereign.ai/attestation-nonce/v1";
const MIN_CHALLENGE_BYTES = 16;

export interface NonceBinding {
  /** Fresh random bytes from the hub, at least 16. */
  hubChallenge: Uint8Array;
  /** FederatedRun identity (namespace/name or uid). */
  runId: string;
  /** Training round the learner is admitted for. */
  round: number;
  /** The learner's delta-signing public key, in its wire encoding (e.g. raw Ed25519 or SPKI DER). */
  learnerPublicKey: Uint8Array;
}

const lengthPrefixed = (bytes: Uint8Array): Buffer => {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(bytes.length);
  return Buffer.concat([len, bytes]);
};

export function deriveAttestationNonce(binding: NonceBinding): Uint8Array {
  if (binding.hubChallenge.length < MIN_CHALLENGE_BYTES) {
    throw new AttestationError(
      Reason.NonceMismatch,
      `hub challenge has ${binding.hubChallenge.length} bytes; use at least 16 random bytes`,
    );
  }
  if (!Number.isSafeInteger(binding.round) || binding.round < 0) {
    throw new AttestationError(Reason.NonceMismatch, `round ${binding.round} is not a non-negative integer`);
  }
  if (binding.learnerPublicKey.length === 0) {
    throw new AttestationError(
      Reason.NonceMismatch,
      "learner public key is empty; generate the learner key before the challenge",
    );
  }
  const round = Buffer.alloc(8);
  round.writeBigUInt64BE(BigInt(binding.round));
  return new Uint8Array(
    createHash("sha256")
      .update(NONCE_DOMAIN)
      .update(lengthPrefixed(binding.hubChallenge))
      .update(lengthPrefixed(Buffer.from(binding.runId, "utf8")))
      .update(round)
      .update(lengthPrefixed(binding.learnerPublicKey))
      .digest(),
  );
}

/** What a delta verifier checks: this key is the one the attested nonce committed to. */
export const nonceBindsKey = (nonce: Uint8Array, binding: NonceBinding): boolean =>
  Buffer.from(deriveAttestationNonce(binding)).equals(Buffer.from(nonce));
