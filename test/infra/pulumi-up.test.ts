// A real `pulumi up` and `pulumi destroy` of the example program (hub + three regions)
// against the testbed's API servers, with a local file backend, a throwaway PULUMI_HOME and
// no plugin downloads: the CLI, the Node.js language host and the Kubernetes provider come
// from the toolchain directory (infra/tools/pulumi-toolchain.ts) put first on PATH, where
// the engine finds them as ambient plugins.
//
// Skipped, with the reason printed, when that toolchain is incomplete: building it is an
// explicit step (`node infra/tools/build-pulumi.ts`), and two of its Go modules are not
// served by the module proxy here (docs/pulumi.md).
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { CoreV1Api, CustomObjectsApi, KubeConfig } from "@kubernetes/client-node";
import test from "ava";
import { locateToolchain } from "../../infra/tools/pulumi-toolchain.ts";
import { regionNamespace } from "../../operator/hub/region-access.ts";
import { useTestbed } from "../testbed/harness.ts";

const execFileAsync = promisify(execFile);
const exampleDir = join(import.meta.dirname, "..", "..", "infra", "example");
const found = locateToolchain();

if ("missing" in found) {
  console.error(`[pulumi-up] real pulumi up/destroy skipped: ${found.missing}`);
  test.skip(`real pulumi up/destroy of the example (skipped: ${found.missing})`, () => {});
} else {
  test("pulumi up creates the hub and three regions on the testbed; pulumi destroy removes them", async (t) => {
    const tb = await useTestbed();
    const work = await mkdtemp(join(tmpdir(), "sovereign-pulumi-"));
    // The file backend refuses a state directory that does not exist.
    await mkdir(join(work, "state"));
    const suffix = `-u${randomBytes(3).toString("hex")}`;
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      PATH: `${found.bin}:${join(import.meta.dirname, "..", "..", "node_modules", ".bin")}:${process.env.PATH ?? ""}`,
      PULUMI_HOME: join(work, "home"),
      PULUMI_BACKEND_URL: `file://${join(work, "state")}`,
      PULUMI_CONFIG_PASSPHRASE: "test-only",
      PULUMI_SKIP_UPDATE_CHECK: "true",
      PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION: "true",
      PULUMI_DISABLE_REGISTRY_RESOLVE: "true",
      PULUMI_AUTOMATION_API_SKIP_VERSION_CHECK: "true",
    };
    const pulumi = async (...args: string[]) => {
      try {
        const { stdout } = await execFileAsync(
          "pulumi",
          ["--non-interactive", "--cwd", exampleDir, ...args],
          {
            env,
            maxBuffer: 64 * 1024 * 1024,
            timeout: 10 * 60_000,
          },
        );
        return stdout;
      } catch (err) {
        const e = err as { stdout?: string; stderr?: string };
        throw new Error(`pulumi ${args.join(" ")} failed:\n${e.stdout ?? ""}\n${e.stderr ?? String(err)}`);
      }
    };
    const stack = `test${suffix}`;
    t.teardown(async () => {
      // A failed assertion must not leave objects on the shared testbed.
      await pulumi("destroy", "--yes", "--skip-preview", "--stack", stack).catch((e) => t.log(String(e)));
      await pulumi("stack", "rm", "--yes", "--force", "--stack", stack).catch(() => undefined);
      await rm(work, { recursive: true, force: true });
    });
    await pulumi("stack", "init", stack);
    await pulumi(
      "config",
      "set",
      "--stack",
      stack,
      "sovereign:testbed",
      join(tb.description.stateDir, "testbed.json"),
    );
    await pulumi("config", "set", "--stack", stack, "sovereign:suffix", "--", suffix); // the suffix starts with '-'
    // The CRDs and the member admission policy are shared by everything on the testbed.
    await pulumi("config", "set", "--stack", stack, "sovereign:manageShared", "false");
    await pulumi("up", "--yes", "--skip-preview", "--stack", stack);

    const hub = tb.kubeConfig("hub");
    for (const region of tb.regions) {
      const name = `${region}${suffix}`;
      const secret = await tb
        .kubeConfig(region)
        .makeApiClient(CoreV1Api)
        .readNamespacedSecret({ name: "sovereign-hub-credential", namespace: `sovereign-system${suffix}` });
      const kubeconfig = Buffer.from(secret.data?.kubeconfig ?? "", "base64").toString("utf8");
      const member = new KubeConfig();
      member.loadFromString(kubeconfig);
      // The credential Pulumi wired into the region works at the hub, in the region's namespace.
      await t.notThrowsAsync(
        member.makeApiClient(CustomObjectsApi).listNamespacedCustomObject({
          group: "sovereign.ai",
          version: "v1alpha1",
          plural: "regionworks",
          namespace: regionNamespace(name),
        }),
        `${name}'s hub credential reads its RegionWorks`,
      );
    }

    await pulumi("destroy", "--yes", "--skip-preview", "--stack", stack);
    const gone = await hub
      .makeApiClient(CoreV1Api)
      .readNamespace({ name: regionNamespace(`${tb.regions[0]}${suffix}`) })
      .then(
        (ns) => ns.status?.phase === "Terminating",
        (err: { code?: number }) => err.code === 404,
      );
    t.true(gone, "destroy revoked the region's access at the hub");
  });
}
