// Per-cluster PKI made with the machine's openssl: each cluster has its own CA, serving
// certificate and admin client certificate, as separate clusters would.
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import type { IncomingMessage, ServerResponse } from "node:http";
import { createServer, type Server } from "node:https";
import { join } from "node:path";
import { promisify } from "node:util";
import { stringify } from "yaml";
import { TestbedError } from "./errors.ts";

const execFileAsync = promisify(execFile);

export interface ClusterPki {
  dir: string;
  caCert: string;
  caKey: string;
  serverCert: string;
  serverKey: string;
  adminCert: string;
  adminKey: string;
  serviceAccountKey: string;
  serviceAccountPublicKey: string;
  kubeconfig: string;
}

async function openssl(args: string[], cwd: string): Promise<void> {
  try {
    await execFileAsync("openssl", args, { cwd });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") {
      throw new TestbedError(
        "OpenSSLMissing",
        "no 'openssl' on PATH: install it (Debian: apt-get install openssl) and retry.",
      );
    }
    throw err;
  }
}

export function pkiPaths(dir: string): ClusterPki {
  return {
    dir,
    caCert: join(dir, "ca.crt"),
    caKey: join(dir, "ca.key"),
    serverCert: join(dir, "apiserver.crt"),
    serverKey: join(dir, "apiserver.key"),
    adminCert: join(dir, "admin.crt"),
    adminKey: join(dir, "admin.key"),
    serviceAccountKey: join(dir, "sa.key"),
    serviceAccountPublicKey: join(dir, "sa.pub"),
    kubeconfig: join(dir, "admin.kubeconfig"),
  };
}

const EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
const SERVER_EXT = "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n";

/** A self-signed P-256 CA, valid ten years. */
async function makeCa(dir: string, subj: string, ca: { caKey: string; caCert: string }): Promise<void> {
  await openssl(
    ["req", "-x509", ...EC_KEY, "-days", "3650", "-subj", subj, "-keyout", ca.caKey, "-out", ca.caCert],
    dir,
  );
}

/** A P-256 key and a certificate for it signed by `ca`, with the extensions in `dir/ext`. */
async function issueCert(
  dir: string,
  ca: { caKey: string; caCert: string },
  name: string,
  subj: string,
  ext: string,
  key: string,
  crt: string,
): Promise<void> {
  await openssl(["req", ...EC_KEY, "-subj", subj, "-keyout", key, "-out", join(dir, `${name}.csr`)], dir);
  await openssl(
    [
      "x509",
      "-req",
      "-in",
      join(dir, `${name}.csr`),
      "-CA",
      ca.caCert,
      "-CAkey",
      ca.caKey,
      "-CAcreateserial",
      "-days",
      "3650",
      "-extfile",
      join(dir, ext),
      "-out",
      crt,
    ],
    dir,
  );
}

/** Creates the cluster's PKI once; an existing one is kept so a restarted testbed keeps its identity. */
export async function ensureClusterPki(
  dir: string,
  cluster: string,
  apiserverPort: number,
): Promise<ClusterPki> {
  const p = pkiPaths(dir);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  if (!existsSync(p.kubeconfig)) {
    await makeCa(dir, `/CN=sovereign-testbed-${cluster}-ca`, p);
    await writeFile(join(dir, "server.ext"), SERVER_EXT);
    await writeFile(join(dir, "client.ext"), "extendedKeyUsage=clientAuth\n");
    await issueCert(dir, p, "apiserver", "/CN=kube-apiserver", "server.ext", p.serverKey, p.serverCert);
    await issueCert(
      dir,
      p,
      "admin",
      "/O=system:masters/CN=testbed-admin",
      "client.ext",
      p.adminKey,
      p.adminCert,
    );
    // ServiceAccount tokens: the apiserver signs with the private key and verifies with
    // the public one (it does not derive the public half from a PKCS#8 file itself).
    await openssl(
      ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", p.serviceAccountKey],
      dir,
    );
    await openssl(["pkey", "-in", p.serviceAccountKey, "-pubout", "-out", p.serviceAccountPublicKey], dir);
    await writeFile(p.kubeconfig, kubeconfigYaml(cluster, apiserverPort, p), { mode: 0o600 });
  }
  return p;
}

export function kubeconfigYaml(cluster: string, port: number, p: ClusterPki): string {
  return stringify({
    apiVersion: "v1",
    kind: "Config",
    clusters: [
      { name: cluster, cluster: { server: `https://127.0.0.1:${port}`, "certificate-authority": p.caCert } },
    ],
    users: [
      { name: `${cluster}-admin`, user: { "client-certificate": p.adminCert, "client-key": p.adminKey } },
    ],
    contexts: [{ name: cluster, context: { cluster, user: `${cluster}-admin` } }],
    "current-context": cluster,
  });
}

export interface ServingPki {
  caCert: string;
  serverCert: string;
  serverKey: string;
}

/**
 * A CA of its own and a serving certificate for 127.0.0.1 under it, for a testbed service that
 * clients must reach over verified TLS (the NRAS stand-in): clients trust `caCert` explicitly.
 */
export async function ensureServingPki(dir: string, name: string): Promise<ServingPki> {
  const p = {
    caCert: join(dir, "ca.crt"),
    caKey: join(dir, "ca.key"),
    serverCert: join(dir, "server.crt"),
    serverKey: join(dir, "server.key"),
  };
  await mkdir(dir, { recursive: true, mode: 0o700 });
  if (!existsSync(p.serverCert)) {
    await makeCa(dir, `/CN=sovereign-testbed-${name}-ca`, p);
    await writeFile(join(dir, "server.ext"), SERVER_EXT);
    await issueCert(dir, p, "server", `/CN=${name}`, "server.ext", p.serverKey, p.serverCert);
  }
  return { caCert: p.caCert, serverCert: p.serverCert, serverKey: p.serverKey };
}

/**
 * An HTTPS server on a free loopback port, serving with the testbed certificate for `name`
 * (made in `dir` once): the stand-ins for NVIDIA's services. `ca` is what a client must trust.
 */
export async function serveHttps(
  dir: string,
  name: string,
  handle: (req: IncomingMessage, res: ServerResponse) => void,
): Promise<{ server: Server; ca: string }> {
  const pki = await ensureServingPki(dir, name);
  const [key, cert, ca] = await Promise.all([
    readFile(pki.serverKey, "utf8"),
    readFile(pki.serverCert, "utf8"),
    readFile(pki.caCert, "utf8"),
  ]);
  const server = createServer({ key, cert }, handle);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { server, ca };
}
