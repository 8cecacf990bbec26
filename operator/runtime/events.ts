// Kubernetes Events for what a user should see in `kubectl describe`. The Event reason
// equals the condition reason (as cert-manager does), so one grep finds both.
import { CoreV1Api, type KubeConfig, type V1ObjectReference } from "@kubernetes/client-node";
import type { Logger } from "./log.ts";

export interface EventRecorder {
  record(
    obj: { apiVersion: string; kind: string; metadata: { name?: string; namespace?: string; uid?: string } },
    type: "Normal" | "Warning",
    reason: string,
    message: string,
  ): Promise<void>;
}

export function eventRecorder(kc: KubeConfig, component: string, log: Logger): EventRecorder {
  const core = kc.makeApiClient(CoreV1Api);
  return {
    async record(obj, type, reason, message) {
      // Events of cluster-scoped objects live in "default", as kubectl describe expects.
      const namespace = obj.metadata.namespace ?? "default";
      const involvedObject: V1ObjectReference = {
        apiVersion: obj.apiVersion,
        kind: obj.kind,
        name: obj.metadata.name,
        namespace: obj.metadata.namespace,
        uid: obj.metadata.uid,
      };
      const now = new Date();
      try {
        await core.createNamespacedEvent({
          namespace,
          body: {
            metadata: { generateName: `${obj.metadata.name}.`, namespace },
            involvedObject,
            type,
            reason,
            message,
            source: { component },
            firstTimestamp: now,
            lastTimestamp: now,
            count: 1,
          },
        });
      } catch (err) {
        // An Event is a courtesy; never fail a reconcile over one.
        log.debug("could not record event", { reason, err });
      }
    },
  };
}
