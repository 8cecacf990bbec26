/**
 * Writes the CRD YAML (crds/generated/*.yaml) and TypeScript types (crds/types.generated.ts)
 * from the schema definitions in crds/schema/.
 *
 *   node crds/generate.ts            regenerate
 *   node crds/generate.ts --check    exit 1 if the files on disk are stale (for `make test`)
 *   --root DIR                       repository root to read/write (default: this repository)
 */
import { mkdir, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { parseArgs } from "node:util";
import { findStaleFiles, GENERATED_DIR, renderGeneratedFiles } from "./generated-files.ts";

const { values } = parseArgs({
  options: { check: { type: "boolean", default: false }, root: { type: "string" } },
});
const root = path.resolve(values.root ?? path.join(import.meta.dirname, ".."));
const expected = renderGeneratedFiles();
const stale = await findStaleFiles(root, expected);

if (values.check) {
  if (stale.length > 0) {
    console.error(
      `Generated CRD files are stale (the schema in crds/schema/ changed without regenerating):\n${stale
        .map((file) => `  ${file}`)
        .join("\n")}\nRun \`node crds/generate.ts\` and commit the result.`,
    );
    process.exit(1);
  }
  console.log(`Generated CRD files are up to date (${expected.size} files).`);
} else {
  await mkdir(path.join(root, GENERATED_DIR), { recursive: true });
  for (const relative of stale) {
    const content = expected.get(relative);
    if (content === undefined) await rm(path.join(root, relative));
    else await writeFile(path.join(root, relative), content);
  }
  console.log(`Wrote ${stale.length} of ${expected.size} generated files.`);
}
