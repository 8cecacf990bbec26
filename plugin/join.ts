// `kubectl sovereign join <region>`: what a new region needs from the hub, made in one step by a
// hub administrator: its registration (the SovereignNode it will register, checked against the
// CRD's schema here, before anything is created at the hub) and its scoped hub credential
// (operator/hub/credentials.ts, which also sets up the region's access objects).
import { constants } from "node:fs";
import { open, rename, rm } from "node:fs/promises";
import { join as joinPath } from "node:path";
import type { KubeConfig } from "@kubernetes/client-node";
import { Document } from "yaml";
import type { SovereignNodeSpec } from "../crds/types.generated.ts";
import { parseSovereignNodeSpec } from "../crds/validate.ts";
import { parseDuration } from "../operator/config.ts";
import { issueRegionCredential, type RegionCredential } from "../operator/hub/credentials.ts";
import { type Options, outputFormat, stringOption } from "./args.ts";
import { fromApiError, PluginError, usageError } from "./errors.ts";
import { loadKubeConfig } from "./kube.ts";

export const JOIN_HELP = `Make a region's registration and its scoped hub credential (run by a hub admin).

Usage:
  kubectl sovereign join REGION --jurisdiction CODE --policy NAME [--out-dir DIR] [--overwrite]
      [--hub-server URL] [--ttl 168h] [--display-name TEXT] [--egress ModelDeltas,TrainingMetrics]
      [--accept-aggregates true|false] [--checkpoint-location InRegion|Hub] [--jetstream-domain NAME]
      [-o json] [--kubeconfig FILE] [--context NAME]

Writes two files into --out-dir (default: the current directory):
  REGION-registration.yaml  the SovereignNode the region's member operator registers (spec without
                            accepted; the chart's member.registration, or the operator's --registration)
  REGION-hub.kubeconfig     the member's hub credential (a bound ServiceAccount token, mode 0600): it may
                            read its own RegionWorks and register its own SovereignNode, nothing else
Existing files are kept unless --overwrite. With -o json nothing is written: the registration and the
kubeconfig are printed as one JSON object, for scripts. The context must be a hub admin's.
--hub-server is the hub address the region dials, when it differs from this kubeconfig's.

Example:
  kubectl sovereign join region-a --jurisdiction DE --policy strict-hopper --hub-server https://hub.example:6443
`;

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

export interface RegistrationInput {
  region: string;
  jurisdiction?: string;
  policy?: string;
  displayName?: string;
  egress?: string;
  acceptAggregates?: string;
  checkpointLocation?: string;
  jetStreamDomain?: string;
}

/** The registration manifest, or a usage error naming the field that the CRD would refuse. */
export function registrationManifest(input: RegistrationInput): Record<string, unknown> {
  if (!DNS_LABEL.test(input.region)) {
    throw usageError(
      `region ${JSON.stringify(input.region)} must be a DNS label such as region-a (it names the SovereignNode)`,
    );
  }
  if (!input.jurisdiction) throw usageError("--jurisdiction is required, e.g. --jurisdiction DE");
  if (!input.policy)
    throw usageError("--policy is required: the AttestationPolicy the region's GPUs must satisfy");
  let acceptAggregates = true;
  if (input.acceptAggregates !== undefined) {
    if (input.acceptAggregates !== "true" && input.acceptAggregates !== "false")
      throw usageError(
        `--accept-aggregates must be true or false, not ${JSON.stringify(input.acceptAggregates)}`,
      );
    acceptAggregates = input.acceptAggregates === "true";
  }
  const spec: Omit<SovereignNodeSpec, "accepted"> = {
    ...(input.displayName ? { displayName: input.displayName } : {}),
    jurisdiction: input.jurisdiction,
    attestationPolicyRef: { name: input.policy },
    dataResidency: {
      allowedEgress: (input.egress ?? "ModelDeltas,TrainingMetrics")
        .split(",")
        .map((s) => s.trim()) as SovereignNodeSpec["dataResidency"]["allowedEgress"],
      acceptAggregates,
      checkpointLocation: (input.checkpointLocation ?? "InRegion") as "InRegion",
    },
    jetStreamDomain: input.jetStreamDomain ?? input.region,
  };
  const parsed = parseSovereignNodeSpec({ ...spec, accepted: false });
  if (!parsed.ok) {
    throw usageError(
      `the registration would be refused by the hub: ${parsed.errors.map((e) => `${e.path}: ${e.message}`).join("; ")}`,
    );
  }
  // No `accepted`: the CRD defaults it to false, and the operator refuses a registration that sets it.
  return {
    apiVersion: "sovereign.ai/v1alpha1",
    kind: "SovereignNode",
    metadata: { name: input.region },
    spec,
  };
}

export function registrationYaml(manifest: Record<string, unknown>, region: string): string {
  const doc = new Document(manifest);
  doc.commentBefore = ` ${region}'s registration at the hub, made by kubectl sovereign join.
 The region's member operator registers it (chart value member.registration = its spec, or the
 operator's --registration=<this file>); a hub administrator then accepts it:
   kubectl patch sovereignnode ${region} --type merge -p '{"spec":{"accepted":true}}'`;
  return doc.toString();
}

