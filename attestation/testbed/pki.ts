/**
 * The testbed PKI: a device-identity hierarchy and a RIM-signing hierarchy shaped like NVIDIA's
 * (same depth, key types, extensions and name layout), but under roots of their own named
 * "Sovereign Testbed …". Everything is derived from a public seed and built once per process.
 *
 *   device: Device Identity CA → GH100 Identity → GH100 Provisioner ICA 1 → GH100 A01 GSP BROM (per GPU)
 *           → GH100 A01 GSP FMC LF (per GPU and firmware; signs the reports, carries the FWID)
 *   RIM:    CoRIM signing Root CA → Reference Value GH100 CA → Reference Value L3 GH100 001
 *           → driver / VBIOS RIM L4 signers
 *
 * Each CA that issues a certificate the verifier checks by OCSP has a delegated OCSP responder
 * (EKU OCSPSigning, as NVIDIA's responders have), so no separate responder trust is configured:
 * an answer is trusted because its responder chains to the certificate's issuer.
 */
import { createHash } from "node:crypto";
import { id_kp_OCSPSigning, KeyUsageFlags } from "@peculiar/asn1-x509";
import { deriveP384Key, type P384Key } from "./ecdsa.ts";
import {
  type IssuedCertificate,
  issueCertificate,
  keyIdentifier,
  type NameSpec,
  OID_OCSP_NOCHECK,
  serialFrom,
  X509Ext,
} from "./x509.ts";

export const TESTBED_SEED = "sovereign.ai/testbed-attestation/v1";
export const TESTBED_ORGANIZATION = "Sovereign Testbed";
/** Device-chain certificates never expire, like NVIDIA's (notAfter 9999-12-31). */
const DEVICE_VALIDITY = {
  notBefore: new Date("2020-01-01T00:00:00Z"),
  notAfter: new Date("9999-12-31T23:59:59Z"),
};
/** RIM signers and OCSP responders: long enough that any testbed date is inside. */
export const TESTBED_VALIDITY = {
  notBefore: new Date("2020-01-01T00:00:00Z"),
  notAfter: new Date("2099-12-31T23:59:59Z"),
};
const OCSP_URL = "http://ocsp.testbed.sovereign.invalid";
const CRL_URL = "http://crl.testbed.sovereign.invalid";

export interface Signer {
  name: NameSpec;
  key: P384Key;
  cert: IssuedCertificate;
}

export interface Authority extends Signer {
  /** Signs OCSP answers about the certificates this authority issued. */
  responder?: Signer;
}

export interface TestbedPki {
  seed: string;
  device: { root: Authority; identity: Authority; provisioner: Authority };
  rim: { root: Authority; l2: Authority; l3: Authority; driverSigner: Signer; vbiosSigner: Signer };
}

const caUsage = KeyUsageFlags.keyCertSign | KeyUsageFlags.cRLSign;

function makeRoot(seed: string, label: string, cn: string, validity: typeof TESTBED_VALIDITY): Authority {
  const key = deriveP384Key(seed, label);
  const name: NameSpec = [
    ["CN", cn],
    ["O", TESTBED_ORGANIZATION],
  ];
  const cert = issueCertificate(
    {
      subject: name,
      issuer: name,
      serial: serialFrom(`${seed}/${label}`),
      ...validity,
      subjectSpki: key.spki,
      extensions: [
        X509Ext.basicConstraints(true),
        X509Ext.keyUsage(caUsage),
        X509Ext.subjectKeyId(key.spki),
        X509Ext.authorityKeyId(key.spki),
      ],
    },
    key,
  );
  return { name, key, cert };
}

function makeCa(
  seed: string,
  label: string,
  name: NameSpec,
  issuer: Signer,
  validity: typeof TESTBED_VALIDITY,
  pathLength?: number,
): Authority {
  const key = deriveP384Key(seed, label);
  const cert = issueCertificate(
    {
      subject: name,
      issuer: issuer.name,
      serial: serialFrom(`${seed}/${label}`),
      ...validity,
      subjectSpki: key.spki,
      extensions: [
        X509Ext.basicConstraints(true, pathLength),
        X509Ext.keyUsage(caUsage),
        X509Ext.crlDistribution(`${CRL_URL}/${label}.crl`),
        X509Ext.ocspAccess(OCSP_URL),
        X509Ext.subjectKeyId(key.spki),
        X509Ext.authorityKeyId(issuer.key.spki),
      ],
    },
    issuer.key,
  );
  return { name, key, cert };
}

