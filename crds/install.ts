/**
 * Installs (or updates) the sovereign.ai CRDs in a cluster by server-side apply and waits
 * until the API server serves them. Used by tests, the demo and the operator at start-up.
 *
 * The CRDs are built from the schema definitions directly rather than read from
 * crds/generated/, so a running operator never depends on files next to it; `generate.ts
 * --check` guarantees the YAML users apply is the same.
 */
import {
  ApiextensionsV1Api,
  type KubeConfig,
  PatchStrategy,
  setHeaderOptions,
} from "@kubernetes/client-node";
import { crdName, toCrd } from "./crd.ts";
import { resourceDefinitions } from "./schema/index.ts";

export const CRD_FIELD_MANAGER = "sovereign-crd-installer";

export interface InstallOptions {
  /** How long to wait for all CRDs to become Established. Milliseconds. Default 30 000. */
  timeoutMs?: number;
  /** Delay between status polls. Milliseconds. Default 200. */
  pollMs?: number;
}

export class CrdInstallError extends Error {
  override name = "CrdInstallError";
}

export async function installCrds(kc: KubeConfig, options: InstallOptions = {}): Promise<void> {
  const api = kc.makeApiClient(ApiextensionsV1Api);
  // The typed clients re-serialise a CRD through their model classes, which only know the
  // camel-cased property names (`_default`, `xKubernetesValidations`) and silently drop the
  // wire names our plain objects use. A patch body is sent as-is, so apply goes through patch.
  const asApplyPatch = setHeaderOptions("Content-Type", PatchStrategy.ServerSideApply);
  for (const definition of resourceDefinitions) {
    await api.patchCustomResourceDefinition(
      { name: crdName(definition), body: toCrd(definition), fieldManager: CRD_FIELD_MANAGER, force: true },
      asApplyPatch,
    );
  }
  await waitUntilEstablished(
    api,
    resourceDefinitions.map(crdName),
    options.timeoutMs ?? 30_000,
    options.pollMs ?? 200,
  );
}

async function waitUntilEstablished(
  api: ApiextensionsV1Api,
  names: string[],
  timeoutMs: number,
  pollMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let pending = names;
  let lastProblem = "";
  while (pending.length > 0) {
    const stillPending: string[] = [];
    for (const name of pending) {
      const crd = await api.readCustomResourceDefinition({ name });
      const condition = (type: string) => crd.status?.conditions?.find((c) => c.type === type);
      const namesAccepted = condition("NamesAccepted");
      if (namesAccepted?.status === "False") {
        // A name clash with another CRD never resolves by waiting.
        throw new CrdInstallError(
          `CRD ${name} names not accepted: ${namesAccepted.reason}: ${namesAccepted.message}`,
        );
      }
      if (condition("Established")?.status !== "True") {
        stillPending.push(name);
        lastProblem = `${name}: ${condition("Established")?.message ?? "no Established condition yet"}`;
      }
    }
    pending = stillPending;
    if (pending.length === 0) return;
    if (Date.now() > deadline) {
      throw new CrdInstallError(
        `CRDs not Established after ${timeoutMs} ms: ${pending.join(", ")} (last seen: ${lastProblem})`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, pollMs));
  }
}