/** Writes the file whole or not at all, never over an existing one unless asked. */
async function writeNew(path: string, text: string, mode: number, overwrite: boolean): Promise<void> {
  const temp = `${path}.${process.pid}.tmp`;
  const handle = await open(temp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, mode);
  try {
    await handle.writeFile(text);
    await handle.sync();
  } finally {
    await handle.close();
  }
  try {
    if (!overwrite) {
      const probe = await open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, mode).catch(
        (err: NodeJS.ErrnoException) => {
          if (err.code === "EEXIST")
            throw new PluginError("FileExists", `${path} exists; remove it or pass --overwrite`);
          throw err;
        },
      );
      await probe.close();
    }
    await rename(temp, path);
  } catch (err) {
    await rm(temp, { force: true });
    throw err;
  }
}

export async function joinCommand(
  args: string[],
  options: Options,
  io: { stdout(text: string): void; stderr(text: string): void },
  kc?: KubeConfig,
): Promise<number> {
  if (args.length !== 1) throw usageError("join takes exactly one region name, e.g. join region-a");
  const region = args[0] as string;
  const format = outputFormat(options);
  const manifest = registrationManifest({
    region,
    jurisdiction: stringOption(options, "jurisdiction"),
    policy: stringOption(options, "policy"),
    displayName: stringOption(options, "display-name"),
    egress: stringOption(options, "egress"),
    acceptAggregates: stringOption(options, "accept-aggregates"),
    checkpointLocation: stringOption(options, "checkpoint-location"),
    jetStreamDomain: stringOption(options, "jetstream-domain"),
  });
  let ttlSeconds: number;
  try {
    ttlSeconds = Math.round(parseDuration("ttl", stringOption(options, "ttl") ?? "168h") / 1000);
  } catch (err) {
    throw usageError((err as Error).message);
  }
  const hubServer = stringOption(options, "hub-server");
  if (hubServer !== undefined && !/^https:\/\/[^\s/]+/.test(hubServer))
    throw usageError(`--hub-server ${JSON.stringify(hubServer)} must be an https:// URL`);
  const outDir = stringOption(options, "out-dir") ?? ".";
  const overwrite = options.overwrite === true;
  const files = {
    registration: joinPath(outDir, `${region}-registration.yaml`),
    kubeconfig: joinPath(outDir, `${region}-hub.kubeconfig`),
  };
  if (format !== "json" && !overwrite) {
    // Refuse before issuing: a credential nobody gets to keep would still be valid.
    for (const path of Object.values(files)) {
      const exists = await open(path, "r").then(
        (h) => h.close().then(() => true),
        () => false,
      );
      if (exists) throw new PluginError("FileExists", `${path} exists; remove it or pass --overwrite`);
    }
  }
  const hub = kc ?? loadKubeConfig(options);
  let cred: RegionCredential;
  try {
    cred = await issueRegionCredential(hub, region, { ttlSeconds, hubServer });
  } catch (err) {
    const message = (err as Error).message ?? "";
    const known = /^(CrdsNotInstalled|AccessNotEnforced|TokenRequestFailed): (.*)$/s.exec(message);
    if (known) throw new PluginError(known[1] as string, known[2] as string);
    throw fromApiError(err, "hub", `set up ${region}'s access and issue its token`);
  }
  // The client hands the expiry over as a Date's toString(); say it in RFC 3339, as kubectl does.
  const expiresMs = Date.parse(cred.expiresAt);
  const expiresAt = Number.isNaN(expiresMs) ? cred.expiresAt : new Date(expiresMs).toISOString();
  if (format === "json") {
    io.stdout(
      `${JSON.stringify({ region, expiresAt, registration: manifest, kubeconfig: cred.kubeconfig }, null, 2)}\n`,
    );
    return 0;
  }
  await writeNew(files.registration, registrationYaml(manifest, region), 0o644, overwrite);
  await writeNew(files.kubeconfig, cred.kubeconfig, 0o600, overwrite);
  io.stderr(
    [
      `wrote ${files.registration}: ${region}'s registration (not accepted until a hub admin accepts it)`,
      `wrote ${files.kubeconfig}: ${region}'s hub credential, valid until ${expiresAt}`,
      "  it holds a token: hand it to the region's administrators only, out of band, and delete your copy",
      `next, in ${region}'s cluster:`,
      `  kubectl -n sovereign-system create secret generic sovereign-hub-credential --from-file=kubeconfig=${files.kubeconfig}`,
      `  helm install sovereign charts/sovereign -n sovereign-system --skip-crds -f ${region}.yaml   # member.registration: the spec in ${files.registration}`,
      "then at the hub, once the region registered:",
      `  kubectl patch sovereignnode ${region} --type merge -p '{"spec":{"accepted":true}}'`,
      "",
    ].join("\n"),
  );
  return 0;
}
