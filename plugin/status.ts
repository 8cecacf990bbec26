// `kubectl sovereign status`: every run's phase, round, quorum and regions, and every region's
// standing, from the hub's FederatedRuns and SovereignNodes. The summaries are pure functions of
// the objects (and the time), so the table and `-o json` say the same thing.
import { CustomObjectsApi, type KubeConfig } from "@kubernetes/client-node";
import type { Condition, FederatedRun, SovereignNode } from "../crds/types.generated.ts";
import { quorumSize } from "../operator/hub/rounds.ts";
import { SOVEREIGN_API } from "../operator/names.ts";
import { type Options, outputFormat } from "./args.ts";
import { fromApiError, PluginError, usageError } from "./errors.ts";
import { loadKubeConfig, namespaceOf } from "./kube.ts";
import { age, formatTable, oneLine } from "./table.ts";

export const STATUS_HELP = `Show runs, rounds, regions and quorum at a glance, from the hub.

Usage:
  kubectl sovereign status [RUN] [-n NAMESPACE | -A] [-o json] [--kubeconfig FILE] [--context NAME]

For each FederatedRun: phase, round n/N, the open round's state, regions delivered of the quorum
required, learners ready, each region's state (placed, last delta, quarantined, reason), and its
Degraded condition. Then each region (SovereignNode): accepted, ready, attested GPUs, quarantined,
last heartbeat, and what is wrong with it. With RUN, only that run and its regions.

The kubeconfig context must reach the hub (reading FederatedRuns and SovereignNodes).

Examples:
  kubectl sovereign status -A
  kubectl sovereign status fedavg-mnist -n team-a -o json | jq .runs[0].quorum
`;

export interface ConditionNote {
  type: string;
  status: string;
  reason: string;
  message: string;
}

export interface RunRegionSummary {
  name: string;
  placed: boolean;
  learnersReady: number;
  learnersDesired: number;
  lastDeltaRound: number | null;
  /** Delivered a delta for the open round (between rounds: contributed to the last closed one). */
  deliveredThisRound: boolean;
  quarantined: boolean;
  reason: string;
  message: string;
}

export interface RunSummary {
  namespace: string;
  name: string;
  phase: string;
  round: { current: number; total: number };
  /** The open round's phase (WaitingForDeltas, GraceWindow, …), or what the run does between rounds. */
  roundState: string;
  /** The open round's deliveries, or between rounds the last closed round's contributors and outcome. */
  quorum: {
    round: number | null;
    delivered: number;
    required: number;
    deliveredRegions: string[];
    outcome?: string;
  };
  regionsPlaced: number;
  regionsReady: number;
  regions: RunRegionSummary[];
  /** Conditions that need a look: Degraded=True, and Placed or Ready when False. */
  problems: ConditionNote[];
}

export interface RegionSummary {
  name: string;
  jurisdiction: string;
  accepted: boolean;
  ready: string;
  gpus: { attested: number; total: number };
  nodes: { attested: number; failing: number; total: number };
  quarantined: boolean;
  lastHeartbeatTime: string | null;
  /** Conditions that need a look: Degraded or Quarantined True, Ready or Attested False. */
  problems: ConditionNote[];
}

export interface StatusReport {
  runs: RunSummary[];
  regions: RegionSummary[];
  /** Set when the regions could not be read (the runs still are). */
  regionsUnavailable?: string;
}

const num = (v: unknown): number => (typeof v === "number" && Number.isFinite(v) ? v : 0);
const str = (v: unknown): string => (typeof v === "string" ? v : "");
const list = <T>(v: unknown): T[] => (Array.isArray(v) ? (v as T[]) : []);

function conditionsOf(obj: { status?: { conditions?: unknown } } | undefined): ConditionNote[] {
  return list<Partial<Condition>>(obj?.status?.conditions)
    .filter((c) => c && typeof c === "object")
    .map((c) => ({
      type: str(c.type),
      status: str(c.status),
      reason: str(c.reason),
      message: str(c.message),
    }));
}

