import test from "ava";
import fc from "fast-check";
import { ConfigError, flags, parseConfig, parseDuration } from "../../operator/config.ts";

test("hub defaults", (t) => {
  const c = parseConfig(["--mode=hub"], {});
  t.is(c.mode, "hub");
  t.is(c.leaderElectionId, "sovereign-hub");
  t.deepEqual(c.metricsBindAddress, { host: "0.0.0.0", port: 8080 });
  t.is(c.leaseDurationMs, 15_000);
  t.true(c.leaderElect);
  t.false(c.insecureSkipAttestation);
});

test("member mode from flags and environment; flags win over the environment", (t) => {
  const c = parseConfig(
    [
      "--mode",
      "member",
      "--region=region-a",
      "--workers=4",
      "--leader-elect=false",
      "--registration=/etc/sovereign/region.yaml",
    ],
    {
      SOVEREIGN_HUB_KUBECONFIG: "/etc/sovereign/hub.kubeconfig",
      SOVEREIGN_WORKERS: "9",
      SOVEREIGN_METRICS_BIND_ADDRESS: ":9090",
    },
  );
  t.is(c.region, "region-a");
  t.is(c.hubKubeconfig, "/etc/sovereign/hub.kubeconfig");
  t.is(c.workers, 4);
  t.false(c.leaderElect);
  t.deepEqual(c.metricsBindAddress, { host: "0.0.0.0", port: 9090 });
  t.is(c.leaderElectionId, "sovereign-member-region-a");
});

const bad: [string, string[], NodeJS.ProcessEnv, RegExp][] = [
  ["mode missing", [], {}, /--mode: must be hub or member \(it is required\)/],
  ["mode wrong", ["--mode=leader"], {}, /--mode: must be hub or member, not "leader"/],
  ["unknown flag", ["--mode=hub", "--regoin=a"], {}, /--regoin: unknown flag/],
  ["positional", ["hub"], {}, /unexpected argument "hub"/],
  ["value missing", ["--mode"], {}, /--mode: needs a value/],
  ["member without region", ["--mode=member", "--hub-kubeconfig=/k"], {}, /--region: member mode needs/],
  [
    "member bad region",
    ["--mode=member", "--region=Region_A", "--hub-kubeconfig=/k"],
    {},
    /"Region_A" is not one/,
  ],
  [
    "member without hub credential",
    ["--mode=member", "--region=region-a"],
    {},
    /--hub-kubeconfig: member mode needs/,
  ],
  [
    "hub with region credential",
    ["--mode=hub", "--hub-kubeconfig=/k"],
    {},
    /the hub holds no region credential/,
  ],
  [
    "bad duration",
    ["--mode=hub", "--lease-duration=15"],
    {},
    /--lease-duration: "15" is not a positive duration/,
  ],
  [
    "zero duration",
    ["--mode=hub", "--retry-period=0s"],
    {},
    /--retry-period: "0s" is not a positive duration/,
  ],
  [
    "lease shorter than renew",
    ["--mode=hub", "--lease-duration=5s", "--renew-deadline=10s"],
    {},
    /must be longer than --renew-deadline/,
  ],
  [
    "renew too close to retry",
    ["--mode=hub", "--renew-deadline=2s", "--retry-period=2s"],
    {},
    /1\.2 × --retry-period/,
  ],
  [
    "bad address",
    ["--mode=hub", "--metrics-bind-address=8080"],
    {},
    /--metrics-bind-address: "8080" is not host:port/,
  ],
  ["port too big", ["--mode=hub", "--health-probe-bind-address=:70000"], {}, /is not host:port/],
  ["bad bool", ["--mode=hub", "--leader-elect=maybe"], {}, /--leader-elect: "maybe" is not true or false/],
  ["bad workers", ["--mode=hub", "--workers=0"], {}, /--workers: "0" is not a whole number/],
  ["bad log level", ["--mode=hub"], { SOVEREIGN_LOG_LEVEL: "loud" }, /--log-level: "loud"/],
  [
    "bad namespace",
    ["--mode=hub", "--namespace=Sovereign System"],
    {},
    /--namespace: "Sovereign System" is not a valid/,
  ],
];
for (const [name, argv, env, message] of bad) {
  test(`refused with a clear message: ${name}`, (t) => {
    const err = t.throws(() => parseConfig(argv, env), { instanceOf: ConfigError });
    t.regex(err?.message ?? "", message);
    t.regex(err?.message ?? "", /^InvalidConfiguration: /);
  });
}

test("NATS: optional, checked as a URL, user and password together; learners default to the same URL", (t) => {
  t.is(parseConfig(["--mode=hub"], {}).nats, undefined);
  const c = parseConfig(["--mode=hub", "--nats-url=nats://hub-nats:4222"], {
    SOVEREIGN_NATS_USER: "hub",
    SOVEREIGN_NATS_PASSWORD: "s3cret",
  });
  t.deepEqual(c.nats, { url: "nats://hub-nats:4222", user: "hub", password: "s3cret" });
  t.is(c.learnerNatsUrl, "nats://hub-nats:4222");
  for (const [argv, flag] of [
    [["--nats-url=http://x:4222"], "nats-url"],
    [["--nats-url=nats://x:4222", "--nats-user=u"], "nats-password"],
    [["--nats-user=u", "--nats-password=p"], "nats-user"],
  ] as const) {
    const err = t.throws(() => parseConfig(["--mode=hub", ...argv], {}), { instanceOf: ConfigError });
    t.is((err as ConfigError).flag, flag, argv.join(" "));
  }
});

test("durations", (t) => {
  t.is(parseDuration("x", "1m30s"), 90_000);
  t.is(parseDuration("x", "500ms"), 500);
  t.is(parseDuration("x", "2h"), 7_200_000);
  for (const b of ["", "s", "10", "1x", "-1s", "1s ", "1.5.5s"])
    t.throws(() => parseDuration("x", b), { instanceOf: ConfigError });
});

test("property: any argv either parses or fails with a ConfigError, naming the flag when there is one", (t) => {
  const flagName = fc.constantFrom(
    "mode",
    "region",
    "workers",
    "lease-duration",
    "leader-elect",
    "metrics-bind-address",
    "bogus",
  );
  const arg = fc.oneof(
    fc.tuple(flagName, fc.string({ maxLength: 12 })).map(([f, v]) => `--${f}=${v}`),
    fc.string({ maxLength: 12 }),
  );
  fc.assert(
    fc.property(fc.array(arg, { maxLength: 6 }), (argv) => {
      try {
        parseConfig(argv, {});
        return true;
      } catch (err) {
        if (!(err instanceof ConfigError)) return false;
        // Either an argument that is not a flag at all, or a flag we know or were given.
        if (err.flag === "") return argv.some((a) => !/^--[a-z-]+(=|$)/s.test(a));
        return err.flag in flags || argv.some((a) => a.startsWith(`--${err.flag}`));
      }
    }),
    { numRuns: 2000 },
  );
  t.pass();
});
