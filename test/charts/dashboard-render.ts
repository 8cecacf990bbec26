// The dashboard's main panels drawn from the query results of a real run (the series the
// dashboard test got from Prometheus): an SVG of stat values and line charts, converted to
// PNG by rsvg-convert (Debian's librsvg2-bin). docs/images/dashboard.png is this, written by
// `SOVEREIGN_RENDER_DASHBOARD=1 ava test/charts/dashboard.apiserver.test.ts`.
import { spawn } from "node:child_process";
import { writeFile } from "node:fs/promises";
import type { QueryCheck, Series } from "./prometheus.ts";

export const RSVG_CONVERT = "rsvg-convert";

/** The stat panels across the top, then the time series, two to a row. */
const STATS = [
  "Runs",
  "Regions ready",
  "Regions not ready",
  "Attested GPUs",
  "Quarantined GPU nodes",
  "Refused deltas (1h)",
];
const CHARTS = [
  "Current round by run",
  "Rounds closed by outcome",
  "Runs by phase",
  "Learner steps received by region",
  "Goodput by region",
  "Round duration",
  "Delta bytes received by region",
  "Refused deltas by reason",
  "Region readiness",
  "Attestation failures by reason",
  "Evidence age by node",
  "Reconcile errors",
  "Work queue depth",
];
const COLORS = ["#73bf69", "#f2cc0c", "#5794f2", "#ff780a", "#f2495c", "#b877d9", "#8ab8ff", "#fade2a"];
const WIDTH = 1600;
const STAT_H = 110;
const CHART_H = 300;
const GAP = 16;
const BG = "#111217";
const PANEL = "#181b1f";
const TEXT = "#ccccdc";
const GRID = "#2c3235";

const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

/** Grafana's legend: `{{label}}` replaced by the series' label values. */
function legend(format: string | undefined, s: Series): string {
  if (!format)
    return (
      Object.entries(s.metric)
        .map(([k, v]) => `${k}=${v}`)
        .join(", ") || "value"
    );
  return format.replace(/\{\{\s*(\w+)\s*\}\}/g, (_, k: string) => s.metric[k] ?? "");
}

function format(v: number, unit: string | undefined): string {
  if (!Number.isFinite(v)) return "–";
  const si = (x: number, suffix: string) => {
    const abs = Math.abs(x);
    if (abs >= 1e6) return `${(x / 1e6).toFixed(1)} M${suffix}`;
    if (abs >= 1e3) return `${(x / 1e3).toFixed(1)} k${suffix}`;
    if (abs >= 10 || Number.isInteger(x)) return `${Number(x.toFixed(1))}${suffix ? ` ${suffix}` : ""}`;
    return `${Number(x.toPrecision(2))}${suffix ? ` ${suffix}` : ""}`;
  };
  if (unit === "Bps") return si(v, "B/s");
  if (unit === "s") return si(v, "s");
  if (unit === "ops") return si(v, "/s");
  return si(v, "");
}

function clock(seconds: number): string {
  const m = Math.floor(seconds / 60);
  const s = Math.round(seconds % 60);
  return `${m}:${String(s).padStart(2, "0")}`;
}

function statPanel(x: number, y: number, w: number, title: string, checks: QueryCheck[]): string {
  const c = checks.find((q) => q.query.title === title);
  const values = c?.series[0]?.values.filter((p) => Number.isFinite(p.v)) ?? [];
  const last = values.at(-1)?.v ?? Number.NaN;
  return [
    `<rect x="${x}" y="${y}" width="${w}" height="${STAT_H}" rx="4" fill="${PANEL}"/>`,
    `<text x="${x + 12}" y="${y + 24}" fill="${TEXT}" font-size="15">${esc(title)}</text>`,
    `<text x="${x + w / 2}" y="${y + 82}" fill="#73bf69" font-size="44" font-weight="bold" text-anchor="middle">${esc(format(last, c?.query.unit))}</text>`,
  ].join("\n");
}

