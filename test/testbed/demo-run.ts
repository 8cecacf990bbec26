// Runs `make demo` (test/testbed/demo.ts) as a child process for a test, and reads the one
// `DEMO-RESULT {json}` line it prints at the end. On failure the demo's last lines go to the
// test's log, so a red run says what the demo was doing.
import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import type { ExecutionContext } from "ava";
import { repoRoot } from "./topology.ts";

const execFileP = promisify(execFile);

/** What every run in a DEMO-RESULT line carries (test/testbed/demo.ts prints more). */
export interface DemoRunResult {
  phase: string;
  rounds: { round: number; outcome: string; contributingRegions?: string[] }[];
  seconds: number;
  evaluation?: { accuracy: number };
  link?: { ok: boolean; rounds: number; deltas: number; problems: string[] };
  deltas?: {
    published: number;
    accepted: number;
    aggregated: number;
    lost: number;
    excluded?: number;
    doubleCounted: number;
  };
}

export interface DemoOutput<T> {
  stdout: string;
  /** The parsed DEMO-RESULT line. */
  result: T;
}

export async function runDemo<T>(
  t: ExecutionContext,
  args: readonly string[],
  opts: { timeoutMs: number; tailLines?: number },
): Promise<DemoOutput<T>> {
  const { stdout } = await execFileP(
    process.execPath,
    [join(repoRoot, "test", "testbed", "demo.ts"), ...args],
    {
      cwd: repoRoot,
      maxBuffer: 32 * 1024 * 1024,
      timeout: opts.timeoutMs,
    },
  ).catch((err: { stdout?: string; stderr?: string; code?: number }) => {
    t.log(
      err.stdout
        ?.split("\n")
        .slice(-(opts.tailLines ?? 40))
        .join("\n"),
    );
    t.log(err.stderr?.split("\n").slice(-20).join("\n"));
    throw new Error(`the demo exited ${err.code}`);
  });
  const line = stdout.split("\n").find((l) => l.startsWith("DEMO-RESULT "));
  if (!line) throw new Error("the demo printed no DEMO-RESULT line");
  return { stdout, result: JSON.parse(line.slice("DEMO-RESULT ".length)) as T };
}
