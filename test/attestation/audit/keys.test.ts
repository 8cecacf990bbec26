// Trusted-key files as auditors are handed them: PEM or JWK(S), public halves only, named by
// their RFC 7638 thumbprint whichever way they come.
import { createPublicKey, generateKeyPairSync } from "node:crypto";
import test from "ava";
import { ed25519KeyId, isAuditError, parseTrustedKeys, trustedKey } from "../../../attestation/audit/mod.ts";
import { logKey, otherKey } from "./helpers.ts";

test("the key id is the RFC 7638 thumbprint (RFC 8037 appendix A.3 vector)", (t) => {
  t.is(
    ed25519KeyId("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"),
    "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k",
  );
});

test("PEM blocks, a JWK, a JWK set and a JWK array name the same keys the same way", (t) => {
  const pems = [logKey, otherKey].map((k) => createPublicKey(k).export({ format: "pem", type: "spki" }));
  const jwks = [logKey, otherKey].map((k) => createPublicKey(k).export({ format: "jwk" }));
  const expected = [trustedKey(logKey), trustedKey(otherKey)].map((k) => [k.keyId, k.publicKey]);
  const ids = (text: string) => parseTrustedKeys(text).map((k) => [k.keyId, k.publicKey]);
  t.deepEqual(ids(`# audit keys\n${pems.join("\n")}`), expected);
  t.deepEqual(
    ids(JSON.stringify({ keys: jwks.map((j) => ({ ...j, kid: "ignored", use: "sig" })) })),
    expected,
  );
  t.deepEqual(ids(JSON.stringify(jwks)), expected);
  t.deepEqual(ids(JSON.stringify(jwks[0])), expected.slice(0, 1));
  t.deepEqual(trustedKey(logKey).key.type, "public", "only the public half is kept");
});

test("private keys, other algorithms and empty files are refused with AuditKeysInvalid", (t) => {
  const cases: [string, RegExp][] = [
    [
      logKey.export({ format: "pem", type: "pkcs8" }).toString(),
      /'PRIVATE KEY' block; give the verifier public keys only/,
    ],
    [JSON.stringify(logKey.export({ format: "jwk" })), /private key; give the verifier public keys only/],
    [
      generateKeyPairSync("ec", { namedCurve: "P-256" })
        .publicKey.export({ format: "pem", type: "spki" })
        .toString(),
      /ec key is not an Ed25519 key/,
    ],
    ["", /holds no public key/],
    ["{", /neither PEM nor JSON/],
    ['{"keys": 1}', /'keys' in the JWK set is not an array/],
    ['[{"kty":"OKP","crv":"Ed25519","x":"short"}]', /JWK 1 is not a public key the verifier can read/],
    ["-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----", /PEM block 1 is not a public key/],
  ];
  for (const [text, message] of cases) {
    const err = t.throws(() => parseTrustedKeys(text));
    t.true(isAuditError(err, "AuditKeysInvalid"), err?.message);
    t.regex(err?.message ?? "", message);
  }
});
