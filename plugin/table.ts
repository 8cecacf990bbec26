// Aligned columns in kubectl's style: upper-case headers, three spaces between columns,
// no borders, so `awk` and eyes both read it.
export function formatTable(
  headers: readonly string[],
  rows: readonly (readonly string[])[],
  indent = "",
): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: readonly string[]) =>
    indent +
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
      .join("   ")
      .trimEnd();
  return [line(headers), ...rows.map(line)].join("\n");
}

/** "3m", "2h", "5d": how long ago, as kubectl's AGE column spells it. */
export function age(fromMs: number, nowMs: number): string {
  if (!Number.isFinite(fromMs)) return "<unknown>";
  const s = Math.max(0, Math.floor((nowMs - fromMs) / 1000));
  if (s < 120) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 120) return `${m}m`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h`;
  return `${Math.floor(h / 24)}d`;
}

/** Text that came from the cluster, made safe for one table cell or line: no control characters. */
export function oneLine(text: unknown, max = 200): string {
  const s = typeof text === "string" ? text : text === undefined || text === null ? "" : String(text);
  // biome-ignore lint/suspicious/noControlCharactersInRegex: stripping them is the point
  const flat = s.replace(/[\u0000-\u001f\u007f-\u009f]+/g, " ").trim();
  return flat.length > max ? `${flat.slice(0, max - 1)}…` : flat;
}
