// The command line, parsed once for every command: kubectl's own flag spellings
// (--kubeconfig, --context, -n/--namespace, -A, -o json), then each command's, and a usage
// error for anything a command does not take, so a mistyped flag never silently does nothing.
import { parseArgs } from "node:util";
import { EXIT_USAGE, PluginError, usageError } from "./errors.ts";

export const COMMANDS = ["status", "join", "attest", "audit export", "audit verify"] as const;
export type Command = (typeof COMMANDS)[number];

const OPTIONS = {
  kubeconfig: { type: "string" },
  context: { type: "string" },
  namespace: { type: "string", short: "n" },
  "all-namespaces": { type: "boolean", short: "A" },
  output: { type: "string", short: "o" },
  help: { type: "boolean", short: "h" },
  // join
  jurisdiction: { type: "string" },
  policy: { type: "string" },
  "display-name": { type: "string" },
  egress: { type: "string" },
  "accept-aggregates": { type: "string" },
  "checkpoint-location": { type: "string" },
  "jetstream-domain": { type: "string" },
  "hub-server": { type: "string" },
  ttl: { type: "string" },
  "out-dir": { type: "string" },
  overwrite: { type: "boolean" },
  // audit export
  url: { type: "string" },
  service: { type: "string" },
  port: { type: "string" },
  file: { type: "string", short: "f" },
  // audit verify (handed to attestation/audit's verifier)
  keys: { type: "string" },
  checkpoint: { type: "string" },
  at: { type: "string" },
  "log-id": { type: "string" },
} as const;

export type OptionName = keyof typeof OPTIONS;
export type Options = Partial<Record<OptionName, string | boolean>>;

const KUBE = ["kubeconfig", "context"] as const;
const ALLOWED: Record<Command, readonly OptionName[]> = {
  status: [...KUBE, "namespace", "all-namespaces", "output"],
  join: [
    ...KUBE,
    "output",
    "jurisdiction",
    "policy",
    "display-name",
    "egress",
    "accept-aggregates",
    "checkpoint-location",
    "jetstream-domain",
    "hub-server",
    "ttl",
    "out-dir",
    "overwrite",
  ],
  attest: [...KUBE, "output"],
  "audit export": [...KUBE, "namespace", "url", "service", "port", "file"],
  "audit verify": ["output", "keys", "checkpoint", "at", "log-id"],
};

export interface Invocation {
  /** Undefined with plain `--help` or no command: print the overview. */
  command?: Command;
  /** Positional arguments after the command words. */
  args: string[];
  options: Options;
  help: boolean;
}

export type OutputFormat = "table" | "json";

/** `-o json` or the human default; anything else is a usage error, as kubectl's -o is. */
export function outputFormat(options: Options): OutputFormat {
  const o = options.output;
  if (o === undefined || o === "table" || o === "wide") return "table";
  if (o === "json") return "json";
  throw usageError(
    `-o ${JSON.stringify(o)} is not an output format; use -o json (or leave it out for a table)`,
  );
}

export function parseInvocation(argv: readonly string[]): Invocation {
  let parsed: ReturnType<typeof parseArgs<{ options: typeof OPTIONS; allowPositionals: true; strict: true }>>;
  try {
    parsed = parseArgs({ args: [...argv], options: OPTIONS, allowPositionals: true, strict: true });
  } catch (err) {
    // node:util's messages name the flag ("Unknown option '--foo'"); keep them, drop its hints.
    throw usageError((err as Error).message.split(". To specify")[0] ?? String(err));
  }
  const options = parsed.values as Options;
  const help = options.help === true;
  const words = [...parsed.positionals];
  if (words[0] === "help") {
    words.shift();
    return { ...commandOf(words, true), options, help: true };
  }
  const { command, args } = commandOf(words, help);
  if (command === undefined) return { args, options, help: true };
  for (const name of Object.keys(options) as OptionName[]) {
    if (name !== "help" && !ALLOWED[command].includes(name)) {
      throw usageError(`--${name} does not apply to \`${command}\`; see kubectl sovereign ${command} --help`);
    }
  }
  return { command, args, options, help };
}

function commandOf(words: string[], help: boolean): { command?: Command; args: string[] } {
  const [first, second, ...rest] = words;
  // Bare `kubectl sovereign` shows the overview, as bare `kubectl` does.
  if (first === undefined) return { args: [] };
  if (first === "audit") {
    if (second === "export" || second === "verify") return { command: `audit ${second}`, args: rest };
    if (second === undefined && help) return { args: [] };
    throw usageError(
      `audit needs a subcommand, export or verify${second ? `, not ${JSON.stringify(second)}` : ""}`,
    );
  }
  if (first === "status" || first === "join" || first === "attest") {
    return { command: first, args: words.slice(1) };
  }
  throw new PluginError(
    "UnknownCommand",
    `${JSON.stringify(first)} is not a command; one of: status, join, attest, audit export, audit verify`,
    EXIT_USAGE,
  );
}

/** A string option, or undefined; an empty value (`--policy=`) is refused rather than ignored. */
export function stringOption(options: Options, name: OptionName): string | undefined {
  const v = options[name];
  if (v === undefined || typeof v === "boolean") return undefined;
  if (v === "") throw usageError(`--${name} needs a value`);
  return v;
}
