// The SDK's own unit tests (sdk/python/tests: configuration, weight checks, the delta file,
// the manifest), run with pytest in the SDK venv so that `make test` runs them too.
import { join } from "node:path";
import test from "ava";
import { root, runPython } from "./sdk-venv.ts";

test("the SDK's pytest suite passes", async (t) => {
  const sdk = join(root, "sdk", "python");
  const result = await runPython(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], {
    cwd: sdk,
    env: { PATH: process.env.PATH ?? "", PYTHONDONTWRITEBYTECODE: "1" },
    timeoutMs: 120_000,
  });
  const summary = result.stdout.trim().split("\n").at(-1) ?? "";
  t.is(result.code, 0, `${result.stdout}\n${result.stderr}`);
  t.regex(summary, /^\d+ passed/, "pytest ran tests and none failed");
  t.log(summary);
});