function makeResponder(seed: string, label: string, issuer: Signer): Signer {
  const key = deriveP384Key(seed, `${label}/ocsp-responder`);
  const name: NameSpec = [
    ["CN", `${TESTBED_ORGANIZATION} OCSP Responder ${label}`],
    ["O", TESTBED_ORGANIZATION],
    ["C", "US"],
  ];
  const cert = issueCertificate(
    {
      subject: name,
      issuer: issuer.name,
      serial: serialFrom(`${seed}/${label}/ocsp-responder`),
      ...TESTBED_VALIDITY,
      subjectSpki: key.spki,
      extensions: [
        X509Ext.keyUsage(KeyUsageFlags.digitalSignature),
        // NVIDIA lists id-pkix-ocsp-nocheck inside the EKU as well; mirrored for shape.
        X509Ext.extendedKeyUsage([id_kp_OCSPSigning, OID_OCSP_NOCHECK]),
        X509Ext.ocspNoCheck(),
        X509Ext.subjectKeyId(key.spki),
        X509Ext.authorityKeyId(issuer.key.spki),
      ],
    },
    issuer.key,
  );
  return { name, key, cert };
}

function makeRimSigner(seed: string, label: string, cn: string, issuer: Signer): Signer {
  const key = deriveP384Key(seed, label);
  const name: NameSpec = [
    ["C", "US"],
    ["O", TESTBED_ORGANIZATION],
    ["CN", cn],
  ];
  const cert = issueCertificate(
    {
      subject: name,
      issuer: issuer.name,
      serial: serialFrom(`${seed}/${label}`),
      ...TESTBED_VALIDITY,
      subjectSpki: key.spki,
      extensions: [
        X509Ext.basicConstraints(false),
        X509Ext.keyUsage(KeyUsageFlags.digitalSignature),
        X509Ext.subjectKeyId(key.spki),
        X509Ext.authorityKeyId(issuer.key.spki),
      ],
    },
    issuer.key,
  );
  return { name, key, cert };
}

const withResponder = (seed: string, label: string, authority: Authority): Authority => ({
  ...authority,
  responder: makeResponder(seed, label, authority),
});

function buildPki(seed: string): TestbedPki {
  const T = TESTBED_ORGANIZATION;
  const deviceRoot = withResponder(
    seed,
    "device-root",
    makeRoot(seed, "device-root", `${T} Device Identity CA`, DEVICE_VALIDITY),
  );
  const identity = withResponder(
    seed,
    "gh100-identity",
    makeCa(
      seed,
      "gh100-identity",
      [
        ["CN", `${T} GH100 Identity`],
        ["O", T],
      ],
      deviceRoot,
      DEVICE_VALIDITY,
    ),
  );
  const provisioner = withResponder(
    seed,
    "gh100-provisioner",
    makeCa(
      seed,
      "gh100-provisioner",
      [
        ["CN", `${T} GH100 Provisioner ICA 1`],
        ["O", T],
        ["C", "US"],
      ],
      identity,
      DEVICE_VALIDITY,
    ),
  );
  const rimRoot = withResponder(
    seed,
    "rim-root",
    makeRoot(seed, "rim-root", `${T} CoRIM signing Root CA`, TESTBED_VALIDITY),
  );
  const l2 = withResponder(
    seed,
    "rim-gh100-ca",
    makeCa(
      seed,
      "rim-gh100-ca",
      [
        ["CN", `${T} Reference Value GH100 CA`],
        ["O", T],
        ["C", "US"],
      ],
      rimRoot,
      TESTBED_VALIDITY,
    ),
  );
  const l3 = withResponder(
    seed,
    "rim-gh100-l3",
    makeCa(
      seed,
      "rim-gh100-l3",
      [
        ["CN", `${T} Reference Value L3 GH100 001`],
        ["O", T],
        ["C", "US"],
      ],
      l2,
      TESTBED_VALIDITY,
      0,
    ),
  );
  return {
    seed,
    device: { root: deviceRoot, identity, provisioner },
    rim: {
      root: rimRoot,
      l2,
      l3,
      driverSigner: makeRimSigner(seed, "rim-driver-l4", `${T} HCC RIM L4 Signer (driver)`, l3),
      vbiosSigner: makeRimSigner(seed, "rim-vbios-l4", `${T} HCC RIM L4 Signer (VBIOS)`, l3),
    },
  };
}

const pkis = new Map<string, TestbedPki>();

