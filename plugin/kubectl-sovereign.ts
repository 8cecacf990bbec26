#!/usr/bin/env node
// kubectl-sovereign: the kubectl plugin for Sovereign federations (`kubectl sovereign …`).
// Commands: status, join, attest, audit export, audit verify; `--help` on each. Exit 0 ok,
// 1 failure (stderr: "<Reason>: what happened; what to do"), 2 wrong command line.
import { parseInvocation } from "./args.ts";
import { EXIT_FAILURE, EXIT_USAGE, PluginError } from "./errors.ts";

export const OVERVIEW = `kubectl sovereign: federated training across sovereign clusters, from kubectl.

Commands:
  status [RUN]        runs, rounds, regions and quorum at a glance (hub context)
  join REGION         a region's registration and scoped hub credential (hub admin context)
  attest NODE         a GPU node's latest attestation verdict and why (region context)
  audit export        download an operator's audit log (hub or region context, or --url)
  audit verify FILE   verify an exported audit log offline

Flags, as kubectl's: --kubeconfig FILE, --context NAME, -n/--namespace NS, -A, -o json, -h/--help.
Run kubectl sovereign COMMAND --help for a command's flags. Exit codes: 0 ok, 1 failure (with a
reason code first on stderr), 2 wrong command line.
`;

const write = (stream: NodeJS.WriteStream) => (text: string) =>
  new Promise<void>((resolve, reject) => stream.write(text, (err) => (err ? reject(err) : resolve())));

export async function main(argv: string[]): Promise<number> {
  const stdout = write(process.stdout);
  const stderr = write(process.stderr);
  const now = () => Date.now();
  try {
    const inv = parseInvocation(argv);
    if (inv.help) {
      // Loaded on use, like every command: `status` should not load the audit verifier.
      const help = await helpFor(inv.command);
      await stdout(help);
      return 0;
    }
    const { args, options } = inv;
    switch (inv.command) {
      case "status": {
        let text = "";
        const code = await (await import("./status.ts")).statusCommand(args, options, {
          stdout: (t) => {
            text += t;
          },
          now,
        });
        await stdout(text);
        return code;
      }
      case "join": {
        let out = "";
        let err = "";
        const code = await (await import("./join.ts")).joinCommand(args, options, {
          stdout: (t) => {
            out += t;
          },
          stderr: (t) => {
            err += t;
          },
        });
        await stdout(out);
        await stderr(err);
        return code;
      }
      case "attest": {
        let text = "";
        const code = await (await import("./attest.ts")).attestCommand(args, options, {
          stdout: (t) => {
            text += t;
          },
          now,
        });
        await stdout(text);
        return code;
      }
      case "audit export": {
        const { auditExportCommand } = await import("./audit.ts");
        return await auditExportCommand(args, options, {
          stdout: process.stdout,
          stderr: (t) => void stderr(t),
        });
      }
      case "audit verify": {
        const { auditVerifyCommand } = await import("./audit.ts");
        return await auditVerifyCommand(args, options, { stdout, stderr, now: () => new Date() });
      }
      default:
        await stdout(OVERVIEW);
        return 0;
    }
  } catch (err) {
    if (err instanceof PluginError) {
      await stderr(
        `${err.message}\n${err.exitCode === EXIT_USAGE ? "Run kubectl sovereign --help (or COMMAND --help) for usage.\n" : ""}`,
      );
      return err.exitCode;
    }
    await stderr(`InternalError: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    return EXIT_FAILURE;
  }
}

async function helpFor(command: string | undefined): Promise<string> {
  switch (command) {
    case "status":
      return (await import("./status.ts")).STATUS_HELP;
    case "join":
      return (await import("./join.ts")).JOIN_HELP;
    case "attest":
      return (await import("./attest.ts")).ATTEST_HELP;
    case "audit export":
      return (await import("./audit.ts")).AUDIT_EXPORT_HELP;
    case "audit verify":
      return (await import("./audit.ts")).AUDIT_VERIFY_HELP;
    default:
      return OVERVIEW;
  }
}

if (import.meta.main) {
  main(process.argv.slice(2)).then((code) => process.exit(code));
}