function condition(notes: ConditionNote[], type: string): ConditionNote | undefined {
  return notes.find((c) => c.type === type);
}

/** What the run is doing when no round is open. */
function roundStateOf(run: FederatedRun): string {
  const progress = run.status?.roundProgress;
  if (progress && typeof progress.phase === "string") {
    const retries = num(progress.retries);
    return retries > 0 ? `${progress.phase} (retry ${retries})` : progress.phase;
  }
  const phase = run.status?.phase ?? "Pending";
  if (phase === "Succeeded" || phase === "Failed") return "Finished";
  if (phase === "Running") return "BetweenRounds";
  return "NotStarted";
}

export function summarizeRun(run: FederatedRun): RunSummary {
  const status = run.status ?? {};
  const progress = status.roundProgress;
  // Between rounds, the quorum shown is the last closed round's: who it aggregated.
  const lastClosed = list<Record<string, unknown>>(status.rounds)
    .filter((r) => r && typeof r === "object" && typeof r.round === "number")
    .sort((a, b) => (a.round as number) - (b.round as number))
    .at(-1);
  const delivered = list<unknown>(
    progress ? progress.deliveredRegions : lastClosed?.contributingRegions,
  ).filter((r): r is string => typeof r === "string");
  let required = 1;
  try {
    required = quorumSize(run.spec);
  } catch {
    // A spec the API server would not have stored; show the run rather than fail the table.
  }
  const notes = conditionsOf(run);
  const finished = status.phase === "Succeeded" || status.phase === "Failed";
  const problems = notes.filter(
    (c) =>
      (c.type === "Degraded" && c.status === "True") ||
      // A finished run's learners are gone by design: not a problem worth a line.
      (!finished && (c.type === "Placed" || c.type === "Ready") && c.status === "False") ||
      (c.type === "Progressing" && c.reason === "RunFailed"),
  );
  return {
    namespace: str(run.metadata?.namespace),
    name: str(run.metadata?.name),
    phase: str(status.phase) || "Pending",
    round: { current: num(status.currentRound), total: num(run.spec?.rounds) },
    roundState: roundStateOf(run),
    quorum: {
      round: progress ? num(progress.round) : lastClosed ? num(lastClosed.round) : null,
      delivered: delivered.length,
      required: num(required) || 1,
      deliveredRegions: delivered,
      ...(progress || !lastClosed ? {} : { outcome: str(lastClosed.outcome) }),
    },
    regionsPlaced: num(status.regionsPlaced),
    regionsReady: num(status.regionsReady),
    regions: list<Record<string, unknown>>(status.regions)
      .filter((r) => r && typeof r === "object" && typeof r.name === "string")
      .map((r) => ({
        name: r.name as string,
        placed: r.placed !== false,
        learnersReady: num(r.learnersReady),
        learnersDesired: num(r.learnersDesired),
        lastDeltaRound: typeof r.lastDeltaRound === "number" ? r.lastDeltaRound : null,
        deliveredThisRound: delivered.includes(r.name as string),
        quarantined: r.quarantined === true,
        reason: str(r.reason),
        message: str(r.message),
      })),
    problems,
  };
}

export function summarizeRegion(node: SovereignNode): RegionSummary {
  const status = node.status ?? {};
  const notes = conditionsOf(node);
  const ready = condition(notes, "Ready");
  const problems = notes.filter(
    (c) =>
      ((c.type === "Degraded" || c.type === "Quarantined") && c.status === "True") ||
      ((c.type === "Ready" || c.type === "Attested") && c.status === "False"),
  );
  const gpuNodes = status.gpuNodes ?? {};
  return {
    name: str(node.metadata?.name),
    jurisdiction: str(node.spec?.jurisdiction),
    accepted: node.spec?.accepted === true,
    ready: ready ? (ready.status === "True" ? "True" : `${ready.status} (${ready.reason})`) : "Unknown",
    gpus: { attested: num(gpuNodes.attestedGpus), total: num(gpuNodes.totalGpus) },
    nodes: { attested: num(gpuNodes.attested), failing: num(gpuNodes.failing), total: num(gpuNodes.total) },
    quarantined: condition(notes, "Quarantined")?.status === "True",
    lastHeartbeatTime: typeof status.lastHeartbeatTime === "string" ? status.lastHeartbeatTime : null,
    problems,
  };
}

