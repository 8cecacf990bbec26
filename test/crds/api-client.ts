/**
 * Sends sovereign.ai objects to a real API server and reports the outcome as data, so tests
 * can assert on the status code, the field paths and the messages of a rejection.
 */
import { ApiException, CustomObjectsApi, type KubeConfig } from "@kubernetes/client-node";
import { type Kind, resourceAddress } from "../../crds/resources.ts";
import type { ExampleObject } from "./fixtures.ts";

export type Outcome =
  | { accepted: true; object: ExampleObject }
  | { accepted: false; code: number; reason: string; message: string; causes: Cause[] };

export interface Cause {
  field?: string;
  reason?: string;
  message?: string;
}

export interface SubmitOptions {
  namespace: string;
  /** Validate and default without persisting. */
  dryRun?: boolean;
}

/**
 * Creates the object, or replaces it when it carries a resourceVersion. Uses strict field
 * validation, as kubectl does, so unknown fields are rejected instead of silently dropped.
 */
export async function submit(
  kc: KubeConfig,
  object: ExampleObject,
  options: SubmitOptions,
): Promise<Outcome> {
  const api = kc.makeApiClient(CustomObjectsApi);
  const address = resourceAddress(object.kind);
  const common = {
    group: address.group,
    version: address.version,
    plural: address.plural,
    body: object,
    fieldValidation: "Strict",
    ...(options.dryRun ? { dryRun: "All" } : {}),
  };
  const name = object.metadata.name;
  const isUpdate = object.metadata.resourceVersion !== undefined;
  try {
    let result: unknown;
    if (address.namespaced) {
      const namespaced = { ...common, namespace: options.namespace };
      result = isUpdate
        ? await api.replaceNamespacedCustomObject({ ...namespaced, name })
        : await api.createNamespacedCustomObject(namespaced);
    } else {
      result = isUpdate
        ? await api.replaceClusterCustomObject({ ...common, name })
        : await api.createClusterCustomObject(common);
    }
    return { accepted: true, object: result as ExampleObject };
  } catch (error) {
    if (!(error instanceof ApiException)) throw error;
    return rejection(error);
  }
}

function rejection(error: ApiException<unknown>): Outcome {
  let status: { reason?: string; message?: string; details?: { causes?: Cause[] } } = {};
  try {
    status = typeof error.body === "string" ? JSON.parse(error.body) : (error.body as typeof status);
  } catch {
    status = { message: String(error.body) };
  }
  return {
    accepted: false,
    code: error.code,
    reason: status.reason ?? "",
    message: status.message ?? "",
    causes: status.details?.causes ?? [],
  };
}

export async function remove(kc: KubeConfig, kind: Kind, name: string, namespace: string): Promise<void> {
  const api = kc.makeApiClient(CustomObjectsApi);
  const address = resourceAddress(kind);
  const common = { group: address.group, version: address.version, plural: address.plural, name };
  try {
    if (address.namespaced) await api.deleteNamespacedCustomObject({ ...common, namespace });
    else await api.deleteClusterCustomObject(common);
  } catch (error) {
    if (!(error instanceof ApiException && error.code === 404)) throw error;
  }
}

export async function read(
  kc: KubeConfig,
  kind: Kind,
  name: string,
  namespace: string,
): Promise<ExampleObject> {
  const api = kc.makeApiClient(CustomObjectsApi);
  const address = resourceAddress(kind);
  const common = { group: address.group, version: address.version, plural: address.plural, name };
  const result = address.namespaced
    ? await api.getNamespacedCustomObject({ ...common, namespace })
    : await api.getClusterCustomObject(common);
  return result as ExampleObject;
}

/**
 * Replaces a stored object like `submit`, but when a concurrent writer bumped its
 * resourceVersion first (on the shared testbed an operator may be running that writes the
 * status or finalizers of whatever it watches), retries with the current resourceVersion, so
 * the outcome is about the spec and not about the race.
 */
export async function submitUpdate(
  kc: KubeConfig,
  object: ExampleObject,
  options: SubmitOptions,
): Promise<Outcome> {
  const update = structuredClone(object);
  for (let attempt = 1; ; attempt++) {
    const outcome = await submit(kc, update, options);
    if (outcome.accepted || outcome.code !== 409 || attempt >= 5) return outcome;
    const current = await read(kc, update.kind, update.metadata.name, options.namespace);
    update.metadata.resourceVersion = current.metadata.resourceVersion;
  }
}
