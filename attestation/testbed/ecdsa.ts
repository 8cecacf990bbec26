/**
 * Deterministic P-384 keys and signatures for the testbed PKI, from node:crypto only.
 *
 * Keys come from a public seed, so every process (the minter, `attest verify`, a test worker)
 * derives byte-identical certificates: the testbed root a policy pins today is the one every
 * later mint chains to. Signatures use RFC 6979 nonces for the same reason (node's ECDSA draws a
 * random k, which would make the root certificate differ per process). The point multiplication
 * is OpenSSL's: ECDH.setPrivateKey(k) yields k·G.
 *
 * The seed is public, so anyone can mint evidence under these keys: that is exactly why only a
 * testbed policy may trust them.
 */
import {
  createECDH,
  createHash,
  createHmac,
  createPrivateKey,
  createPublicKey,
  type KeyObject,
} from "node:crypto";

const CURVE = "secp384r1";
/** Order of the P-384 base point. */
const N = 0xffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973n;
const BYTES = 48;

export interface P384Key {
  /** The private scalar. */
  d: bigint;
  privateKey: KeyObject;
  publicKey: KeyObject;
  /** SubjectPublicKeyInfo DER. */
  spki: Uint8Array;
}

const toBytes = (n: bigint): Buffer => Buffer.from(n.toString(16).padStart(BYTES * 2, "0"), "hex");
const toBigInt = (b: Uint8Array): bigint => BigInt(`0x${Buffer.from(b).toString("hex") || "0"}`);
const b64url = (b: Uint8Array): string => Buffer.from(b).toString("base64url");

/** a⁻¹ mod N by the extended Euclidean algorithm (N is prime and 0 < a < N). */
function invert(a: bigint): bigint {
  let [r0, r1] = [N, a];
  let [t0, t1] = [0n, 1n];
  while (r1 !== 0n) {
    const q = r0 / r1;
    [r0, r1] = [r1, r0 - q * r1];
    [t0, t1] = [t1, t0 - q * t1];
  }
  return ((t0 % N) + N) % N;
}

/** k·G, uncompressed (0x04 ‖ X ‖ Y). */
function multiplyBase(k: bigint): Buffer {
  const ecdh = createECDH(CURVE);
  ecdh.setPrivateKey(toBytes(k));
  return ecdh.getPublicKey();
}

/** A P-384 key whose scalar is derived from `seed` and `label`; the same inputs give the same key everywhere. */
export function deriveP384Key(seed: string, label: string): P384Key {
  // 512 bits reduced mod n-1 leaves a bias of 2^-128: irrelevant for test keys, and still uniform enough.
  const wide = createHash("sha512").update(`${seed}\0${label}`).digest();
  const d = (toBigInt(wide) % (N - 1n)) + 1n;
  const point = multiplyBase(d);
  const jwk = {
    kty: "EC",
    crv: "P-384",
    d: b64url(toBytes(d)),
    x: b64url(point.subarray(1, 1 + BYTES)),
    y: b64url(point.subarray(1 + BYTES)),
  };
  const privateKey = createPrivateKey({ key: jwk, format: "jwk" });
  const publicKey = createPublicKey(privateKey);
  return {
    d,
    privateKey,
    publicKey,
    spki: new Uint8Array(publicKey.export({ type: "spki", format: "der" })),
  };
}

/** RFC 6979 §3.2 with HMAC-SHA-384; qlen = hlen = 384, so bits2int is plain big-endian decoding. */
function* rfc6979Nonces(d: bigint, digest: Buffer): Generator<bigint> {
  const x = toBytes(d);
  const h = toBytes(toBigInt(digest) % N);
  const hmac = (key: Buffer, ...parts: Buffer[]) =>
    createHmac("sha384", key).update(Buffer.concat(parts)).digest();
  let v = Buffer.alloc(BYTES, 0x01);
  let k = Buffer.alloc(BYTES, 0x00);
  k = hmac(k, v, Buffer.of(0x00), x, h);
  v = hmac(k, v);
  k = hmac(k, v, Buffer.of(0x01), x, h);
  v = hmac(k, v);
  for (;;) {
    v = hmac(k, v);
    const candidate = toBigInt(v);
    if (candidate >= 1n && candidate < N) yield candidate;
    k = hmac(k, v, Buffer.of(0x00));
    v = hmac(k, v);
  }
}

/** ECDSA P-384 / SHA-384, deterministic; returns raw r‖s (96 bytes, the SPDM and XML-DSig form). */
export function signP384(key: P384Key, data: Uint8Array): Uint8Array {
  const digest = createHash("sha384").update(data).digest();
  const z = toBigInt(digest);
  for (const k of rfc6979Nonces(key.d, digest)) {
    const r = toBigInt(multiplyBase(k).subarray(1, 1 + BYTES)) % N;
    if (r === 0n) continue;
    const s = (invert(k) * ((z + r * key.d) % N)) % N;
    if (s === 0n) continue;
    return new Uint8Array(Buffer.concat([toBytes(r), toBytes(s)]));
  }
  throw new Error("unreachable: the nonce generator is infinite");
}

/** r‖s → DER ECDSA-Sig-Value (what X.509 and OCSP signatures carry). */
export function rawToDer(raw: Uint8Array): Uint8Array {
  const integer = (bytes: Uint8Array): Buffer => {
    let i = 0;
    while (i < bytes.length - 1 && bytes[i] === 0) i++;
    const trimmed = Buffer.from(bytes.subarray(i));
    const body = (trimmed[0] as number) & 0x80 ? Buffer.concat([Buffer.of(0), trimmed]) : trimmed;
    return Buffer.concat([Buffer.of(0x02, body.length), body]);
  };
  const body = Buffer.concat([integer(raw.subarray(0, BYTES)), integer(raw.subarray(BYTES))]);
  // At most 2 × (2 + 49) = 102 bytes: the long form with one length byte suffices.
  const header = body.length < 0x80 ? Buffer.of(0x30, body.length) : Buffer.of(0x30, 0x81, body.length);
  return new Uint8Array(Buffer.concat([header, body]));
}