/** Runs sorted by namespace and name, regions by name; with `onlyRun`, only that run's regions. */
export function statusReport(
  runs: readonly FederatedRun[],
  nodes: readonly SovereignNode[] | string,
  onlyRun?: string,
): StatusReport {
  const summaries = runs
    .map(summarizeRun)
    .sort((a, b) => a.namespace.localeCompare(b.namespace) || a.name.localeCompare(b.name));
  if (typeof nodes === "string") return { runs: summaries, regions: [], regionsUnavailable: nodes };
  const wanted = onlyRun ? new Set(summaries.flatMap((r) => r.regions.map((g) => g.name))) : undefined;
  const regions = nodes
    .map(summarizeRegion)
    .filter((r) => !wanted || wanted.has(r.name))
    .sort((a, b) => a.name.localeCompare(b.name));
  return { runs: summaries, regions };
}

const yesNo = (b: boolean) => (b ? "yes" : "no");
const note = (c: ConditionNote) =>
  oneLine(`${c.type}=${c.status} ${c.reason}${c.message ? `: ${c.message}` : ""}`, 300);

export function formatStatus(report: StatusReport, opts: { allNamespaces: boolean; now: number }): string {
  const out: string[] = [];
  if (report.runs.length === 0) out.push("No FederatedRuns found.");
  else {
    const headers = [
      ...(opts.allNamespaces ? ["NAMESPACE"] : []),
      "RUN",
      "PHASE",
      "ROUND",
      "ROUND STATE",
      "QUORUM",
      "READY",
      "DEGRADED",
    ];
    const rows = report.runs.map((r) => {
      const degraded = r.problems.find((c) => c.type === "Degraded");
      return [
        ...(opts.allNamespaces ? [oneLine(r.namespace)] : []),
        oneLine(r.name),
        oneLine(r.phase),
        `${r.round.current}/${r.round.total}`,
        oneLine(r.roundState),
        r.quorum.round === null
          ? "-"
          : `${r.quorum.delivered}/${r.quorum.required}${r.quorum.outcome ? ` (round ${r.quorum.round} ${oneLine(r.quorum.outcome)})` : ""}`,
        `${r.regionsReady}/${r.regionsPlaced}`,
        degraded ? oneLine(degraded.reason) : "-",
      ];
    });
    out.push(formatTable(headers, rows));
    for (const r of report.runs) {
      if (r.regions.length === 0 && r.problems.length === 0) continue;
      out.push("", `${oneLine(r.namespace)}/${oneLine(r.name)}:`);
      if (r.regions.length > 0) {
        out.push(
          formatTable(
            ["REGION", "PLACED", "LEARNERS", "LAST DELTA", "DELIVERED", "QUARANTINED", "REASON"],
            r.regions.map((g) => [
              oneLine(g.name),
              yesNo(g.placed),
              `${g.learnersReady}/${g.learnersDesired}`,
              g.lastDeltaRound === null ? "-" : String(g.lastDeltaRound),
              yesNo(g.deliveredThisRound),
              yesNo(g.quarantined),
              g.reason ? oneLine(`${g.reason}${g.message ? `: ${g.message}` : ""}`) : "-",
            ]),
            "  ",
          ),
        );
      }
      for (const c of r.problems) out.push(`  ${note(c)}`);
    }
  }
  out.push("");
  if (report.regionsUnavailable) out.push(`Regions not shown: ${oneLine(report.regionsUnavailable, 400)}`);
  else if (report.regions.length === 0) out.push("No SovereignNodes found.");
  else {
    out.push(
      formatTable(
        ["REGION", "JURISDICTION", "ACCEPTED", "READY", "ATTESTED GPUS", "QUARANTINED", "HEARTBEAT"],
        report.regions.map((g) => [
          oneLine(g.name),
          oneLine(g.jurisdiction),
          yesNo(g.accepted),
          oneLine(g.ready),
          `${g.gpus.attested}/${g.gpus.total}`,
          yesNo(g.quarantined),
          g.lastHeartbeatTime ? `${age(Date.parse(g.lastHeartbeatTime), opts.now)} ago` : "never",
        ]),
      ),
    );
    for (const g of report.regions) for (const c of g.problems) out.push(`  ${oneLine(g.name)}: ${note(c)}`);
  }
  return `${out.join("\n")}\n`;
}

