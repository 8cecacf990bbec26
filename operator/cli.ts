#!/usr/bin/env node
// sovereign admin commands, run by a hub administrator (not by the operator).
//
//   node operator/cli.ts region-credential --region=region-a [--kubeconfig=hub-admin.kubeconfig]
//        [--ttl=168h] [--hub-server=https://hub.example:6443] > region-a-hub.kubeconfig
//
// prints the kubeconfig a region's member operator uses to reach the hub: a bound
// ServiceAccount token limited to that region's own objects (see hub/region-access.ts).
//
//   node operator/cli.ts attest verify --report <file> --chain <file> --rim <file>... --ocsp <file>...
//        --nonce <hex> --at <RFC3339> --policy <yaml> [--trust nvidia|testbed]
//   node operator/cli.ts attest mint-testbed --out <dir> --nonce <hex> [--fault <name>...]
//
// verifies GPU evidence files offline and prints the verdict as JSON (exit 0 passed, 1 refused,
// 2 usage), or mints testbed evidence to check (attestation/testbed/cli.ts, docs/attestation.md).
//
//   sovereign audit verify <export.jsonl> --keys <public-keys.pem|jwks.json> [--checkpoint <file>]
//        [--at <RFC3339>] [--log-id <id>] [--json]
//
// checks an exported audit log offline and prints what each entry attests (exit 0 intact,
// 1 with the reason code when not, 2 usage; attestation/audit/cli.ts, docs/audit.md).
import { KubeConfig } from "@kubernetes/client-node";
import { parseDuration } from "./config.ts";
import { issueRegionCredential } from "./hub/credentials.ts";

const dns1123Label = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

function option(args: string[], name: string): string | undefined {
  const hit = args.find((a) => a.startsWith(`--${name}=`));
  return hit?.slice(name.length + 3);
}

async function main(argv: string[]): Promise<number> {
  const [cmd, ...args] = argv;
  if (cmd === "attest") {
    // Imported on use, so region-credential does not load the verifier and its XML/ASN.1 libraries.
    const { attestCommand } = await import("../attestation/testbed/cli.ts");
    return attestCommand(args);
  }
  if (cmd === "audit") {
    const { auditCommand } = await import("../attestation/audit/cli.ts");
    return auditCommand(args);
  }
  if (cmd !== "region-credential") {
    console.error(
      "usage: node operator/cli.ts region-credential --region=<name> [--kubeconfig=...] [--ttl=168h] [--hub-server=URL]",
    );
    return 2;
  }
  const region = option(args, "region") ?? "";
  if (!dns1123Label.test(region)) {
    console.error(
      `InvalidRegionName: --region="${region}" must be a DNS label such as region-a (the region's SovereignNode name)`,
    );
    return 2;
  }
  const ttlSeconds = Math.round(parseDuration("ttl", option(args, "ttl") ?? "168h") / 1000);
  const kc = new KubeConfig();
  const path = option(args, "kubeconfig") ?? process.env.KUBECONFIG;
  if (path) kc.loadFromFile(path);
  else kc.loadFromDefault();
  const cred = await issueRegionCredential(kc, region, { ttlSeconds, hubServer: option(args, "hub-server") });
  process.stdout.write(cred.kubeconfig);
  console.error(
    `issued a hub credential for ${region}, valid until ${cred.expiresAt}; hand it to the region's operator only`,
  );
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(`sovereign: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  },
);
