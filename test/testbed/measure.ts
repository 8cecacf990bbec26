// `node test/testbed/measure.ts`: the figures docs/testbed.md quotes. Stops any testbed
// in the state dir, starts one from scratch (binaries already cached), and reports the
// cached build times, each server's spawn-to-ready time and its resident memory once
// the testbed has settled. Prints Markdown and writes bench/results/testbed.json.
import { readFileSync } from "node:fs";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { type BuildManifest, manifestPath } from "./build.ts";
import { down, startupSeconds, up } from "./testbed.ts";
import { repoRoot } from "./topology.ts";

function rssMiB(pid: number | undefined): number {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? Number.NaN) / 1024;
  } catch {
    return Number.NaN;
  }
}

await down({ log: () => {} });
const t0 = performance.now();
const d = await up({ log: () => {} });
const totalUp = (performance.now() - t0) / 1000;
await sleep(15_000); // let caches fill and leader loops settle before sampling memory
const manifest = JSON.parse(await readFile(manifestPath(d.binDir), "utf8")) as BuildManifest;

const rows = d.processes.map((p) => ({
  name: p.name,
  readySeconds: Number((startupSeconds.get(p.name) ?? Number.NaN).toFixed(1)),
  rssMiB: Number(rssMiB(p.pid).toFixed(0)),
}));
const totalRss = rows.reduce((n, r) => n + (Number.isFinite(r.rssMiB) ? r.rssMiB : 0), 0);
const result = {
  measuredAt: new Date().toISOString(),
  goVersion: manifest.goVersion,
  buildSeconds: manifest.buildSeconds,
  upSeconds: totalUp,
  processes: rows,
  totalRssMiB: totalRss,
};
await mkdir(join(repoRoot, "bench", "results"), { recursive: true });
await writeFile(join(repoRoot, "bench", "results", "testbed.json"), `${JSON.stringify(result, null, 2)}\n`);

console.log(`Cold build (seconds, one go build per wrapper module, ${manifest.goVersion}):`);
for (const [group, s] of Object.entries(manifest.buildSeconds)) console.log(`| ${group} | ${s} |`);
console.log(`\n'up' from stopped to ready: ${totalUp.toFixed(1)} s\n`);
console.log("| server | spawn → ready (s) | RSS after settling (MiB) |\n|---|---|---|");
for (const r of rows) console.log(`| ${r.name} | ${r.readySeconds} | ${r.rssMiB} |`);
console.log(`| **total** | | **${totalRss.toFixed(0)}** |`);