function chartPanel(
  x: number,
  y: number,
  w: number,
  title: string,
  checks: QueryCheck[],
  range: { start: number; end: number },
): string {
  const queries = checks.filter((q) => q.query.title === title);
  const unit = queries[0]?.query.unit;
  const lines = queries.flatMap((q) => q.series.map((s) => ({ name: legend(q.query.legendFormat, s), s })));
  const finite = lines.flatMap((l) => l.s.values.filter((p) => Number.isFinite(p.v)).map((p) => p.v));
  const min = Math.min(0, ...finite);
  // Gridlines at round numbers (1, 2 or 5 × 10^k apart), four or five of them.
  const top0 = Math.max(0, ...finite);
  const raw = (top0 > min ? top0 - min : 1) / 4;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = ([1, 2, 5, 10].find((m) => m * magnitude >= raw) ?? 10) * magnitude;
  const max = min + Math.ceil((top0 - min) / step || 1) * step;
  const left = x + 78;
  const top = y + 40;
  const right = x + w - 14;
  const legendRows = Math.ceil(Math.min(lines.length, 6) / 2);
  const bottom = y + CHART_H - 30 - legendRows * 18;
  const px = (t: number) => left + ((t - range.start) / (range.end - range.start)) * (right - left);
  const py = (v: number) => bottom - ((v - min) / (max - min)) * (bottom - top);
  const out = [
    `<rect x="${x}" y="${y}" width="${w}" height="${CHART_H}" rx="4" fill="${PANEL}"/>`,
    `<text x="${x + 12}" y="${y + 24}" fill="${TEXT}" font-size="15">${esc(title)}</text>`,
  ];
  for (let v = min; v <= max + step / 2; v += step) {
    out.push(
      `<line x1="${left}" y1="${py(v)}" x2="${right}" y2="${py(v)}" stroke="${GRID}"/>`,
      `<text x="${left - 6}" y="${py(v) + 4}" fill="${TEXT}" font-size="11" text-anchor="end">${esc(format(v, unit))}</text>`,
    );
  }
  const span = range.end - range.start;
  const tick = span > 300 ? 60 : span > 120 ? 30 : 15;
  for (let s = 0; s <= span; s += tick) {
    out.push(
      `<line x1="${px(range.start + s)}" y1="${top}" x2="${px(range.start + s)}" y2="${bottom}" stroke="${GRID}"/>`,
      `<text x="${px(range.start + s)}" y="${bottom + 16}" fill="${TEXT}" font-size="11" text-anchor="middle">${clock(s)}</text>`,
    );
  }
  for (const [i, l] of lines.entries()) {
    const color = COLORS[i % COLORS.length];
    // A gap where the value is missing or NaN, as Grafana draws it.
    const segments: string[][] = [[]];
    for (const p of l.s.values) {
      if (Number.isFinite(p.v)) segments.at(-1)?.push(`${px(p.t).toFixed(1)},${py(p.v).toFixed(1)}`);
      else if (segments.at(-1)?.length) segments.push([]);
    }
    for (const seg of segments) {
      if (seg.length === 1)
        out.push(
          `<circle cx="${seg[0]?.split(",")[0]}" cy="${seg[0]?.split(",")[1]}" r="2" fill="${color}"/>`,
        );
      if (seg.length > 1)
        out.push(`<polyline points="${seg.join(" ")}" fill="none" stroke="${color}" stroke-width="2"/>`);
    }
    if (i < 6) {
      const lx = left + (i % 2) * ((right - left) / 2);
      const ly = bottom + 36 + Math.floor(i / 2) * 18;
      const name = l.name.length > 48 ? `${l.name.slice(0, 47)}…` : l.name;
      out.push(
        `<rect x="${lx}" y="${ly - 9}" width="14" height="4" fill="${color}"/>`,
        `<text x="${lx + 20}" y="${ly - 3}" fill="${TEXT}" font-size="12">${esc(name)}</text>`,
      );
    }
  }
  if (lines.length > 6)
    out.push(
      `<text x="${right}" y="${y + 24}" fill="${TEXT}" font-size="12" text-anchor="end">${lines.length} series, 6 in the legend</text>`,
    );
  return out.join("\n");
}

export function dashboardSvg(checks: QueryCheck[], range: { start: number; end: number }): string {
  const header = 56;
  const rows = Math.ceil(CHARTS.length / 2);
  const height = header + STAT_H + GAP + rows * (CHART_H + GAP) + GAP;
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" font-family="DejaVu Sans, sans-serif">`,
    `<rect width="100%" height="100%" fill="${BG}"/>`,
    `<text x="${GAP}" y="36" fill="#ffffff" font-size="22">Sovereign operator</text>`,
    `<text x="${WIDTH - GAP}" y="36" fill="${TEXT}" font-size="13" text-anchor="end">${esc(
      `hub + member scraped by Prometheus every 1 s; ${clock(range.end - range.start)} of a test run (${new Date(range.start * 1000).toISOString().slice(0, 16)}Z)`,
    )}</text>`,
  ];
  const statW = (WIDTH - GAP * (STATS.length + 1)) / STATS.length;
  for (const [i, title] of STATS.entries())
    parts.push(statPanel(GAP + i * (statW + GAP), header, statW, title, checks));
  const chartW = (WIDTH - GAP * 3) / 2;
  for (const [i, title] of CHARTS.entries()) {
    const x = GAP + (i % 2) * (chartW + GAP);
    const y = header + STAT_H + GAP + Math.floor(i / 2) * (CHART_H + GAP);
    parts.push(chartPanel(x, y, chartW, title, checks, range));
  }
  parts.push("</svg>");
  return parts.join("\n");
}

/** Writes the PNG of the main panels to `out` (and the SVG beside it). */
export async function renderDashboard(
  checks: QueryCheck[],
  opts: { start: number; end: number; out: string },
): Promise<void> {
  const missing = [...STATS, ...CHARTS].filter((title) => !checks.some((c) => c.query.title === title));
  if (missing.length) throw new Error(`the dashboard has no panel ${missing.join(", ")}`);
  const svgPath = opts.out.replace(/\.png$/, ".svg");
  await writeFile(svgPath, dashboardSvg(checks, opts));
  await new Promise<void>((resolve, reject) => {
    const child = spawn(RSVG_CONVERT, ["--format=png", `--output=${opts.out}`, svgPath], {
      stdio: ["ignore", "ignore", "pipe"],
    });
    let err = "";
    child.stderr?.on("data", (d: Buffer) => {
      err += d.toString();
    });
    child.once("error", reject);
    child.once("exit", (code) =>
      code === 0 ? resolve() : reject(new Error(`${RSVG_CONVERT} exited with ${code}: ${err}`)),
    );
  });
}
