// `node infra/tools/build-pulumi.ts`: builds the Pulumi toolchain from pinned Go modules
// into the cache (see pulumi-toolchain.ts) and says which parts cannot be built here.
//
// Exit status: 0 when the complete toolchain (CLI, language host, provider) is available;
// 2 when the CLI was built but a module the rest needs is not served (reason ModuleNotServed
// on stderr); 1 on a build failure.
import { join } from "node:path";
import { InfraError } from "../manifests.ts";
import { buildPulumi, locateToolchain, probeModule, pulumiUnservedModules } from "./pulumi-toolchain.ts";

try {
  const { bin, manifest } = await buildPulumi();
  console.log(`pulumi CLI: ${join(bin, "pulumi")}`);
  console.log(
    `  built ${manifest.builtAt} with ${manifest.goVersion} in ${JSON.stringify(manifest.buildSeconds)} s (load average before ${manifest.loadAverage.before.join(" ")}, after ${manifest.loadAverage.after.join(" ")})`,
  );
  const found = locateToolchain();
  if ("bin" in found) {
    console.log(`complete toolchain in ${found.bin}`);
    process.exit(0);
  }
  let unserved = 0;
  for (const [binary, mod] of Object.entries(pulumiUnservedModules)) {
    const { served, answer } = await probeModule(mod);
    if (served) {
      console.error(
        `${binary}: ${mod} is served now; add its wrapper module (see docs/pulumi.md) to build it`,
      );
    } else {
      unserved++;
      console.error(`ModuleNotServed: ${binary} needs ${mod}; the module proxy answered: ${answer}`);
    }
  }
  console.error(`incomplete toolchain: ${found.missing}`);
  process.exit(unserved > 0 ? 2 : 1);
} catch (err) {
  if (err instanceof InfraError) {
    console.error(err.message);
    process.exit(1);
  }
  throw err;
}
