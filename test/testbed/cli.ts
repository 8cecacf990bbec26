// `node test/testbed/cli.ts <command>`: what the Makefile's testbed-* targets run.
import { rm } from "node:fs/promises";
import { dirname } from "node:path";
import { ensureBinaries } from "./build.ts";
import { isTestbedError } from "./errors.ts";
import { binDir } from "./pins.ts";
import { down, kubectl, readDescription, restart, start, status, stop, up } from "./testbed.ts";
import { defaultStateDir } from "./topology.ts";

const usage = `usage: node test/testbed/cli.ts <command>

  up                 start the testbed (idempotent; builds the servers the first time)
  down               stop every server and delete the testbed's data (logs are kept)
  status [--json]    show each server's pid and readiness; exit 1 when one is down
  restart <name>     restart one server, e.g. region-a/kube-apiserver or region-a/nats-server
  stop <name>        stop one server (an outage; its data stays), e.g. region-b/nats-server
  start <name>       start one stopped server again on its port and data
  describe           print the machine-readable description (testbed.json)
  overview           list each cluster's nodes and NATS domain (what 'make demo' shows)
  build              build the pinned servers into the cache without starting them
  rebuild            delete the cache for the current pins and build again`;

async function overview(): Promise<void> {
  const d = await readDescription();
  if (!d) throw new Error("the testbed is not up: run 'make testbed-up'");
  for (const c of d.clusters) {
    const nats = c.role === "hub" ? d.nats.hub.url : d.nats.regions[c.name]?.url;
    console.log(
      `\n== ${c.name} (${c.role})  apiserver ${c.server}  NATS ${nats}  JetStream domain "${c.jetstreamDomain}"`,
    );
    console.log(`   kubectl --kubeconfig ${c.kubeconfig} get nodes`);
    const res = await kubectl(d.binDir, c.kubeconfig, [
      "get",
      "nodes",
      "-o",
      "custom-columns=NODE:.metadata.name,READY:.status.conditions[?(@.type=='Ready')].status,GPUS:.status.capacity.nvidia\\.com/gpu,CC:.metadata.labels.nvidia\\.com/cc\\.mode\\.state,PRODUCT:.metadata.labels.nvidia\\.com/gpu\\.product,ZONE:.metadata.labels.topology\\.kubernetes\\.io/zone",
    ]);
    process.stdout.write(
      res.stdout
        .split("\n")
        .map((l) => (l ? `   ${l}` : l))
        .join("\n"),
    );
    if (res.code !== 0) console.log(`   (kubectl failed: ${res.stderr.trim()})`);
  }
  console.log(`\nDescription: ${defaultStateDir()}/testbed.json   Logs: ${d.logsDir}`);
}

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case "up": {
      const d = await up();
      console.log(
        `testbed up: ${d.clusters.map((c) => c.name).join(", ")}; description ${d.stateDir}/testbed.json`,
      );
      return 0;
    }
    case "down":
      await down();
      return 0;
    case "status": {
      const s = await status();
      if (!s) {
        console.log("the testbed is not up (run 'make testbed-up')");
        return 1;
      }
      if (rest.includes("--json")) console.log(JSON.stringify(s, null, 2));
      else
        for (const c of s)
          console.log(
            `${c.ready ? "ready" : c.alive ? "NOT READY" : "DOWN"}\t${c.name}\tpid ${c.pid ?? "-"}\t${c.log}`,
          );
      return s.every((c) => c.ready) ? 0 : 1;
    }
    case "restart": {
      if (!rest[0]) throw new Error("restart needs a component name, e.g. region-a/kube-apiserver");
      await restart(rest[0]);
      return 0;
    }
    case "stop":
    case "start": {
      if (!rest[0]) throw new Error(`${cmd} needs a component name, e.g. region-b/nats-server`);
      await (cmd === "stop" ? stop : start)(rest[0]);
      return 0;
    }
    case "describe": {
      const d = await readDescription();
      if (!d) {
        console.error("the testbed is not up (run 'make testbed-up')");
        return 1;
      }
      console.log(JSON.stringify(d, null, 2));
      return 0;
    }
    case "overview":
      await overview();
      return 0;
    case "build":
      console.log(await ensureBinaries());
      return 0;
    case "rebuild":
      await rm(dirname(binDir()), { recursive: true, force: true });
      console.log(await ensureBinaries());
      return 0;
    default:
      console.error(usage);
      return cmd === undefined || cmd === "help" || cmd === "--help" ? 0 : 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    if (isTestbedError(err)) console.error(`testbed: ${err.message}`);
    else console.error(`testbed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    process.exit(1);
  },
);
