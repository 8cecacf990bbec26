// The renderers behind the Pulumi components. The NATS leaf configuration is checked by the
// real nats-server the testbed builds (`nats-server -t`), not by matching text alone.
import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import test from "ava";
import { parse } from "yaml";
import {
  chartCrds,
  checkRegionName,
  InfraError,
  leafNatsConfig,
  mergeValues,
  regionHubKubeconfig,
} from "../../infra/manifests.ts";
import { binDir } from "../testbed/pins.ts";

const execFileAsync = promisify(execFile);
const leaf = {
  region: "region-a",
  hubLeafUrl: "nats-leaf://hub.example:7422",
  account: "SOVEREIGN",
  leafUser: { user: "leaf-region-a", password: "p@ss:w/rd" },
  member: { user: "member", password: 'm"q' },
};

test("the leaf configuration is accepted by nats-server and escapes the credentials", async (t) => {
  const conf = leafNatsConfig(leaf);
  // Credentials with URL-special characters end up percent-encoded in the remote URL.
  t.regex(conf, /nats-leaf:\/\/leaf-region-a:p%40ss%3Aw%2Frd@hub\.example:7422/);
  const dir = await mkdtemp(join(tmpdir(), "sovereign-nats-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, "nats.conf");
  await writeFile(file, leafNatsConfig({ ...leaf, storeDir: join(dir, "js") }));
  const server = join(binDir(), "nats-server");
  const { stdout, stderr } = await execFileAsync(server, ["-t", "-c", file]).catch((err) => {
    t.fail(`nats-server -t refused the configuration: ${(err as { stderr?: string }).stderr ?? String(err)}`);
    return { stdout: "", stderr: "" };
  });
  t.regex(`${stdout}${stderr}`, /configuration file .* is valid/);
});

test("a hub leaf URL with credentials in it, or of another scheme, is refused", (t) => {
  for (const hubLeafUrl of ["nats-leaf://u:p@hub:7422", "https://hub:7422", "not a url"]) {
    const err = t.throws(() => leafNatsConfig({ ...leaf, hubLeafUrl }), { instanceOf: InfraError });
    t.is(err?.reason, "InvalidNatsUrl", hubLeafUrl);
  }
});

test("the hub kubeconfig is refused without a token", (t) => {
  const err = t.throws(() => regionHubKubeconfig({ region: "r", server: "https://h", token: "" }), {
    instanceOf: InfraError,
  });
  t.is(err?.reason, "HubTokenNotIssued");
  const kc = parse(regionHubKubeconfig({ region: "r", server: "https://h", token: "t" }));
  t.false("certificate-authority-data" in kc.clusters[0].cluster, "no CA key when none is given");
});

test("region names must fit a namespace after the sovereign-region- prefix", (t) => {
  t.notThrows(() => checkRegionName("a".repeat(46)));
  t.is(t.throws(() => checkRegionName("a".repeat(47)))?.message.split(":")[0], "InvalidRegionName");
  t.is(t.throws(() => checkRegionName("-a"))?.message.split(":")[0], "InvalidRegionName");
});

test("the chart's four CRDs are read", (t) => {
  t.deepEqual(
    chartCrds()
      .map((c) => c.metadata.name)
      .sort(),
    [
      "attestationpolicies.sovereign.ai",
      "federatedruns.sovereign.ai",
      "regionworks.sovereign.ai",
      "sovereignnodes.sovereign.ai",
    ],
  );
});

test("chart values merge objects deeply and replace lists", (t) => {
  t.deepEqual(mergeValues({ a: { b: 1, c: [1, 2] }, d: 1 }, { a: { c: [3] }, e: 2 }), {
    a: { b: 1, c: [3] },
    d: 1,
    e: 2,
  });
});