/** The testbed PKI for `seed`, built on first use (about 20 certificates) and cached for the process. */
export function testbedPki(seed = TESTBED_SEED): TestbedPki {
  let pki = pkis.get(seed);
  if (pki === undefined) {
    pki = buildPki(seed);
    pkis.set(seed, pki);
  }
  return pki;
}

export interface GpuIdentity {
  /** Per-device identity (cert [1]), issued by the provisioner CA. */
  brom: Authority;
  /** Attestation key (cert [0]): signs the reports, carries the FWID. */
  leaf: Signer;
  fwid: Uint8Array;
  /** Leaf, BROM, provisioner, identity, root: the 5-certificate file NVIDIA's tools write. */
  chainPem: string;
}

const identities = new Map<string, GpuIdentity>();

const hex = (label: string, bytes: number): string =>
  createHash("sha256")
    .update(label)
    .digest("hex")
    .slice(0, bytes * 2)
    .toUpperCase();

/**
 * The GPU's identity. NVIDIA's FMC leaf is re-derived when the firmware changes, so the leaf (and
 * the FWID in it) depends on the VBIOS version, the BROM only on the device.
 */
export function gpuIdentity(pki: TestbedPki, uuid: string, vbiosVersion: string): GpuIdentity {
  const cacheKey = `${pki.seed}\0${uuid}\0${vbiosVersion}`;
  const cached = identities.get(cacheKey);
  if (cached !== undefined) return cached;
  const { seed } = pki;
  const { root, identity, provisioner } = pki.device;
  const bromKey = deriveP384Key(seed, `gpu/${uuid}/brom`);
  // 9 bytes like NVIDIA's BROM serials; the top bit cleared keeps the DER INTEGER positive.
  const bromSerial = hex(`${seed}/gpu/${uuid}/brom-serial`, 9).replace(/^[89A-F]/, "4");
  const bromName: NameSpec = [
    ["serialNumber", bromSerial],
    ["C", "US"],
    ["O", TESTBED_ORGANIZATION],
    ["CN", "GH100 A01 GSP BROM"],
  ];
  const bromCert = issueCertificate(
    {
      subject: bromName,
      issuer: provisioner.name,
      serial: new Uint8Array(Buffer.from(bromSerial, "hex")),
      ...DEVICE_VALIDITY,
      subjectSpki: bromKey.spki,
      extensions: [
        X509Ext.basicConstraints(true),
        X509Ext.keyUsage(KeyUsageFlags.keyCertSign),
        X509Ext.subjectKeyId(bromKey.spki),
        X509Ext.authorityKeyId(provisioner.key.spki),
      ],
    },
    provisioner.key,
  );
  const brom: Authority = { name: bromName, key: bromKey, cert: bromCert };
  const leafKey = deriveP384Key(seed, `gpu/${uuid}/fmc/${vbiosVersion}`);
  // NVIDIA's leaf serial (and subject serialNumber) is its key identifier with the top bit cleared.
  const ski = keyIdentifier(leafKey.spki);
  ski[0] = (ski[0] as number) & 0x7f;
  const leafSerial = Buffer.from(ski).toString("hex").toUpperCase();
  const leafName: NameSpec = [
    ["serialNumber", leafSerial],
    ["C", "US"],
    ["O", TESTBED_ORGANIZATION],
    ["CN", "GH100 A01 GSP FMC LF"],
  ];
  const fwid = new Uint8Array(createHash("sha384").update(`${seed}/fwid/${uuid}/${vbiosVersion}`).digest());
  const leafCert = issueCertificate(
    {
      subject: leafName,
      issuer: bromName,
      serial: ski,
      ...DEVICE_VALIDITY,
      subjectSpki: leafKey.spki,
      extensions: [
        X509Ext.keyUsage(KeyUsageFlags.digitalSignature),
        X509Ext.subjectKeyId(leafKey.spki),
        X509Ext.authorityKeyId(bromKey.spki),
        X509Ext.nvidiaPdi(`NVIDIA:GH100:${hex(`${seed}/gpu/${uuid}/pdi`, 8)}`),
        X509Ext.hopperFwid(bromKey.spki, fwid),
      ],
    },
    bromKey,
  );
  const leaf: Signer = { name: leafName, key: leafKey, cert: leafCert };
  const chainPem = [leafCert, bromCert, provisioner.cert, identity.cert, root.cert]
    .map((c) => c.pem)
    .join("");
  const out: GpuIdentity = { brom, leaf, fwid, chainPem };
  identities.set(cacheKey, out);
  return out;
}
