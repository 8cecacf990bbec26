// The reference Python safetensors (and numpy) as a test oracle, in a throwaway venv made on
// first use and reused after. Creation is locked, so parallel ava workers wait for one
// install. When PyPI cannot be reached the oracle reports why, and the tests skip saying so.
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { withLock } from "../testbed/lock.ts";

const run = promisify(execFile);
const root = resolve(import.meta.dirname, "../..");
const venv = join(root, ".venv-oracle");
const python = join(venv, "bin", "python");
const requirements = join(root, "sdk", "python", "requirements-oracle.txt");
const ready = join(venv, ".installed");

export type Oracle = { ok: true; python: string } | { ok: false; reason: string };

let cached: Promise<Oracle> | undefined;

export function pythonOracle(): Promise<Oracle> {
  cached ??= install();
  return cached;
}

async function install(): Promise<Oracle> {
  if (existsSync(ready)) return { ok: true, python };
  try {
    return await withLock(
      join(root, ".venv-oracle.lock"),
      async () => {
        if (existsSync(ready)) return { ok: true, python } as const;
        await run("python3", ["-m", "venv", "--clear", venv], { timeout: 60_000 });
        await run(
          python,
          ["-m", "pip", "install", "--quiet", "--timeout", "20", "--retries", "1", "-r", requirements],
          { timeout: 150_000 },
        );
        await run(python, ["-c", "import safetensors, numpy"]);
        await run("touch", [ready]);
        return { ok: true, python } as const;
      },
      170_000,
    );
  } catch (err) {
    const detail = (err as { stderr?: string }).stderr?.trim().split("\n").slice(-2).join(" ") || String(err);
    return { ok: false, reason: `could not install the Python oracle (is PyPI reachable?): ${detail}` };
  }
}

/** Runs a Python script in the oracle venv with JSON on stdin; parses its JSON stdout. */
export async function runPython<T>(
  oracle: Oracle & { ok: true },
  script: string,
  input: unknown,
): Promise<T> {
  const { spawn } = await import("node:child_process");
  return new Promise((resolvePromise, reject) => {
    const child = spawn(oracle.python, ["-c", script], { stdio: ["pipe", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (d: Buffer) => {
      out += d.toString();
    });
    child.stderr.on("data", (d: Buffer) => {
      err += d.toString();
    });
    child.on("error", reject);
    child.on("close", (code) => {
      if (code !== 0) reject(new Error(`python exited ${code}: ${err}`));
      else resolvePromise(JSON.parse(out) as T);
    });
    child.stdin.end(JSON.stringify(input));
  });
}
