// sovereign-operator: `--mode=hub` runs the federation in the hub cluster; `--mode=member`
// runs in a region and pulls its work from the hub with a scoped credential.
import { hostname } from "node:os";
import { KubeConfig } from "@kubernetes/client-node";
import { ConfigError, parseConfig, usage } from "./config.ts";
import { Manager } from "./manager.ts";
import { jsonLogger } from "./runtime/log.ts";
import { OperatorMetrics } from "./runtime/metrics.ts";

function loadKubeConfig(path: string): KubeConfig {
  const kc = new KubeConfig();
  if (path) kc.loadFromFile(path);
  else kc.loadFromCluster();
  return kc;
}

async function main(argv: string[]): Promise<number> {
  if (argv.includes("--help") || argv.includes("-h")) {
    console.log(usage());
    return 0;
  }
  let config: ReturnType<typeof parseConfig>;
  try {
    config = parseConfig(argv);
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(`sovereign-operator: ${err.message}\nRun with --help for every flag.`);
      return 2;
    }
    throw err;
  }
  const identity = `${process.env.POD_NAME || hostname()}_${process.pid}`;
  const log = jsonLogger({ level: config.logLevel, name: `sovereign-${config.mode}`, fields: { identity } });
  const metrics = new OperatorMetrics();
  const kc = loadKubeConfig(config.kubeconfig);
  // The hub and member reconcilers register here as they land (issue 5).
  const manager = new Manager({ config, kc, metrics, log, identity, informers: [], controllers: [] });

  const shutdown = new AbortController();
  for (const sig of ["SIGTERM", "SIGINT"] as const) {
    process.once(sig, () => {
      log.info("shutting down", { signal: sig });
      shutdown.abort();
    });
  }
  await manager.run(shutdown.signal);
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(`sovereign-operator: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    process.exit(1);
  },
);
