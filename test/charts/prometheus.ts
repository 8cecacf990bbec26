// A real Prometheus (Debian's /usr/bin/prometheus) for tests: started on a free port with a
// temporary config and TSDB, scraping the targets it is given, queried over its HTTP API. And
// what a Grafana dashboard asks of it: each panel's queries with the template variables
// substituted, the metric selectors inside them, and a check that both return data.
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const PROMETHEUS = "/usr/bin/prometheus";
export const PROMETHEUS_INSTALL = "apt-get install -y --no-install-recommends prometheus librsvg2-bin";

export function prometheusInstalled(): boolean {
  return existsSync(PROMETHEUS);
}

/** A port nothing listens on right now (the kernel's choice), for servers that need one up front. */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : 0;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

export interface Sample {
  t: number;
  v: number;
}
export interface Series {
  metric: Record<string, string>;
  values: Sample[];
}

export interface Prometheus {
  url: string;
  /** A range query; each series' values as numbers (NaN stays NaN). */
  queryRange(expr: string, start: number, end: number, stepSeconds: number): Promise<Series[]>;
  /** Names Prometheus holds metadata for: what the targets' scrapes declared (# TYPE), with or without samples. */
  metadataNames(): Promise<Set<string>>;
  /** job → health of each active target. */
  targets(): Promise<{ job: string; health: string; lastError: string }[]>;
  /** Prometheus's own log, for failure messages. */
  log(): string;
  stop(): Promise<void>;
}

export async function startPrometheus(opts: {
  targets: { job: string; address: string }[];
  scrapeIntervalSeconds: number;
}): Promise<Prometheus> {
  const dir = await mkdtemp(join(tmpdir(), "sovereign-prometheus-"));
  const port = await freePort();
  const interval = `${opts.scrapeIntervalSeconds}s`;
  // JSON is YAML: no YAML writer needed for the config.
  const config = {
    global: { scrape_interval: interval, evaluation_interval: interval },
    scrape_configs: opts.targets.map((t) => ({
      job_name: t.job,
      scrape_timeout: interval,
      static_configs: [{ targets: [t.address] }],
    })),
  };
  await writeFile(join(dir, "prometheus.yml"), JSON.stringify(config, null, 2));
  const child: ChildProcess = spawn(
    PROMETHEUS,
    [
      `--config.file=${join(dir, "prometheus.yml")}`,
      `--storage.tsdb.path=${join(dir, "data")}`,
      `--web.listen-address=127.0.0.1:${port}`,
      "--log.level=warn",
    ],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  let log = "";
  child.stderr?.on("data", (d: Buffer) => {
    log = (log + d.toString()).slice(-20_000);
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const url = `http://127.0.0.1:${port}`;
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
    await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    await rm(dir, { recursive: true, force: true });
  };
  const api = async <T>(path: string, params: Record<string, string> = {}): Promise<T> => {
    const res = await fetch(`${url}${path}?${new URLSearchParams(params)}`);
    const body = (await res.json()) as { status: string; data: T; error?: string };
    if (body.status !== "success") throw new Error(`${path} ${JSON.stringify(params)}: ${body.error}`);
    return body.data;
  };
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`prometheus exited with ${child.exitCode}:\n${log}`);
    const ready = await fetch(`${url}/-/ready`).then(
      (r) => r.ok,
      () => false,
    );
    if (ready) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`prometheus not ready after 60 s:\n${log}`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  return {
    url,
    async queryRange(expr, start, end, step) {
      const data = await api<{ result: { metric: Record<string, string>; values: [number, string][] }[] }>(
        "/api/v1/query_range",
        { query: expr, start: String(start), end: String(end), step: String(step) },
      );
      return data.result.map((r) => ({
        metric: r.metric,
        values: r.values.map(([t, v]) => ({ t, v: Number(v) })),
      }));
    },
    async metadataNames() {
      return new Set(Object.keys(await api<Record<string, unknown>>("/api/v1/metadata")));
    },
    async targets() {
      const data = await api<{
        activeTargets: { labels: Record<string, string>; health: string; lastError: string }[];
      }>("/api/v1/targets", { state: "active" });
      return data.activeTargets.map((t) => ({
        job: t.labels.job ?? "",
        health: t.health,
        lastError: t.lastError,
      }));
    },
    log: () => log,
    stop,
  };
}

// ---- Dashboards

export interface DashboardQuery {
  panelId: number;
  title: string;
  type: string;
  refId: string;
  /** As written in the dashboard. */
  expr: string;
  legendFormat?: string;
  unit?: string;
}

interface Panel {
  id: number;
  type: string;
  title: string;
  fieldConfig?: { defaults?: { unit?: string } };
  targets?: { expr: string; refId?: string; legendFormat?: string }[];
  panels?: Panel[];
}

/** Every query of every panel (collapsed rows' panels included), in dashboard order. */
export function dashboardQueries(dashboard: { panels: Panel[] }): DashboardQuery[] {
  const out: DashboardQuery[] = [];
  const visit = (panels: Panel[]) => {
    for (const p of panels) {
      for (const [i, target] of (p.targets ?? []).entries()) {
        out.push({
          panelId: p.id,
          title: p.title,
          type: p.type,
          refId: target.refId ?? String.fromCharCode(65 + i),
          expr: target.expr,
          legendFormat: target.legendFormat,
          unit: p.fieldConfig?.defaults?.unit,
        });
      }
      visit(p.panels ?? []);
    }
  };
  visit(dashboard.panels);
  return out;
}

/**
 * Grafana's variables as Grafana would expand them for this dashboard: `$job` as its "All"
 * value (a regex), the interval variables as durations. A variable left over is an error,
 * since Prometheus would refuse the query for a reason that is not the dashboard's.
 */
export function substitute(expr: string, vars: Record<string, string>): string {
  const out = expr.replace(/\$\{?(__[a-z_]+|[a-zA-Z_][a-zA-Z0-9_]*)\}?/g, (whole, name: string) => {
    const value = vars[name];
    if (value === undefined) throw new Error(`no value for ${whole} in ${expr}`);
    return value;
  });
  return out;
}

const KEYWORDS = new Set([
  "by",
  "without",
  "on",
  "ignoring",
  "group_left",
  "group_right",
  "bool",
  "offset",
  "and",
  "or",
  "unless",
  "inf",
  "nan",
]);

/**
 * The vector selectors of a PromQL expression, each a metric name with its label matchers
 * (`a_total{job=~".+", result!="passed"}`): what must hold samples for the expression to be
 * about real series. Functions, keywords, label names and durations are not selectors.
 */
export function vectorSelectors(expr: string): string[] {
  // Blank out (same length, so offsets still match `expr`) what cannot hold a metric name:
  // strings, matcher braces, range brackets and by/on label lists.
  const blank = (s: string) => " ".repeat(s.length);
  let masked = expr.replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'/g, blank);
  masked = masked.replace(/\{[^}]*\}/g, (m) => `{${" ".repeat(m.length - 2)}}`);
  masked = masked.replace(/\[[^\]]*\]/g, blank);
  masked = masked.replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, blank);
  const selectors: string[] = [];
  for (const m of masked.matchAll(/[a-zA-Z_:][a-zA-Z0-9_:]*/g)) {
    const start = m.index ?? 0;
    const before = masked[start - 1] ?? " ";
    if (/[0-9.]/.test(before)) continue; // the tail of a number like 1e-3
    const afterIdx = start + m[0].length;
    const rest = masked.slice(afterIdx);
    const next = rest.trimStart();
    if (next.startsWith("(") || KEYWORDS.has(m[0].toLowerCase())) continue;
    if (next.startsWith("{")) {
      const open = afterIdx + (rest.length - next.length);
      const close = masked.indexOf("}", open);
      selectors.push(`${m[0]}${expr.slice(open, close + 1)}`);
    } else selectors.push(m[0]);
  }
  return selectors;
}

