// NVIDIA's nv-local-gpu-verifier as a test oracle, in `.venv-nvverifier` made on first use from
// test/attestation/nvverifier/requirements.txt (exact pins, dependencies included) and reused after.
// Creation is locked so parallel ava workers wait for one install, and the venv is rebuilt when the
// pins change (their digest is kept in the ready marker). When PyPI cannot be reached the oracle says
// why, and the differential test skips saying so.
import { execFile, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { withLock } from "../testbed/lock.ts";

const run = promisify(execFile);
const root = resolve(import.meta.dirname, "../..");
const venv = join(root, ".venv-nvverifier");
const python = join(venv, "bin", "python");
const ready = join(venv, ".installed");
const requirements = join(import.meta.dirname, "nvverifier", "requirements.txt");
export const HARNESS = join(import.meta.dirname, "nvverifier", "harness.py");

export type NvVerifier = { ok: true; python: string } | { ok: false; reason: string };

let cached: Promise<NvVerifier> | undefined;

export function nvVerifier(): Promise<NvVerifier> {
  cached ??= install();
  return cached;
}

const digest = () => createHash("sha256").update(readFileSync(requirements)).digest("hex");
const isReady = (d: string) => existsSync(ready) && readFileSync(ready, "utf8").trim() === d;

async function install(): Promise<NvVerifier> {
  const d = digest();
  if (isReady(d)) return { ok: true, python };
  try {
    return await withLock(
      join(root, ".venv-nvverifier.lock"),
      async () => {
        if (isReady(d)) return { ok: true, python } as const;
        await run("python3", ["-m", "venv", "--clear", venv], { timeout: 60_000 });
        await run(
          python,
          [
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--timeout",
            "20",
            "--retries",
            "1",
            "-r",
            requirements,
          ],
          { timeout: 240_000 },
        );
        // Importing the modules the harness drives proves the install is usable (pynvml loads
        // without a GPU; only its calls need one).
        await run(
          python,
          ["-c", "import verifier.cc_admin_utils, verifier.rim, verifier.nvml.gpu_cert_chains"],
          {
            cwd: venv,
          },
        );
        await writeFile(ready, `${d}\n`);
        return { ok: true, python } as const;
      },
      300_000,
    );
  } catch (err) {
    const detail = (err as { stderr?: string }).stderr?.trim().split("\n").slice(-2).join(" ") || String(err);
    return {
      ok: false,
      reason: `could not install nv-local-gpu-verifier into .venv-nvverifier (is PyPI reachable?): ${detail}`,
    };
  }
}

/** Runs the harness on a batch of cases (JSON on stdin) and returns its JSON answer. */
export function runHarness<T>(oracle: NvVerifier & { ok: true }, input: unknown): Promise<T> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(oracle.python, [HARNESS], { stdio: ["pipe", "pipe", "pipe"] });
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
      if (code !== 0) reject(new Error(`harness exited ${code}: ${err.slice(-2000)}`));
      else resolvePromise(JSON.parse(out) as T);
    });
    child.stdin.end(JSON.stringify(input));
  });
}
