// Order-independent comparison of API objects: the server returns custom resources with
// keys in its own order, so "did anything change?" must not depend on key order.

function keyOrderFreeJson(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) =>
    v && typeof v === "object" && !Array.isArray(v)
      ? Object.fromEntries(
          Object.entries(v as Record<string, unknown>)
            .filter(([, x]) => x !== undefined)
            .sort(([a], [b]) => a.localeCompare(b)),
        )
      : v,
  );
}

export function sameContent(a: unknown, b: unknown): boolean {
  return keyOrderFreeJson(a) === keyOrderFreeJson(b);
}
