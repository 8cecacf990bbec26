// Loads the kubeconfig as kubectl does: --kubeconfig, else $KUBECONFIG, else ~/.kube/config;
// --context picks a context; the namespace is -n, else the context's, else "default".
import { KubeConfig } from "@kubernetes/client-node";
import { type Options, stringOption } from "./args.ts";
import { PluginError } from "./errors.ts";

export function loadKubeConfig(options: Options): KubeConfig {
  const kc = new KubeConfig();
  const path = stringOption(options, "kubeconfig");
  try {
    if (path) kc.loadFromFile(path);
    else kc.loadFromDefault();
  } catch (err) {
    throw new PluginError(
      "KubeconfigUnreadable",
      `cannot load ${path ?? "the kubeconfig ($KUBECONFIG or ~/.kube/config)"}: ${(err as Error).message}; pass --kubeconfig <file>`,
    );
  }
  const context = stringOption(options, "context");
  if (context !== undefined) {
    if (!kc.getContextObject(context)) {
      const known = kc.getContexts().map((c) => c.name);
      throw new PluginError(
        "ContextNotFound",
        `the kubeconfig has no context ${JSON.stringify(context)}; it has ${known.length ? known.join(", ") : "none"}`,
      );
    }
    kc.setCurrentContext(context);
  }
  if (!kc.getCurrentCluster()) {
    throw new PluginError(
      "KubeconfigUnreadable",
      "the kubeconfig names no cluster for its current context; pass --kubeconfig and --context",
    );
  }
  return kc;
}

export function namespaceOf(kc: KubeConfig, options: Options, fallback = "default"): string {
  return (
    stringOption(options, "namespace") ?? kc.getContextObject(kc.getCurrentContext())?.namespace ?? fallback
  );
}