const crdsMissing = {
  reason: "CrdsNotInstalled",
  message:
    "the hub has no sovereign.ai resources; is this context the hub? (install the CRDs: crds/generated)",
};

export async function statusCommand(
  args: string[],
  options: Options,
  io: { stdout(text: string): void; now(): number },
  kc: KubeConfig = loadKubeConfig(options),
): Promise<number> {
  if (args.length > 1) throw usageError(`status takes at most one run name, got ${args.length}`);
  const format = outputFormat(options);
  const allNamespaces = options["all-namespaces"] === true;
  const runName = args[0];
  if (allNamespaces && runName) throw usageError("give a run name with -n NAMESPACE, not with -A");
  if (allNamespaces && options.namespace !== undefined) throw usageError("-n and -A exclude each other");
  const namespace = namespaceOf(kc, options);
  const api = kc.makeApiClient(CustomObjectsApi);
  const runsApi = { ...SOVEREIGN_API, plural: "federatedruns" };
  let runs: FederatedRun[];
  if (runName) {
    try {
      runs = [
        (await api.getNamespacedCustomObject({ ...runsApi, namespace, name: runName })) as FederatedRun,
      ];
    } catch (err) {
      if ((err as { code?: number }).code === 404) {
        // A 404 for the run, or for the resource type itself: tell them apart.
        await api.listNamespacedCustomObject({ ...runsApi, namespace, limit: 1 }).catch((e: unknown) => {
          throw fromApiError(e, "hub", `list FederatedRuns in ${namespace}`, crdsMissing);
        });
        throw new PluginError(
          "RunNotFound",
          `no FederatedRun ${JSON.stringify(runName)} in namespace ${namespace}; list them with kubectl sovereign status -A`,
        );
      }
      throw fromApiError(err, "hub", `read FederatedRun ${namespace}/${runName}`);
    }
  } else {
    try {
      const res = (
        allNamespaces
          ? await api.listClusterCustomObject(runsApi)
          : await api.listNamespacedCustomObject({ ...runsApi, namespace })
      ) as { items?: FederatedRun[] };
      runs = res.items ?? [];
    } catch (err) {
      throw fromApiError(
        err,
        "hub",
        `list FederatedRuns ${allNamespaces ? "in all namespaces" : `in ${namespace}`}`,
        crdsMissing,
      );
    }
  }
  let nodes: SovereignNode[] | string;
  try {
    nodes =
      (
        (await api.listClusterCustomObject({ ...SOVEREIGN_API, plural: "sovereignnodes" })) as {
          items?: SovereignNode[];
        }
      ).items ?? [];
  } catch (err) {
    // The runs are still worth showing to someone who may read them but not the regions.
    nodes = fromApiError(err, "hub", "list SovereignNodes", crdsMissing).message;
  }
  const report = statusReport(runs, nodes, runName);
  io.stdout(
    format === "json"
      ? `${JSON.stringify(report, null, 2)}\n`
      : formatStatus(report, { allNamespaces, now: io.now() }),
  );
  return 0;
}
