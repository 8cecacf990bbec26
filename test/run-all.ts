// `make test`: static checks, then every ava suite against one shared testbed, then a
// single closing line with the totals. A testbed this run started is stopped at the end
// (set SOVEREIGN_TESTBED_KEEP=1 to keep it for the next run); one that was already up
// is left running, as the developer had it.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { down, healthy, readDescription, up } from "./testbed/testbed.ts";
import { defaultStateDir } from "./testbed/topology.ts";

const root = resolve(import.meta.dirname, "..");
const bin = (name: string) => join(root, "node_modules", ".bin", name);

interface Counts {
  passed: number;
  failed: number;
  skipped: number;
}

function run(
  cmd: string,
  args: string[],
  opts: { capture?: boolean } = {},
): Promise<{ code: number; output: string }> {
  return new Promise((res) => {
    const child = spawn(cmd, args, { cwd: root, stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    const onData = (stream: NodeJS.WriteStream) => (chunk: Buffer) => {
      stream.write(chunk);
      if (opts.capture) output += chunk.toString();
    };
    child.stdout.on("data", onData(process.stdout));
    child.stderr.on("data", onData(process.stderr));
    child.on("close", (code) => res({ code: code ?? 1, output }));
  });
}

/**
 * Totals from ava's report: one ✔ line per passed test, one ✘ line per failed one, one
 * "- [skip]" or "- [todo]" line per skipped one; failures outside any test (uncaught
 * exceptions, unhandled rejections, tests left pending by a timeout) come from the
 * closing summary. ava leaves out its "N tests passed" line when something failed, so
 * the per-test lines are what is counted.
 */
export function parseAvaSummary(output: string): Counts {
  const lines = (re: RegExp) => output.match(re)?.length ?? 0;
  const summed = (re: RegExp) => [...output.matchAll(re)].reduce((n, m) => n + Number(m[1]), 0);
  return {
    passed: lines(/^\s*✔ /gm),
    failed:
      lines(/^\s*✘ /gm) +
      summed(/^\s*(\d+) uncaught exceptions?/gm) +
      summed(/^\s*(\d+) unhandled rejections?/gm) +
      summed(/^\s*(\d+) tests? remained pending/gm),
    skipped: lines(/^\s*- \[(skip|todo)\]/gm),
  };
}

async function main(): Promise<number> {
  const totals: Counts = { passed: 0, failed: 0, skipped: 0 };
  const step = async (name: string, cmd: string, args: string[]) => {
    console.log(`\n== ${name}`);
    const { code } = await run(cmd, args);
    if (code === 0) totals.passed++;
    else {
      totals.failed++;
      console.log(`== ${name} FAILED (exit ${code})`);
    }
  };
  await step("typecheck (tsc --noEmit)", bin("tsc"), ["-p", "tsconfig.json"]);
  await step("lint (biome)", bin("biome"), ["check", "."]);
  if (existsSync(join(root, "crds", "generate.ts"))) {
    await step("generated CRDs and types are up to date", process.execPath, ["crds/generate.ts", "--check"]);
  }

  const stateDir = defaultStateDir();
  const before = await readDescription(stateDir);
  const wasUp = before !== undefined && (await healthy(before));
  console.log(`\n== testbed (${wasUp ? "already up, reusing it" : "starting it"})`);
  const started = performance.now();
  await up({ stateDir });
  console.log(`testbed ready after ${((performance.now() - started) / 1000).toFixed(1)}s`);

  try {
    for (const config of ["ava.config.js", "ava.disruptive.config.js"]) {
      console.log(`\n== ava --config ${config}`);
      const { code, output } = await run(bin("ava"), ["--config", config], { capture: true });
      const counts = parseAvaSummary(output);
      if (code !== 0 && counts.failed === 0) counts.failed = 1; // ava failed before reporting a count
      totals.passed += counts.passed;
      totals.failed += counts.failed;
      totals.skipped += counts.skipped;
    }
  } finally {
    if (!wasUp && process.env.SOVEREIGN_TESTBED_KEEP !== "1") {
      console.log("\n== stopping the testbed this run started (SOVEREIGN_TESTBED_KEEP=1 keeps it)");
      await down({ stateDir });
    }
  }
  // The one line CI reads: static checks count as one test each.
  console.log(`\ntests: ${totals.passed} passed, ${totals.failed} failed, ${totals.skipped} skipped`);
  return totals.failed === 0 ? 0 : 1;
}

if (import.meta.main) {
  main().then(
    (code) => process.exit(code),
    (err: unknown) => {
      console.error(err instanceof Error ? (err.stack ?? err.message) : String(err));
      console.log("\ntests: 0 passed, 1 failed, 0 skipped");
      process.exit(1);
    },
  );
}