export function metricName(selector: string): string {
  return /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(selector)?.[0] ?? selector;
}

export interface QueryCheck {
  query: DashboardQuery;
  /** The expression as sent. */
  expr: string;
  series: Series[];
  /** Series with at least one finite value (a quantile of no observations is NaN). */
  withData: number;
  /** Names the scraped targets never declared: the operator does not export them. */
  unknownMetrics: string[];
  /** Selectors that matched no series during the run. */
  emptySelectors: string[];
  error?: string;
}

/** Runs every query of the dashboard, and each of its selectors, over [start, end]. */
export async function checkDashboard(
  prom: Prometheus,
  dashboard: { panels: Panel[] },
  range: { start: number; end: number; step: number; vars: Record<string, string> },
): Promise<QueryCheck[]> {
  const exported = await prom.metadataNames();
  // Histograms are declared under their base name; their series carry suffixes.
  const declared = (name: string) =>
    exported.has(name) || exported.has(name.replace(/_(bucket|sum|count)$/, ""));
  const checks: QueryCheck[] = [];
  for (const query of dashboardQueries(dashboard)) {
    const check: QueryCheck = {
      query,
      expr: "",
      series: [],
      withData: 0,
      unknownMetrics: [],
      emptySelectors: [],
    };
    try {
      check.expr = substitute(query.expr, range.vars);
      const selectors = vectorSelectors(check.expr);
      if (selectors.length === 0) check.error = "names no metric";
      check.unknownMetrics = [...new Set(selectors.map(metricName).filter((n) => !declared(n)))];
      for (const s of selectors) {
        const found = await prom.queryRange(`count(${s})`, range.start, range.end, range.step);
        if (found.length === 0) check.emptySelectors.push(s);
      }
      check.series = await prom.queryRange(check.expr, range.start, range.end, range.step);
      check.withData = check.series.filter((s) => s.values.some((v) => Number.isFinite(v.v))).length;
    } catch (err) {
      check.error = (err as Error).message;
    }
    checks.push(check);
  }
  return checks;
}

/** Why a query does not show data, or undefined when it does. */
export function problem(c: QueryCheck): string | undefined {
  if (c.error) return c.error;
  if (c.unknownMetrics.length) return `the operator exports no ${c.unknownMetrics.join(", ")}`;
  if (c.emptySelectors.length) return `no series for ${c.emptySelectors.join(", ")}`;
  if (c.withData === 0) return "the query returned no finite sample";
  return undefined;
}
