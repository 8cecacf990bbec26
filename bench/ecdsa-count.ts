// Counting ECDSA verifications, shared by the attestation benchmarks: node:crypto's three
// verify entry points are wrapped while one call runs, so a figure per call is counted, not
// assumed.
import crypto, { webcrypto, X509Certificate } from "node:crypto";
import { syncBuiltinESMExports } from "node:module";

/** Signature verifications `fn` performs, counted at crypto.verify, X509Certificate#verify and subtle.verify. */
export async function countEcdsaVerifications(fn: () => Promise<unknown>): Promise<number> {
  let count = 0;
  const original = {
    verify: crypto.verify,
    x509: X509Certificate.prototype.verify,
    subtle: webcrypto.subtle.verify,
  };
  crypto.verify = ((...args: Parameters<typeof crypto.verify>) => {
    count++;
    return original.verify(...args);
  }) as typeof crypto.verify;
  X509Certificate.prototype.verify = function (this: X509Certificate, key) {
    count++;
    return original.x509.call(this, key);
  };
  webcrypto.subtle.verify = ((...args: Parameters<typeof webcrypto.subtle.verify>) => {
    count++;
    return original.subtle.apply(webcrypto.subtle, args);
  }) as typeof webcrypto.subtle.verify;
  syncBuiltinESMExports();
  try {
    await fn();
  } finally {
    crypto.verify = original.verify;
    X509Certificate.prototype.verify = original.x509;
    delete (webcrypto.subtle as unknown as Record<string, unknown>).verify;
    syncBuiltinESMExports();
  }
  return count;
}
