/**
 * Checkpoint keys: Ed25519 only. A key is named by its RFC 7638 JWK thumbprint, which is
 * derived from the key itself, so a PEM file (which carries no name) and a JWK set name the same
 * key the same way, and a checkpoint cannot claim a trusted key's id for another key.
 */
import { createHash, createPublicKey, type JsonWebKey, type KeyObject } from "node:crypto";
import { isPlainObject } from "./entry.ts";
import { AuditError } from "./errors.ts";

export interface TrustedKey {
  /** RFC 7638 thumbprint (base64url SHA-256 of the canonical JWK). */
  keyId: string;
  /** `ed25519:` + base64url of the 32 raw public key bytes, as checkpoints carry it. */
  publicKey: string;
  key: KeyObject;
}

const KEY_PREFIX = "ed25519:";
const RAW_KEY_B64URL = /^[A-Za-z0-9_-]{43}$/;

/** RFC 7638 thumbprint of an Ed25519 key given as the base64url `x` of its JWK. */
export const ed25519KeyId = (x: string): string =>
  createHash("sha256").update(`{"crv":"Ed25519","kty":"OKP","x":"${x}"}`).digest("base64url");

/** The trusted form of an Ed25519 public (or private: only the public half is kept) key. */
export function trustedKey(key: KeyObject): TrustedKey {
  const publicKey = key.type === "private" ? createPublicKey(key) : key;
  const jwk = publicKey.export({ format: "jwk" });
  if (jwk.kty !== "OKP" || jwk.crv !== "Ed25519" || typeof jwk.x !== "string") {
    throw new AuditError(
      "AuditKeysInvalid",
      `a ${publicKey.asymmetricKeyType ?? "symmetric"} key is not an Ed25519 key; checkpoints are signed with Ed25519`,
    );
  }
  return { keyId: ed25519KeyId(jwk.x), publicKey: `${KEY_PREFIX}${jwk.x}`, key: publicKey };
}

/** The key a checkpoint's `publicKey` field names, or undefined when the field is not one. */
export function keyFromField(field: string): KeyObject | undefined {
  if (!field.startsWith(KEY_PREFIX) || !RAW_KEY_B64URL.test(field.slice(KEY_PREFIX.length))) return undefined;
  try {
    return createPublicKey({
      key: { kty: "OKP", crv: "Ed25519", x: field.slice(KEY_PREFIX.length) },
      format: "jwk",
    });
  } catch {
    return undefined;
  }
}

const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----[\s\S]*?-----END \1-----/g;

/**
 * Reads the auditor's trusted checkpoint keys: PEM `PUBLIC KEY` blocks (one or more), a JWK, a
 * JWK set `{"keys": [...]}`, or a JSON array of JWKs. Private keys are refused: an auditor
 * must never need one.
 */
export function parseTrustedKeys(text: string): TrustedKey[] {
  const trimmed = text.trim();
  const keys = trimmed.startsWith("{") || trimmed.startsWith("[") ? fromJson(trimmed) : fromPem(trimmed);
  if (keys.length === 0) {
    throw new AuditError(
      "AuditKeysInvalid",
      "the key file holds no public key; give PEM 'PUBLIC KEY' blocks or a JWK set of Ed25519 keys",
    );
  }
  return keys;
}

function fromPem(text: string): TrustedKey[] {
  const keys: TrustedKey[] = [];
  for (const match of text.matchAll(PEM_BLOCK)) {
    if (match[1] !== "PUBLIC KEY") {
      throw new AuditError(
        "AuditKeysInvalid",
        `the key file holds a '${match[1]}' block; give the verifier public keys only ('PUBLIC KEY')`,
      );
    }
    keys.push(trustedKey(parseKey(() => createPublicKey(match[0]), `PEM block ${keys.length + 1}`)));
  }
  return keys;
}

function fromJson(text: string): TrustedKey[] {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new AuditError("AuditKeysInvalid", "the key file is neither PEM nor JSON", { cause: err });
  }
  const jwks = Array.isArray(value) ? value : isPlainObject(value) && "keys" in value ? value.keys : [value];
  if (!Array.isArray(jwks)) throw new AuditError("AuditKeysInvalid", "'keys' in the JWK set is not an array");
  return jwks.map((jwk, i) => {
    if (!isPlainObject(jwk)) throw new AuditError("AuditKeysInvalid", `JWK ${i + 1} is not an object`);
    if ("d" in jwk) {
      throw new AuditError(
        "AuditKeysInvalid",
        `JWK ${i + 1} is a private key; give the verifier public keys only (drop "d")`,
      );
    }
    const { kty, crv, x } = jwk as JsonWebKey;
    return trustedKey(
      parseKey(() => createPublicKey({ key: { kty, crv, x }, format: "jwk" }), `JWK ${i + 1}`),
    );
  });
}

function parseKey(parse: () => KeyObject, what: string): KeyObject {
  try {
    return parse();
  } catch (err) {
    throw new AuditError("AuditKeysInvalid", `${what} is not a public key the verifier can read`, {
      cause: err,
    });
  }
}
