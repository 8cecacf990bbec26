// The operator binary (operator/main.ts) as a child process, as users run it, with its log
// lines (JSON on stderr) collected for a test to wait on.
import { type ChildProcess, spawn } from "node:child_process";
import { join } from "node:path";
import { repoRoot } from "../testbed/topology.ts";

export interface OperatorProcess {
  child: ChildProcess;
  /** Every complete line it wrote to stderr so far. */
  lines: string[];
  exited: Promise<number>;
}

export function startOperator(args: string[]): OperatorProcess {
  const child = spawn(process.execPath, [join(repoRoot, "operator", "main.ts"), ...args], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  const lines: string[] = [];
  let buf = "";
  child.stderr?.on("data", (d: Buffer) => {
    buf += d.toString();
    const parts = buf.split("\n");
    buf = parts.pop() ?? "";
    lines.push(...parts);
  });
  const exited = new Promise<number>((resolve) => child.on("exit", (code) => resolve(code ?? -1)));
  return { child, lines, exited };
}

export async function waitForLine(lines: string[], pattern: RegExp, timeoutMs = 20_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const hit = lines.find((l) => pattern.test(l));
    if (hit) return hit;
    if (Date.now() > deadline) throw new Error(`no log line matching ${pattern}; got:\n${lines.join("\n")}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
