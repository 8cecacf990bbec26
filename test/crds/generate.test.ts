import { execFile } from "node:child_process";
import { appendFile, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import test from "ava";
import {
  findStaleFiles,
  GENERATED_DIR,
  renderGeneratedFiles,
  TYPES_FILE,
} from "../../crds/generated-files.ts";

const REPO_ROOT = path.join(import.meta.dirname, "../..");
const GENERATOR = path.join(REPO_ROOT, "crds/generate.ts");

async function runGenerator(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [GENERATOR, ...args]);
    return { code: 0, stdout, stderr };
  } catch (error) {
    const failed = error as { code?: number; stdout?: string; stderr?: string };
    return { code: failed.code ?? -1, stdout: failed.stdout ?? "", stderr: failed.stderr ?? "" };
  }
}

test("the committed generated files match the schema", async (t) => {
  const stale = await findStaleFiles(REPO_ROOT, renderGeneratedFiles());
  t.deepEqual(stale, [], "run `node crds/generate.ts` to regenerate");
});

test("generation is deterministic", (t) => {
  t.deepEqual(renderGeneratedFiles(), renderGeneratedFiles());
});

test("--check passes on fresh output, fails naming edited, missing and leftover files, and generating repairs", async (t) => {
  const root = await mkdtemp(path.join(tmpdir(), "crd-generate-"));
  t.teardown(() => rm(root, { recursive: true, force: true }));

  t.is((await runGenerator(["--check", "--root", root])).code, 1, "an empty tree is stale");
  t.is((await runGenerator(["--root", root])).code, 0);
  const fresh = await runGenerator(["--check", "--root", root]);
  t.is(fresh.code, 0, fresh.stderr);

  await appendFile(path.join(root, GENERATED_DIR, "federatedruns.yaml"), "# hand edit\n");
  await rm(path.join(root, TYPES_FILE));
  await writeFile(path.join(root, GENERATED_DIR, "oldkinds.yaml"), "kind: Leftover\n");
  const stale = await runGenerator(["--check", "--root", root]);
  t.is(stale.code, 1);
  for (const file of [`${GENERATED_DIR}/federatedruns.yaml`, TYPES_FILE, `${GENERATED_DIR}/oldkinds.yaml`]) {
    t.true(stale.stderr.includes(file), `stderr names ${file}: ${stale.stderr}`);
  }
  t.true(stale.stderr.includes("node crds/generate.ts"), "says how to fix it");
  t.false(stale.stderr.includes(`${GENERATED_DIR}/sovereignnodes.yaml`), "untouched files are not reported");

  t.is((await runGenerator(["--root", root])).code, 0);
  t.is((await runGenerator(["--check", "--root", root])).code, 0);
  t.false((await readdir(path.join(root, GENERATED_DIR))).includes("oldkinds.yaml"), "leftovers are removed");
});
