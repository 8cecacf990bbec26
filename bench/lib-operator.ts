// Helpers shared by the operator processes of bench/reconcile-operator.ts and
// bench/regions-operator.ts, so both benchmarks count API requests and run the controllers
// the same way. Type-only imports on purpose: regions-operator.ts loads client-node and the
// operator's modules lazily to keep each of its (up to 100) member processes small, and
// importing this module must not undo that.
import type { KubeConfig } from "@kubernetes/client-node";
import type { Registration } from "../operator/member/registration.ts";

/**
 * The verb the API server would record for a request (apiserver_request_total's `verb`).
 * Given a `contentType`, a server-side apply (PATCH with apply-patch) is APPLY; without one
 * it stays PATCH, as reconcile.json has always reported it.
 */
export function requestKey(client: string, method: string, url: string, contentType?: string): string {
  const u = new URL(url);
  const parts = u.pathname.split("/").filter(Boolean);
  let rest = parts[0] === "api" ? parts.slice(2) : parts.slice(3);
  if (rest[0] === "namespaces" && rest.length >= 3) rest = rest.slice(2);
  const [resource = "?", name, sub] = rest;
  const verb =
    method === "GET"
      ? name
        ? "GET"
        : u.searchParams.get("watch") === "true"
          ? "WATCH"
          : "LIST"
      : method === "POST"
        ? "CREATE"
        : method === "PUT"
          ? "UPDATE"
          : method === "DELETE"
            ? name
              ? "DELETE"
              : "DELETECOLLECTION"
            : method === "PATCH" && contentType?.includes("apply-patch")
              ? "APPLY"
              : method;
  return `${client} ${verb} ${resource}${sub ? `/${sub}` : ""}`;
}

/**
 * Counts every request `kc` makes into `requests` under requestKey: every request client-node
 * makes passes through applySecurityAuthentication once. `apply` tells server-side applies apart.
 */
export function counted(
  kc: KubeConfig,
  client: string,
  requests: Map<string, number>,
  opts: { apply: boolean },
): KubeConfig {
  const applyAuth = kc.applySecurityAuthentication.bind(kc);
  kc.applySecurityAuthentication = (ctx: Parameters<KubeConfig["applySecurityAuthentication"]>[0]) => {
    const contentType = opts.apply
      ? ((ctx as unknown as { getHeaders?: () => Record<string, string> }).getHeaders?.()?.["Content-Type"] ??
        "")
      : undefined;
    const key = requestKey(client, String(ctx.getHttpMethod()), ctx.getUrl(), contentType);
    requests.set(key, (requests.get(key) ?? 0) + 1);
    return applyAuth(ctx);
  };
  return kc;
}

/** Sends `msg` to the benchmark; resolves once it is on the IPC channel. */
export function send<T>(msg: T): Promise<void> {
  return new Promise((resolve) => process.send?.(msg, undefined, undefined, () => resolve()));
}

export interface Parts {
  informers: { start(): Promise<void>; stop(): Promise<void> }[];
  controllers: { run(signal: AbortSignal): Promise<void> }[];
}

/**
 * Starts `parts` as the manager does (caches first, then the workers) and returns the stop
 * function, which also closes the operator's log `file`.
 */
export async function run(
  parts: Parts,
  file: { end(cb: () => void): unknown },
): Promise<() => Promise<void>> {
  await Promise.all(parts.informers.map((i) => i.start()));
  const abort = new AbortController();
  const running = parts.controllers.map((c) => c.run(abort.signal));
  return async () => {
    abort.abort();
    await Promise.all(running);
    await Promise.all(parts.informers.map((i) => i.stop()));
    await new Promise<void>((r) => file.end(() => r()));
  };
}

/** The SovereignNode registration every benchmark member makes. */
export function memberRegistration(spec: { policy: string; cluster: string }): Registration {
  return {
    jurisdiction: "DE",
    attestationPolicyRef: { name: spec.policy },
    dataResidency: {
      allowedEgress: ["ModelDeltas"],
      acceptAggregates: true,
      checkpointLocation: "InRegion",
    },
    jetStreamDomain: spec.cluster,
  };
}
