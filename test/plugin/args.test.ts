// The plugin's command line: kubectl's flag spellings, each command's own flags, and a usage
// error (exit 2, a reason code) for everything else, whatever is typed.
import test from "ava";
import fc from "fast-check";
import { outputFormat, parseInvocation } from "../../plugin/args.ts";
import { EXIT_USAGE, PluginError } from "../../plugin/errors.ts";
import { main } from "../../plugin/kubectl-sovereign.ts";

test("kubectl's global flags in either spelling and position", (t) => {
  const inv = parseInvocation([
    "-n",
    "team-a",
    "status",
    "run-1",
    "--kubeconfig=/k",
    "--context",
    "hub",
    "-o",
    "json",
  ]);
  t.is(inv.command, "status");
  t.deepEqual(inv.args, ["run-1"]);
  t.is(inv.options.namespace, "team-a");
  t.is(inv.options.kubeconfig, "/k");
  t.is(inv.options.context, "hub");
  t.is(outputFormat(inv.options), "json");
  t.is(parseInvocation(["status", "-A"]).options["all-namespaces"], true);
  t.is(outputFormat(parseInvocation(["status"]).options), "table");
});

test("two-word commands and help in every form", (t) => {
  t.is(parseInvocation(["audit", "verify", "x.jsonl", "--keys", "k.pem"]).command, "audit verify");
  t.is(parseInvocation(["audit", "export", "-f", "out.jsonl"]).options.file, "out.jsonl");
  for (const argv of [["--help"], ["-h"], [], ["help"], ["audit", "--help"]]) {
    const inv = parseInvocation(argv);
    t.true(inv.help, argv.join(" "));
    t.is(inv.command, undefined);
  }
  const inv = parseInvocation(["help", "attest"]);
  t.true(inv.help);
  t.is(inv.command, "attest");
  t.is(parseInvocation(["join", "--help"]).command, "join");
});

const usage = (
  t: import("ava").ExecutionContext,
  argv: string[],
  pattern: RegExp,
  reason = "InvalidArguments",
) => {
  const err = t.throws(
    () => {
      const inv = parseInvocation(argv);
      outputFormat(inv.options);
    },
    { instanceOf: PluginError },
  );
  t.is(err?.exitCode, EXIT_USAGE, argv.join(" "));
  t.is(err?.reason, reason, argv.join(" "));
  t.regex(err?.message ?? "", pattern, argv.join(" "));
};

test("garbage: unknown commands and flags, flags of another command, missing values", (t) => {
  usage(t, ["stauts"], /"stauts" is not a command; one of: status/, "UnknownCommand");
  usage(t, ["status", "--frobnicate"], /Unknown option '--frobnicate'/);
  usage(t, ["status", "-n"], /-n.*argument missing/);
  usage(t, ["status", "--jurisdiction=DE"], /--jurisdiction does not apply to `status`/);
  usage(t, ["attest", "node-1", "-A"], /--all-namespaces does not apply to `attest`/);
  usage(t, ["audit", "verify", "f", "--kubeconfig", "k"], /--kubeconfig does not apply to `audit verify`/);
  usage(t, ["audit"], /audit needs a subcommand, export or verify/);
  usage(t, ["audit", "delete"], /audit needs a subcommand, export or verify, not "delete"/);
  usage(t, ["status", "-o", "yaml"], /-o "yaml" is not an output format; use -o json/);
  usage(t, ["status", "--overwrite=yes"], /--overwrite.*does not take an argument/);
});

test("fuzz: any argv either parses or is a usage error, never a crash", (t) => {
  const word = fc.oneof(
    fc.constantFrom(
      "status",
      "join",
      "attest",
      "audit",
      "export",
      "verify",
      "help",
      "-n",
      "-A",
      "-o",
      "json",
      "--kubeconfig",
      "--",
      "-",
      "--url=",
      "-f",
      "--keys",
      "--overwrite",
    ),
    fc.string(),
  );
  fc.assert(
    fc.property(fc.array(word, { maxLength: 8 }), (argv) => {
      try {
        const inv = parseInvocation(argv);
        outputFormat(inv.options);
        return true;
      } catch (err) {
        return (
          err instanceof PluginError && err.exitCode === EXIT_USAGE && /^[A-Z][A-Za-z]+: /.test(err.message)
        );
      }
    }),
    { numRuns: 2000 },
  );
  t.pass();
});

test("main: exit 2 and the reason on stderr for a wrong command line, 0 for help", async (t) => {
  const writes: string[] = [];
  const original = process.stderr.write.bind(process.stderr);
  const originalOut = process.stdout.write.bind(process.stdout);
  process.stderr.write = ((chunk: string, cb?: () => void) => {
    writes.push(String(chunk));
    cb?.();
    return true;
  }) as typeof process.stderr.write;
  process.stdout.write = ((chunk: string, cb?: () => void) => {
    writes.push(String(chunk));
    cb?.();
    return true;
  }) as typeof process.stdout.write;
  try {
    t.is(await main(["status", "--bogus"]), 2);
    t.regex(writes.join(""), /^InvalidArguments: Unknown option '--bogus'/);
    writes.length = 0;
    t.is(await main(["status", "--help"]), 0);
    t.regex(writes.join(""), /^Show runs, rounds, regions and quorum/);
    writes.length = 0;
    t.is(await main(["attest", "a", "b"]), 2);
    t.regex(writes.join(""), /InvalidArguments: attest takes exactly one node name/);
    writes.length = 0;
    t.is(await main(["status", "--kubeconfig", "/nonexistent/kubeconfig"]), 1);
    t.regex(writes.join(""), /^KubeconfigUnreadable: cannot load \/nonexistent\/kubeconfig/);
  } finally {
    process.stderr.write = original;
    process.stdout.write = originalOut;
  }
});
