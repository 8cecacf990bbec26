// Pure helpers behind the Pulumi components: what they render (CRDs, the region's hub
// kubeconfig, the NATS leaf configuration, chart values). Kept free of Pulumi so they can be
// checked directly and reused by other tools.
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { parse, stringify } from "yaml";
import { regionNamespace } from "../operator/hub/region-access.ts";

export const repoRoot = join(import.meta.dirname, "..");
export const chartDir = join(repoRoot, "charts", "sovereign");

/** A failure the components report with a reason code, like the operator's errors. */
export class InfraError extends Error {
  readonly reason: string;
  constructor(reason: string, message: string, options?: ErrorOptions) {
    super(`${reason}: ${message}`, options);
    this.name = "InfraError";
    this.reason = reason;
  }
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

/** Region names become namespace, ClusterRole and JetStream domain names: hold them to a DNS label. */
export function checkRegionName(region: string): void {
  // "sovereign-region-" is 17 characters; the namespace must still be a DNS label.
  if (!DNS_LABEL.test(region) || regionNamespace(region).length > 63) {
    throw new InfraError(
      "InvalidRegionName",
      `region name ${JSON.stringify(region)} must be a DNS label of at most ${63 - regionNamespace("").length} characters (lower-case letters, digits, '-')`,
    );
  }
}

export interface CrdManifest {
  apiVersion: string;
  kind: string;
  metadata: { name: string; [k: string]: unknown };
  spec: Record<string, unknown>;
}

/**
 * The chart's CRDs (charts/sovereign/crds, generated from crds/schema). The components
 * manage them as Pulumi resources rather than through Helm's crds/ directory, because Helm
 * installs CRDs once and never upgrades or deletes them: a schema change would otherwise
 * never reach a cluster that Pulumi keeps up to date.
 */
export function chartCrds(dir: string = join(chartDir, "crds")): CrdManifest[] {
  const files = readdirSync(dir)
    .filter((f) => f.endsWith(".yaml"))
    .sort();
  if (files.length === 0) throw new InfraError("ChartCrdsMissing", `no CRD manifests in ${dir}`);
  return files.map((f) => {
    const doc = parse(readFileSync(join(dir, f), "utf8")) as CrdManifest;
    if (doc?.kind !== "CustomResourceDefinition" || !doc.metadata?.name) {
      throw new InfraError("ChartCrdsMissing", `${join(dir, f)} is not a CustomResourceDefinition`);
    }
    return doc;
  });
}

/** The kubeconfig a region's member operator uses to reach the hub, limited to its own namespace. */
export function regionHubKubeconfig(opts: {
  region: string;
  server: string;
  caData?: string | undefined;
  token: string;
}): string {
  if (!opts.token) {
    throw new InfraError(
      "HubTokenNotIssued",
      `the hub issued no token for ${opts.region}'s member ServiceAccount (is kube-controller-manager's token controller running at the hub?)`,
    );
  }
  const user = `sovereign-member-${opts.region}`;
  return stringify({
    apiVersion: "v1",
    kind: "Config",
    clusters: [
      {
        name: "sovereign-hub",
        cluster: {
          server: opts.server,
          ...(opts.caData ? { "certificate-authority-data": opts.caData } : {}),
        },
      },
    ],
    users: [{ name: user, user: { token: opts.token } }],
    contexts: [
      {
        name: "sovereign-hub",
        context: { cluster: "sovereign-hub", user, namespace: regionNamespace(opts.region) },
      },
    ],
    "current-context": "sovereign-hub",
  });
}

export interface NatsUser {
  user: string;
  password: string;
}

export interface LeafNatsOptions {
  region: string;
  /** The hub's leafnode listener, e.g. nats-leaf://hub.example:7422 (no credentials in it). */
  hubLeafUrl: string;
  /** The account the leaf link binds to at the hub and locally. */
  account: string;
  /** The credentials this region's leaf connection presents to the hub. */
  leafUser: NatsUser;
  /** The member operator's user on the region's own server. */
  member: NatsUser;
  /** Client port of the region's server. */
  clientPort?: number;
  /** Where JetStream keeps the region's streams inside the NATS pod. */
  storeDir?: string;
}

const q = (s: string) => JSON.stringify(s);

/**
 * nats-server configuration for a region's leaf node: its own JetStream domain (named after
 * the region, so deltas stay in the region's store until the operator sends them) and one
 * leaf remote to the hub. The hub-side permissions of the leaf user are the hub's to set.
 */
export function leafNatsConfig(o: LeafNatsOptions): string {
  let url: URL;
  try {
    url = new URL(o.hubLeafUrl);
  } catch (err) {
    throw new InfraError("InvalidNatsUrl", `hubLeafUrl ${q(o.hubLeafUrl)} is not a URL`, { cause: err });
  }
  if (!["nats-leaf:", "tls:", "nats:", "ws:", "wss:"].includes(url.protocol) || url.username) {
    throw new InfraError(
      "InvalidNatsUrl",
      `hubLeafUrl ${q(o.hubLeafUrl)} must be a nats-leaf:// (or tls://, ws(s)://) URL without credentials; they come from leafUser`,
    );
  }
  url.username = encodeURIComponent(o.leafUser.user);
  url.password = encodeURIComponent(o.leafUser.password);
  return `# Rendered by the Sovereign Pulumi component for region ${o.region}.
server_name: ${q(o.region)}
listen: "0.0.0.0:${o.clientPort ?? 4222}"
jetstream {
  domain: ${q(o.region)}
  store_dir: ${q(o.storeDir ?? "/data/jetstream")}
}
leafnodes {
  reconnect: "1s"
  remotes: [
    { urls: [${q(url.toString())}], account: ${q(o.account)} }
  ]
}
accounts {
  ${q(o.account)}: {
    jetstream: enabled
    users: [
      { user: ${q(o.member.user)}, password: ${q(o.member.password)} }
    ]
  }
}
`;
}

/** Deep merge for chart values: objects merge, everything else (arrays too) is replaced. */
export function mergeValues(
  base: Record<string, unknown>,
  override: Record<string, unknown> | undefined,
): Record<string, unknown> {
  if (!override) return base;
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(override)) {
    const b = out[k];
    out[k] =
      isPlainObject(b) && isPlainObject(v)
        ? mergeValues(b as Record<string, unknown>, v as Record<string, unknown>)
        : v;
  }
  return out;
}

function isPlainObject(v: unknown): boolean {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
