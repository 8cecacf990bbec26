// What each chaos scenario measured, in one shape: `make reliability` (test/chaos/report.ts)
// writes docs/reliability.md from these files and nothing else. A scenario renders its own
// section from its own measurements; the report adds the totals across scenarios.
import { mkdir, writeFile } from "node:fs/promises";
import { cpus, loadavg } from "node:os";
import { join } from "node:path";
import { repoRoot } from "../testbed/topology.ts";

export const RESULTS_DIR = join(repoRoot, "bench", "results");

/**
 * `make reliability` sets SOVEREIGN_RELIABILITY=full; `make test` runs the same scenarios in a
 * reduced form (fewer rounds, fewer generated inputs) so that CI stays within its budget.
 */
export function fullReliabilityRun(env: NodeJS.ProcessEnv = process.env): boolean {
  return env.SOVEREIGN_RELIABILITY === "full";
}

export interface ChaosResult {
  /** File name stem: bench/results/chaos-<id>.json. */
  id: string;
  scenario: string;
  /** Where the section goes in the report (ascending). */
  order: number;
  date: string;
  machine: { cpus: number; loadavg: number[] };
  /** "full" under `make reliability`, "reduced" under `make test`. */
  form: "full" | "reduced";
  /** Section body, Markdown lines rendered by the scenario from what it measured. */
  markdown: string[];
  /** Deltas the scenario published and what became of them (summed over scenarios). */
  deltas?: { published: number; lost: number; doubleCounted: number };
  /** Bad inputs tried per input path (summed in the report's totals). */
  badInputs?: { path: string; tried: number; crashed: number; accepted: number }[];
}

export async function writeChaosResult(
  result: Omit<ChaosResult, "date" | "machine" | "form">,
): Promise<string> {
  await mkdir(RESULTS_DIR, { recursive: true });
  const file = join(RESULTS_DIR, `chaos-${result.id}.json`);
  const full: ChaosResult = {
    ...result,
    date: new Date().toISOString(),
    machine: { cpus: cpus().length, loadavg: loadavg() },
    form: fullReliabilityRun() ? "full" : "reduced",
  };
  await writeFile(file, `${JSON.stringify(full, null, 2)}\n`);
  return file;
}
