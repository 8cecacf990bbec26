import test from "ava";
import { goExecName } from "./build.ts";
import { hubConfig, regionConfig } from "./nats.ts";
import { layoutFor, PORTS_PER_TESTBED, portBaseFor, portsOf, regionNames } from "./topology.ts";

test("every port of a layout is distinct and inside the testbed's block", (t) => {
  const layout = layoutFor("/tmp/some-clone/.testbed", { SOVEREIGN_TESTBED_REGIONS: "6" });
  const ports = portsOf(layout).map((p) => p.port);
  t.is(new Set(ports).size, ports.length);
  for (const p of ports) t.true(p >= layout.portBase && p < layout.portBase + PORTS_PER_TESTBED, `port ${p}`);
});

test("two clones get different port blocks; one clone always the same", (t) => {
  const a = portBaseFor("/home/dev/sovereign/.testbed", {});
  t.is(portBaseFor("/home/dev/sovereign/.testbed", {}), a);
  const others = ["/ci/run-1/.testbed", "/ci/run-2/.testbed", "/home/dev/fork/.testbed"].map((d) =>
    portBaseFor(d, {}),
  );
  t.true(others.some((b) => b !== a));
  for (const b of [a, ...others]) t.true(b >= 20000 && b + PORTS_PER_TESTBED <= 32768);
});

test("region count and port base from the environment are validated", (t) => {
  t.deepEqual(regionNames({}), ["region-a", "region-b", "region-c"]);
  t.deepEqual(regionNames({ SOVEREIGN_TESTBED_REGIONS: "1" }), ["region-a"]);
  for (const bad of ["0", "7", "two", "1.5"]) {
    t.throws(() => regionNames({ SOVEREIGN_TESTBED_REGIONS: bad }), {
      message: /must be a whole number from 1 to 6/,
    });
  }
  for (const bad of ["80", "65500", "-1", "x"]) {
    t.throws(() => portBaseFor("/x", { SOVEREIGN_TESTBED_PORT_BASE: bad }), { message: /is not a port/ });
  }
});

test("region GPU nodes carry the GPU operator's confidential-computing labels; the hub has no GPUs", (t) => {
  const layout = layoutFor("/x", {});
  const [hub, ...regions] = layout.clusters;
  t.is(hub?.name, "hub");
  t.true(hub?.nodes.every((n) => n.gpus === 0));
  for (const r of regions) {
    t.true(r.nodes.length > 0);
    for (const n of r.nodes) {
      t.is(n.labels["nvidia.com/cc.mode.state"], "on");
      t.is(n.labels["nvidia.com/gpu.present"], "true");
      t.is(n.labels["topology.kubernetes.io/region"], r.name);
    }
  }
});

test("go build names a main package after its last element without a major-version suffix", (t) => {
  t.is(goExecName("github.com/nats-io/nats-server/v2"), "nats-server");
  t.is(goExecName("go.etcd.io/etcd/server/v3"), "server");
  t.is(goExecName("k8s.io/kubernetes/cmd/kube-apiserver"), "kube-apiserver");
  t.is(goExecName("v2"), "v2");
});

test("NATS configs give each region's leaf link only its own subjects", (t) => {
  const hub = hubConfig({
    clientPort: 1,
    leafPort: 2,
    monitorPort: 3,
    storeDir: "/s",
    admin: { user: "a", password: "p" },
    leafUsers: {
      "region-a": { user: "leaf-region-a", password: "x" },
      "region-b": { user: "leaf-region-b", password: "y" },
    },
  });
  const lineOf = (u: string) => hub.split("\n").find((l) => l.includes(`"${u}"`)) ?? "";
  t.regex(lineOf("leaf-region-a"), /sovereign\.region-a\.>/);
  t.notRegex(lineOf("leaf-region-a"), /sovereign\.region-b/);
  t.regex(
    lineOf("leaf-region-a"),
    /deny: \[[^\]]*"\$JS\.hub\.API\.STREAM\.CREATE\.>"/,
    "no writes into the hub's domain",
  );
  const region = regionConfig({
    region: "region-a",
    clientPort: 1,
    monitorPort: 2,
    storeDir: "/s",
    hubLeafPort: 3,
    leafUser: { user: "leaf-region-a", password: "p@ss/word" },
    member: { user: "m", password: "p" },
    learner: { user: "l", password: "p" },
  });
  t.regex(region, /domain: "region-a"/);
  t.regex(region, /nats-leaf:\/\/leaf-region-a:p%40ss%2Fword@127\.0\.0\.1:3/, "credentials are URL-encoded");
});
