// Kubernetes label selector semantics (matchLabels AND matchExpressions), for selecting
// objects the operator already holds in memory.
import type { LabelSelector } from "../../crds/types.generated.ts";

export function selectorMatches(
  selector: LabelSelector | undefined,
  labels: Record<string, string> = {},
): boolean {
  if (!selector) return true;
  for (const [k, v] of Object.entries(selector.matchLabels ?? {})) if (labels[k] !== v) return false;
  for (const e of selector.matchExpressions ?? []) {
    const has = Object.hasOwn(labels, e.key);
    const value = labels[e.key];
    switch (e.operator) {
      case "In":
        if (!has || !(e.values ?? []).includes(value as string)) return false;
        break;
      case "NotIn":
        if (has && (e.values ?? []).includes(value as string)) return false;
        break;
      case "Exists":
        if (!has) return false;
        break;
      case "DoesNotExist":
        if (has) return false;
        break;
      default:
        return false; // an operator we do not know selects nothing, as the API server would reject it
    }
  }
  return true;
}
