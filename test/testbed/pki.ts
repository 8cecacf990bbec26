// Per-cluster PKI made with the machine's openssl: each cluster has its own CA, serving
// certificate and admin client certificate, as separate clusters would.
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
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

/** Creates the cluster's PKI once; an existing one is kept so a restarted testbed keeps its identity. */
export async function ensureClusterPki(
  dir: string,
  cluster: string,
  apiserverPort: number,
): Promise<ClusterPki> {
  const p = pkiPaths(dir);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  if (!existsSync(p.kubeconfig)) {
    const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    await openssl(
      [
        "req",
        "-x509",
        ...ec,
        "-days",
        "3650",
        "-subj",
        `/CN=sovereign-testbed-${cluster}-ca`,
        "-keyout",
        p.caKey,
        "-out",
        p.caCert,
      ],
      dir,
    );
    await writeFile(
      join(dir, "server.ext"),
      "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    );
    await writeFile(join(dir, "client.ext"), "extendedKeyUsage=clientAuth\n");
    const issue = async (name: string, subj: string, ext: string, key: string, crt: string) => {
      await openssl(["req", ...ec, "-subj", subj, "-keyout", key, "-out", join(dir, `${name}.csr`)], dir);
      await openssl(
        [
          "x509",
          "-req",
          "-in",
          join(dir, `${name}.csr`),
          "-CA",
          p.caCert,
          "-CAkey",
          p.caKey,
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
    };
    await issue("apiserver", "/CN=kube-apiserver", "server.ext", p.serverKey, p.serverCert);
    await issue("admin", "/O=system:masters/CN=testbed-admin", "client.ext", p.adminKey, p.adminCert);
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
    const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    await openssl(
      [
        "req",
        "-x509",
        ...ec,
        "-days",
        "3650",
        "-subj",
        `/CN=sovereign-testbed-${name}-ca`,
        "-keyout",
        p.caKey,
        "-out",
        p.caCert,
      ],
      dir,
    );
    await writeFile(
      join(dir, "server.ext"),
      "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    );
    await openssl(
      ["req", ...ec, "-subj", `/CN=${name}`, "-keyout", p.serverKey, "-out", join(dir, "server.csr")],
      dir,
    );
    await openssl(
      [
        "x509",
        "-req",
        "-in",
        join(dir, "server.csr"),
        "-CA",
        p.caCert,
        "-CAkey",
        p.caKey,
        "-CAcreateserial",
        "-days",
        "3650",
        "-extfile",
        join(dir, "server.ext"),
        "-out",
        p.serverCert,
      ],
      dir,
    );
  }
  return { caCert: p.caCert, serverCert: p.serverCert, serverKey: p.serverKey };
}
