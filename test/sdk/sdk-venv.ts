// The Python SDK under test, in a venv made on first use and reused after: `.venv-sdk` from
// sdk/python/requirements.txt (exact pins) plus the SDK itself installed editable. Creation is
// locked so parallel ava workers wait for one install; the venv is rebuilt when the pins or
// pyproject.toml change (their digest is kept in the ready marker).
import { type ChildProcessWithoutNullStreams, execFile, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { promisify } from "node:util";
import { withLock } from "../testbed/lock.ts";

const run = promisify(execFile);
export const root = resolve(import.meta.dirname, "../..");
const sdk = join(root, "sdk", "python");
const venv = join(root, ".venv-sdk");
export const python = join(venv, "bin", "python");
const ready = join(venv, ".installed");
/** Python helper scripts of these tests. */
export const scripts = join(import.meta.dirname, "py");

function inputsDigest(): string {
  const hash = createHash("sha256");
  for (const file of ["requirements.txt", "pyproject.toml"]) hash.update(readFileSync(join(sdk, file)));
  return hash.digest("hex");
}

function isReady(digest: string): boolean {
  return existsSync(ready) && readFileSync(ready, "utf8").trim() === digest;
}

let cached: Promise<string> | undefined;

/** The venv's python; throws (failing the test) with pip's last lines if it cannot be installed. */
export function sdkPython(): Promise<string> {
  cached ??= install();
  return cached;
}

async function install(): Promise<string> {
  const digest = inputsDigest();
  if (isReady(digest)) return python;
  try {
    return await withLock(
      join(root, ".venv-sdk.lock"),
      async () => {
        if (isReady(digest)) return python;
        await run("python3", ["-m", "venv", "--clear", venv], { timeout: 60_000 });
        const pip = [
          python,
          "-m",
          "pip",
          "install",
          "--quiet",
          "--disable-pip-version-check",
          "--timeout",
          "20",
        ];
        await run(pip[0] as string, [...pip.slice(1), "-r", join(sdk, "requirements.txt")], {
          timeout: 240_000,
        });
        // The pinned setuptools is already in the venv: no isolated build env to download.
        await run(pip[0] as string, [...pip.slice(1), "--no-deps", "--no-build-isolation", "-e", sdk], {
          timeout: 120_000,
        });
        await run(python, ["-c", "import sovereign_sdk, nats, safetensors, numpy, cryptography, pytest"]);
        await writeFile(ready, `${digest}\n`);
        return python;
      },
      400_000,
    );
  } catch (err) {
    const detail = (err as { stderr?: string }).stderr?.trim().split("\n").slice(-3).join(" ") || String(err);
    throw new Error(`could not install the SDK venv .venv-sdk (is PyPI reachable?): ${detail}`);
  }
}

const demoRequirements = join(root, "examples", "demo", "requirements.txt");
const demoReady = join(venv, ".installed-demo");
let demoCached: Promise<string> | undefined;

/**
 * The venv with the demo's packages too (examples/demo/requirements.txt: scikit-learn, for its
 * bundled digits data set, and what it pulls in, at exact pins), installed on top of the SDK's on
 * first use; reinstalled when those pins change.
 */
export function demoPython(): Promise<string> {
  demoCached ??= installDemo();
  return demoCached;
}

async function installDemo(): Promise<string> {
  const py = await sdkPython();
  const digest = createHash("sha256").update(readFileSync(demoRequirements)).digest("hex");
  const done = () => existsSync(demoReady) && readFileSync(demoReady, "utf8").trim() === digest;
  if (done()) return py;
  try {
    return await withLock(
      join(root, ".venv-sdk.lock"),
      async () => {
        if (done()) return py;
        await run(
          py,
          [
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--timeout",
            "20",
            "-r",
            demoRequirements,
          ],
          { timeout: 300_000 },
        );
        await run(py, ["-c", "from sklearn.datasets import load_digits; load_digits()"]);
        await writeFile(demoReady, `${digest}\n`);
        return py;
      },
      400_000,
    );
  } catch (err) {
    const detail = (err as { stderr?: string }).stderr?.trim().split("\n").slice(-3).join(" ") || String(err);
    throw new Error(`could not install the demo's packages into .venv-sdk (is PyPI reachable?): ${detail}`);
  }
}

export interface PythonResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a script (a path, or code with `-c`) in the SDK venv, with `input` on stdin. Never throws on a non-zero exit. */
export async function runPython(
  args: string[],
  options: {
    input?: string | Uint8Array;
    env?: Record<string, string>;
    timeoutMs?: number;
    cwd?: string;
  } = {},
): Promise<PythonResult> {
  const py = await sdkPython();
  return new Promise((resolvePromise, reject) => {
    const child = spawn(py, args, {
      stdio: ["pipe", "pipe", "pipe"],
      env: options.env ?? { PATH: process.env.PATH ?? "" },
      ...(options.cwd ? { cwd: options.cwd } : {}),
      timeout: options.timeoutMs ?? 60_000,
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on("data", (d: Buffer) => out.push(d));
    child.stderr.on("data", (d: Buffer) => err.push(d));
    child.on("error", reject);
    child.on("close", (code) =>
      resolvePromise({ code, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() }),
    );
    child.stdin.end(options.input ?? "");
  });
}

/** Runs a script expected to succeed and print one JSON document. */
export async function runPythonJson<T>(
  args: string[],
  input: unknown,
  env?: Record<string, string>,
): Promise<T> {
  const result = await runPython(args, { input: JSON.stringify(input), ...(env ? { env } : {}) });
  if (result.code !== 0) throw new Error(`python ${args.join(" ")} exited ${result.code}: ${result.stderr}`);
  return JSON.parse(result.stdout) as T;
}

/**
 * A long-running Python process that prints one JSON event per line: the test reads events
 * in order and reacts, the process waits on NATS meanwhile. stderr is kept for failures.
 */
export class PythonSession {
  readonly #child: ChildProcessWithoutNullStreams;
  readonly #events: unknown[] = [];
  readonly #waiters: Array<() => void> = [];
  #stderr = "";
  #exit: number | null | undefined;

  private constructor(child: ChildProcessWithoutNullStreams) {
    this.#child = child;
    createInterface({ input: child.stdout }).on("line", (line) => {
      try {
        this.#events.push(JSON.parse(line));
      } catch {
        this.#stderr += `[stdout] ${line}\n`;
      }
      this.#wake();
    });
    child.stderr.on("data", (d: Buffer) => {
      this.#stderr += d.toString();
    });
    child.on("close", (code) => {
      this.#exit = code;
      this.#wake();
    });
  }

  static async start(script: string, env: Record<string, string>): Promise<PythonSession> {
    const py = await sdkPython();
    return new PythonSession(spawn(py, [script], { stdio: ["pipe", "pipe", "pipe"], env }));
  }

  #wake() {
    for (const w of this.#waiters.splice(0)) w();
  }

  /** The next event, or an error naming the process's stderr if it ends or `timeoutMs` passes first. */
  async next<T = Record<string, unknown>>(timeoutMs = 60_000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const event = this.#events.shift();
      if (event !== undefined) return event as T;
      if (this.#exit !== undefined)
        throw new Error(`the Python learner exited ${this.#exit}: ${this.#stderr}`);
      const left = deadline - Date.now();
      if (left <= 0)
        throw new Error(`no event from the Python learner within ${timeoutMs} ms: ${this.#stderr}`);
      await new Promise<void>((r) => {
        const timer = setTimeout(r, left);
        this.#waiters.push(() => {
          clearTimeout(timer);
          r();
        });
      });
    }
  }

  /** Tells the script to go on (one line on stdin). */
  send(line: unknown) {
    this.#child.stdin.write(`${JSON.stringify(line)}\n`);
  }

  async exit(timeoutMs = 30_000): Promise<{ code: number | null | undefined; stderr: string }> {
    const deadline = Date.now() + timeoutMs;
    while (this.#exit === undefined && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    return { code: this.#exit, stderr: this.#stderr };
  }

  kill() {
    if (this.#exit === undefined) this.#child.kill("SIGKILL");
  }
}
