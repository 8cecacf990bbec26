// One way to set a condition everywhere: lastTransitionTime moves only when the status
// flips, observedGeneration records which spec the judgement is about, and the list
// stays sorted by type so an unchanged status serialises identically (no needless writes).
import type { Condition } from "../../crds/types.generated.ts";
import { sameContent } from "./canonical.ts";

/** A Kubernetes metav1.Time: RFC 3339 in UTC to the second, as the API server stores it. */
export function apiTime(at: Date | number): string {
  return new Date(at).toISOString().replace(/\.\d{3}Z$/, "Z");
}

export function setCondition(
  conditions: readonly Condition[] | undefined,
  next: Omit<Condition, "lastTransitionTime">,
  now: Date,
): Condition[] {
  const old = conditions?.find((c) => c.type === next.type);
  const lastTransitionTime = old && old.status === next.status ? old.lastTransitionTime : apiTime(now);
  return [...(conditions ?? []).filter((c) => c.type !== next.type), { ...next, lastTransitionTime }].sort(
    (a, b) => a.type.localeCompare(b.type),
  );
}

export function findCondition(
  conditions: readonly Condition[] | undefined,
  type: string,
): Condition | undefined {
  return conditions?.find((c) => c.type === type);
}

/**
 * True when the two lists say the same thing, whatever their order and the order of each
 * condition's keys (the API server returns custom resources with its own key order, so a
 * plain JSON comparison would see a change on every reconcile and write every time).
 */
export function sameConditions(
  a: readonly Condition[] | undefined,
  b: readonly Condition[] | undefined,
): boolean {
  const byType = (l: readonly Condition[] | undefined) =>
    [...(l ?? [])].sort((x, y) => x.type.localeCompare(y.type));
  return sameContent(byType(a), byType(b));
}
