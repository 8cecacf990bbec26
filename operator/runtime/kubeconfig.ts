// One TLS connection pool per API server and identity, instead of one per request.
//
// @kubernetes/client-node 2.0.1 builds a new undici Agent for every request
// (KubeConfig.applySecurityAuthentication → createDispatcher, uncached), so every API call
// pays a TCP and TLS handshake and leaves its connection to idle out. In the reconcile
// benchmark that made each request cost hundreds of milliseconds of CPU on a loaded machine.
// This keeps the first dispatcher made for a (server, CA, user, client certificate) and
// hands it to every later request with the same identity; a request with another identity
// (a rotated certificate, another context) gets its own. Bearer tokens travel in headers,
// which are still applied per request, so token rotation is unaffected.
import type { KubeConfig } from "@kubernetes/client-node";

type Context = Parameters<KubeConfig["applySecurityAuthentication"]>[0];
type Dispatcher = NonNullable<ReturnType<Context["getDispatcher"]>>;

const pooled = new WeakSet<KubeConfig>();

/** Makes `kc` reuse connections across requests (idempotent). Returns `kc`. */
export function reuseConnections(kc: KubeConfig): KubeConfig {
  if (pooled.has(kc)) return kc;
  pooled.add(kc);
  const dispatchers = new Map<string, Dispatcher>();
  const apply = kc.applySecurityAuthentication.bind(kc);
  kc.applySecurityAuthentication = async (context: Context) => {
    await apply(context);
    const made = context.getDispatcher();
    if (!made) return;
    const cluster = kc.getCurrentCluster();
    const user = kc.getCurrentUser();
    const identity = JSON.stringify([
      cluster?.server,
      cluster?.caData ?? cluster?.caFile,
      cluster?.skipTLSVerify,
      cluster?.tlsServerName,
      user?.name,
      user?.certData ?? user?.certFile,
      user?.keyData ?? user?.keyFile,
    ]);
    const kept = dispatchers.get(identity);
    if (kept) {
      context.setDispatcher(kept);
      // The one just made never connected: nothing to close but its bookkeeping.
      void (made as { close?: () => Promise<void> }).close?.();
    } else dispatchers.set(identity, made);
  };
  return kc;
}
