/**
 * Copies the generated CRDs (crds/generated/*.yaml) into the chart's crds/ folder, which Helm
 * installs before the templates. The chart never holds a hand-edited CRD: the copies must equal
 * the generated files byte for byte, and test/charts/chart.test.ts fails when they do not.
 *
 *   node charts/sovereign/sync-crds.ts            copy (and remove copies of CRDs no longer generated)
 *   node charts/sovereign/sync-crds.ts --check    exit 1 if the chart's copies are stale
 */
import { copyFile, readdir, readFile, rm } from "node:fs/promises";
import path from "node:path";
import { parseArgs } from "node:util";

export const CHART_DIR = import.meta.dirname;
export const CHART_CRDS_DIR = path.join(CHART_DIR, "crds");
export const GENERATED_CRDS_DIR = path.join(CHART_DIR, "..", "..", "crds", "generated");

export interface CrdDrift {
  /** Generated CRDs the chart lacks or holds a different copy of. */
  stale: string[];
  /** Files in the chart's crds/ that are no generated CRD. */
  extra: string[];
}

const yamlFiles = async (dir: string): Promise<string[]> =>
  (await readdir(dir).catch(() => [] as string[])).filter((f) => f.endsWith(".yaml")).sort();

/** Compares the chart's CRDs with the generated ones; empty lists mean in sync. */
export async function crdDrift(
  generatedDir = GENERATED_CRDS_DIR,
  chartDir = CHART_CRDS_DIR,
): Promise<CrdDrift> {
  const generated = await yamlFiles(generatedDir);
  const copied = new Set(await yamlFiles(chartDir));
  const stale: string[] = [];
  for (const file of generated) {
    const want = await readFile(path.join(generatedDir, file));
    const have = copied.has(file) ? await readFile(path.join(chartDir, file)) : undefined;
    if (!have?.equals(want)) stale.push(file);
  }
  const extra = [...copied].filter((f) => !generated.includes(f));
  return { stale, extra };
}

/** Makes the chart's crds/ equal crds/generated/; returns what it changed. */
export async function syncCrds(
  generatedDir = GENERATED_CRDS_DIR,
  chartDir = CHART_CRDS_DIR,
): Promise<CrdDrift> {
  const drift = await crdDrift(generatedDir, chartDir);
  for (const file of drift.stale) await copyFile(path.join(generatedDir, file), path.join(chartDir, file));
  for (const file of drift.extra) await rm(path.join(chartDir, file));
  return drift;
}

if (import.meta.main) {
  const { values } = parseArgs({ options: { check: { type: "boolean", default: false } } });
  if (values.check) {
    const { stale, extra } = await crdDrift();
    if (stale.length + extra.length > 0) {
      console.error(
        `The chart's CRDs differ from crds/generated/ (stale: ${stale.join(", ") || "none"}; extra: ${extra.join(", ") || "none"}).\nRun \`node charts/sovereign/sync-crds.ts\`.`,
      );
      process.exit(1);
    }
    console.log("The chart's CRDs equal crds/generated/.");
  } else {
    const { stale, extra } = await syncCrds();
    console.log(
      stale.length + extra.length === 0
        ? "The chart's CRDs were already up to date."
        : `Copied ${stale.join(", ") || "nothing"}; removed ${extra.join(", ") || "nothing"}.`,
    );
  }
}
